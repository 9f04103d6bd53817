import logging

import pytest

from dogbreed.images import DEFAULT_MAX_PIXELS
from dogbreed.serving.environment import ConfigurationError, ServingEnvironment, port_from_env


def test_defaults_on_two_cpus():
    env = ServingEnvironment.from_env({}, cpus=2)
    assert (env.port, env.workers, env.ort_threads) == (8080, 2, 2)
    assert env.model_dir == "/opt/ml/model"
    assert env.timeout_s == 60 and env.top_k == 5
    assert env.max_payload_bytes == 6 * 1024 * 1024
    assert env.max_image_pixels == DEFAULT_MAX_PIXELS
    assert env.mms_max_request_size > env.max_payload_bytes
    assert env.management_port == 8081


def test_sagemaker_variables_are_honoured():
    env = ServingEnvironment.from_env(
        {
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "120",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2",
            "SAGEMAKER_SAFE_PORT_RANGE": "9090-9099",
            "DOGBREED_TOP_K": "3",
            "DOGBREED_MAX_IMAGE_PIXELS": "1000",
            "DOGBREED_MODEL_DIR": "/models/x",
        },
        cpus=4,
    )
    assert env.port == 9090 and env.management_port == 9091
    # An explicit worker count is kept; the ORT threads share the cores among workers.
    assert env.workers == 1 and env.ort_threads == 4
    assert env.timeout_s == 120 and env.max_payload_bytes == 2 * 1024 * 1024
    assert env.top_k == 3 and env.max_image_pixels == 1000 and env.model_dir == "/models/x"


@pytest.mark.parametrize("cpus, layout", [(1, (1, 1)), (4, (4, 4)), (16, (16, 4))])
def test_default_layout_is_a_worker_per_cpu_with_threads_for_every_core_up_to_four(cpus, layout):
    env = ServingEnvironment.from_env({}, cpus=cpus)
    assert (env.workers, env.ort_threads) == layout


def test_more_workers_than_cpus_get_one_thread_each():
    env = ServingEnvironment.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "8"}, cpus=2)
    assert env.workers == 8 and env.ort_threads == 1


@pytest.mark.parametrize(
    "name, value",
    [
        ("SAGEMAKER_BIND_TO_PORT", "http"),
        ("SAGEMAKER_BIND_TO_PORT", "70000"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "-1"),
        ("DOGBREED_TOP_K", "five"),
        ("SAGEMAKER_SAFE_PORT_RANGE", "abc"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigurationError, match=name):
        ServingEnvironment.from_env({name: value}, cpus=2)


def test_port_survives_other_errors():
    assert port_from_env({"SAGEMAKER_BIND_TO_PORT": "9000", "DOGBREED_TOP_K": "x"}) == 9000
    assert port_from_env({"SAGEMAKER_BIND_TO_PORT": "bad"}) == 8080


@pytest.mark.parametrize(
    "raw, level",
    [("", logging.INFO), ("debug", logging.DEBUG), ("INFO", logging.INFO), (" warning ", logging.WARNING),
     ("error", logging.ERROR), ("20", logging.INFO), ("30", logging.WARNING), ("10", logging.DEBUG)],
)
def test_log_level_takes_a_name_or_the_sdks_number(raw, level):
    # The SageMaker Python SDK sets SAGEMAKER_CONTAINER_LOG_LEVEL=str(logging.INFO) from container_log_level.
    assert ServingEnvironment.from_env({"SAGEMAKER_CONTAINER_LOG_LEVEL": raw}, cpus=2).log_level == level


@pytest.mark.parametrize("raw", ["verbose", "warn", "25", "-10", "critical"])
def test_a_bad_log_level_names_the_variable_and_the_choices(raw):
    with pytest.raises(ConfigurationError, match=r"SAGEMAKER_CONTAINER_LOG_LEVEL=.*debug \(10\), info \(20\)"):
        ServingEnvironment.from_env({"SAGEMAKER_CONTAINER_LOG_LEVEL": raw}, cpus=2)
