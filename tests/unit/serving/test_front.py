"""nginx in front of MMS: the configuration text, /execution-parameters, and the settings behind them."""

import json
import re

import pytest

from dogbreed.serving import front
from dogbreed.serving.environment import ConfigurationError, ServingEnvironment


def environment(**variables) -> ServingEnvironment:
    return ServingEnvironment.from_env(variables, cpus=2)


def returned_bodies(config: str) -> dict[str, dict]:
    """Each `return CODE '...'` of the config: the JSON body, keyed by the enclosing location."""
    bodies = {}
    location = None
    for line in config.splitlines():
        if match := re.match(r"\s*location (?:= )?(\S+) \{", line):
            location = match.group(1)
        if match := re.match(r"\s*return (\d+) '(.*)';$", line):
            text = match.group(2).replace("\\'", "'").replace("\\\\", "\\")
            bodies[f"{location} {match.group(1)}"] = json.loads(text)
    return bodies


@pytest.fixture
def files(tmp_path) -> front.FrontFiles:
    return front.FrontFiles(tmp_path / "run")


def test_execution_parameters_follow_the_environment():
    env = environment(SAGEMAKER_MAX_PAYLOAD_IN_MB="20", SAGEMAKER_MODEL_SERVER_WORKERS="3")
    assert front.execution_parameters(env) == {
        "MaxConcurrentTransforms": 3, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 20,
    }
    assert front.execution_parameters(environment())["MaxPayloadInMB"] == 6


def test_nginx_listens_publicly_and_passes_invocations_to_loopback_mms(files):
    env = environment(SAGEMAKER_BIND_TO_PORT="9000", SAGEMAKER_MODEL_SERVER_TIMEOUT="45",
                      SAGEMAKER_MAX_PAYLOAD_IN_MB="2")
    config = front.nginx_config(env, files)
    assert "listen 9000 default_server;" in config
    assert f"server 127.0.0.1:{env.mms_port};" in config and env.mms_port != 9000
    invocations = config[config.index("location = /invocations"):]
    invocations = invocations[: invocations.index("}")]
    assert "proxy_pass http://mms;" in invocations
    assert "proxy_http_version 1.1;" in invocations and 'proxy_set_header Connection "";' in invocations
    assert "proxy_read_timeout 90s;" in invocations and "proxy_send_timeout 90s;" in invocations
    # Unbuffered: nginx stops reading at the answer's end, before MMS resets the connection after a 4xx.
    assert "proxy_buffering off;" in invocations
    # nginx refuses only what MMS would have: the handler's JSON 413 answers below that.
    assert f"client_max_body_size {env.mms_max_request_size};" in config
    assert env.mms_max_request_size > env.max_payload_bytes
    assert f"client_body_buffer_size {env.mms_max_request_size};" in config


def test_large_batch_payloads_are_buffered_in_a_file_of_the_run(files):
    config = front.nginx_config(environment(SAGEMAKER_MAX_PAYLOAD_IN_MB="100"), files)
    assert f"client_body_buffer_size {front.MAX_BODY_BUFFER};" in config
    for name in front.TEMP_PATHS:
        assert f'{name}_temp_path "{files.nginx_dir / name}";' in config
    assert f'pid "{files.nginx_dir / "nginx.pid"}";' in config
    assert "daemon off;" in config and "worker_processes 1;" in config and "error_log stderr" in config


def test_every_answer_nginx_gives_itself_is_json(files):
    env = environment(SAGEMAKER_MAX_PAYLOAD_IN_MB="1", SAGEMAKER_MODEL_SERVER_WORKERS="2")
    config = front.nginx_config(env, files)
    bodies = returned_bodies(config)
    assert bodies["/ping 200"] == {"status": "Healthy"}
    assert "loading" in bodies["/ping 503"]["error"]
    assert bodies["/execution-parameters 200"] == front.execution_parameters(env)
    assert "/invocations" in bodies["/ 404"]["error"]
    errors = front.ERROR_PREFIX
    for code in (400, 404, 405, 408, 413, 414, 500, 502, 504):
        assert f"error_page {code} {errors}{code};" in config
        assert bodies[f"{errors}{code} {code}"]["error"]
    # nginx's "request header too large" goes out as a 400.
    assert bodies[f"{errors}494 400"]["error"] == "request headers too large"
    assert str(env.max_payload_bytes) in bodies[f"{errors}413 413"]["error"]
    assert "default_type application/json;" in config


def test_ping_answers_200_only_while_the_ready_file_exists(files):
    config = front.nginx_config(environment(), files)
    ping = config[config.index("location = /ping"):]
    assert ping.index(f'if (-f "{files.ready_file}")') < ping.index("return 200") < ping.index("return 503")


def test_the_worker_user_is_set_only_when_asked(files):
    assert "\nuser www-data;\n" in front.nginx_config(environment(), files, user="www-data")
    assert not re.search(r"^user ", front.nginx_config(environment(), files), re.M)


def test_write_config_creates_directories_nginx_can_reach(files):
    path = front.write_config(environment(), files)
    assert path == files.config and "upstream mms" in path.read_text()
    for directory in (files.workdir, files.nginx_dir, files.loaded_dir):
        assert directory.is_dir() and directory.stat().st_mode & 0o005 == 0o005
    command = front.nginx_command(files)
    assert command[0] == "nginx" and command[command.index("-c") + 1] == str(files.config)


def test_a_dollar_never_reaches_an_nginx_string():
    with pytest.raises(ValueError, match="nginx"):
        front._string({"error": "costs $5"})
    assert front._string({"error": "it's"}) == "'{\"error\": \"it\\'s\"}'"


def test_loopback_ports_stay_off_the_public_one():
    env = environment()
    assert (env.port, env.management_port, env.mms_port) == (8080, 8081, 8082)
    ranged = environment(SAGEMAKER_BIND_TO_PORT="9090", SAGEMAKER_SAFE_PORT_RANGE="9090-9099")
    assert (ranged.management_port, ranged.mms_port) == (9091, 9092)
    top = environment(SAGEMAKER_BIND_TO_PORT="65535")
    assert {top.management_port, top.mms_port} == {65534, 65533}
    with pytest.raises(ConfigurationError, match="SAGEMAKER_SAFE_PORT_RANGE"):
        environment(SAGEMAKER_BIND_TO_PORT="9090", SAGEMAKER_SAFE_PORT_RANGE="9090-9091")


def test_batch_transform_variables():
    env = environment(SAGEMAKER_BATCH="True", SAGEMAKER_BATCH_STRATEGY="SINGLE_RECORD",
                      SAGEMAKER_MAX_CONCURRENT_TRANSFORMS="4", SAGEMAKER_MAX_PAYLOAD_IN_MB="100")
    assert env.batch and env.batch_strategy == "SINGLE_RECORD" and env.max_concurrent_transforms == 4
    assert env.max_payload_bytes == 100 * 1024 * 1024
    plain = environment()
    assert (plain.batch, plain.batch_strategy, plain.max_concurrent_transforms) == (False, None, None)
    # 0 is the API's "not set".
    assert environment(SAGEMAKER_MAX_CONCURRENT_TRANSFORMS="0").max_concurrent_transforms is None


@pytest.mark.parametrize(
    "name, value",
    [("SAGEMAKER_BATCH", "maybe"), ("SAGEMAKER_BATCH_STRATEGY", "SingleRecord"),
     ("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "-1")],
)
def test_bad_batch_values_name_the_variable(name, value):
    with pytest.raises(ConfigurationError, match=name):
        environment(**{name: value})



@pytest.mark.parametrize(
    "level, access, errors",
    [("debug", "access_log /dev/stdout;", "warn"), ("info", "access_log off;", "warn"),
     ("warning", "access_log off;", "warn"), ("error", "access_log off;", "error")],
)
def test_the_log_level_sets_nginxs_access_and_error_logs(files, level, access, errors):
    config = front.nginx_config(environment(SAGEMAKER_CONTAINER_LOG_LEVEL=level), files)
    assert re.findall(r"^\s*access_log .*$", config, re.M) == [f"    {access}"]
    assert re.findall(r"^error_log .*$", config, re.M) == [f"error_log stderr {errors};"]
