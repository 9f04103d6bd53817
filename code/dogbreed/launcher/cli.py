"""``python -m dogbreed.launcher <command>``: train, features, tune, best, deploy, predict, transform, delete, report.

The commands parse their arguments into the specs :mod:`dogbreed.launcher.api` takes, call
it, and print what it returns; its :class:`LauncherError` is printed as ``error: ...``.

Every argument is validated before the first AWS call, so a typo creates nothing. AWS
settings come from the usual places (AWS_PROFILE, AWS_REGION/AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL, ~/.aws); images and the role may also come from TRAIN_IMAGE_URI,
SERVE_IMAGE_URI and SAGEMAKER_ROLE_ARN (what scripts/build_and_push.sh prints).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from dogbreed.hyperparameters import AssignmentError, parse_assignments
from dogbreed.input_channels import SPLIT_CHANNELS
from dogbreed.launcher import (
    api,
    async_predict,
    container_settings,
    explanations,
    feature_jobs,
    hosting,
    local_tuning,
    training_jobs,
    transform,
    tuning,
    validation,
)
from dogbreed.launcher.api import default_session
from dogbreed.launcher.validation import LauncherError

SessionFactory = Callable[[], boto3.Session]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--role",
        default=os.environ.get("SAGEMAKER_ROLE_ARN"),
        help="SageMaker execution role ARN (default: $SAGEMAKER_ROLE_ARN)",
    )


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image",
        default=os.environ.get("TRAIN_IMAGE_URI"),
        help="training image: ECR URI (default: $TRAIN_IMAGE_URI); with --local a local tag",
    )
    for channel in SPLIT_CHANNELS:
        parser.add_argument(
            f"--{channel}",
            required=True,
            help=f"{channel} split: s3:// prefix (with --local a directory), or a Ground Truth output "
            ".manifest or a .lst (docs/training.md)",
        )
    parser.add_argument(
        "--input-mode",
        choices=training_jobs.INPUT_MODES,
        help="how the splits' images reach the job: File (downloaded first) or FastFile (read from S3 "
        "on demand); default File, FastFile for features jobs (each image read once)",
    )
    parser.add_argument("--pretrained", help="optional 'pretrained' channel holding torchvision's .pth weights")
    parser.add_argument(
        "--output",
        required=True,
        help="s3:// prefix for model.tar.gz, checkpoints and Debugger output (with --local a directory)",
    )
    parser.add_argument(
        "--instance-type",
        default=None,
        help=f"default {training_jobs.DEFAULT_INSTANCE_TYPE}, {feature_jobs.INSTANCE_TYPE} with --features-from "
        "('local' with --local; 'local_gpu' for the GPUs)",
    )
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hyperparameter passed to the training code, repeatable (e.g. --hp epochs=10)",
    )
    parser.add_argument("--no-spot", dest="spot", action="store_false", help="on-demand instead of managed spot")
    parser.add_argument("--max-run", type=int, default=4 * 3600, help="seconds of training at most (default 4 h)")
    parser.add_argument("--max-wait", type=int, default=8 * 3600, help="spot: seconds including waiting for capacity")
    parser.add_argument("--checkpoint-uri", help="s3:// prefix for checkpoints (default <output>/<job>/checkpoints)")
    parser.add_argument("--job-name", help="default dogbreed-<timestamp>-<random>")


def _add_features_from(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--features-from",
        metavar="JOB_OR_URI",
        help="train on a feature cache: a Completed features job's name or an s3:// URI of its "
        "output.tar.gz (with --local: a directory; tune --local also takes a file); "
        "sets features=on and a CPU instance type",
    )


def _no_input_mode_locally(args: argparse.Namespace) -> None:
    if args.input_mode:
        raise LauncherError("--input-mode is for SageMaker jobs: --local gives the container the folders themselves")


def _add_from(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="model_from",
        metavar="JOB_OR_URI",
        help="incremental training: start from an earlier model, a Completed training job's name or an "
        "s3:// URI of its model.tar.gz (with --local: a directory or a model.tar.gz file), given to the job "
        "as its 'model' channel; same arch and image_size, classes matched by name",
    )


def _training_spec(
    args: argparse.Namespace, local: bool, hyperparameters: dict[str, str] | None = None, input_mode: str = "File"
) -> training_jobs.TrainingSpec:
    """``input_mode``: the image channels' mode where ``--input-mode`` is not given."""
    if not args.image:
        raise LauncherError("no training image: pass --image or set TRAIN_IMAGE_URI")
    if local:
        _no_input_mode_locally(args)
    return training_jobs.TrainingSpec(
        image=args.image,
        channels={c: getattr(args, c) for c in SPLIT_CHANNELS},
        output=args.output,
        role=args.role,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        hyperparameters=parse_assignments(args.hp) if hyperparameters is None else hyperparameters,
        spot=args.spot,
        max_run_seconds=args.max_run,
        max_wait_seconds=args.max_wait,
        checkpoint_uri=args.checkpoint_uri,
        pretrained=args.pretrained,
        debugger=getattr(args, "debugger", True),
        job_name=args.job_name,
        local=local,
        features_from=getattr(args, "features_from", None),
        input_mode=args.input_mode or input_mode,
        model_from=getattr(args, "model_from", None),
    )


def cmd_train(args, session_factory: SessionFactory) -> int:
    spec = _training_spec(args, args.local)
    job = api.train(spec, wait=args.wait, session=session_factory)
    if job.local:
        print(job.model)
        return 0
    print(f"training job {job.name} ({job.status})")
    print(f"model: {job.model}")
    return 0


def cmd_features(args, session_factory: SessionFactory) -> int:
    """A features job: the feature cache and nothing else, then the command that reads it."""
    hyperparameters = feature_jobs.features_job_hyperparameters(parse_assignments(args.hp))
    spec = _training_spec(args, args.local, hyperparameters, input_mode="FastFile")  # each image is read once
    result = api.features(spec, wait=args.wait, session=session_factory)
    if result.job.local:
        print(f"feature cache: {result.cache}")
        print(f"next: {_next_tune_command(args, result.cache, spec.hyperparameters, local=True)}")
        return 0
    print(f"features job {result.job.name} ({result.job.status})")
    print(f"feature cache: {result.cache} (once the job is Completed)")
    print(f"next: {_next_tune_command(args, result.job.name, spec.hyperparameters, local=False)}")
    return 0


def _next_tune_command(args, features_from: str, hyperparameters: dict[str, str], local: bool) -> str:
    """``tune --features-from ...`` with the features job's data, weights and hyperparameters.

    The cache is keyed on what shaped it (arch, image size, views, seed, ...): the same
    ``--hp`` make the trials find it instead of computing it again.
    """
    argv = ["python", "-m", "dogbreed.launcher", "tune", "--features-from", features_from]
    if local:
        argv += ["--local", "--image", args.image]
    for name in (*SPLIT_CHANNELS, "pretrained"):
        if getattr(args, name):
            argv += [f"--{name}", getattr(args, name)]
    argv += ["--output", f"{args.output.rstrip('/')}/tuning" if local else args.output]
    for name, value in hyperparameters.items():
        if name not in ("features", "features_only"):  # the features job's own; tune sets features=on itself
            argv += ["--hp", f"{name}={value}"]
    return shlex.join(argv)


def cmd_tune(args, session_factory: SessionFactory) -> int:
    if args.local:
        return _tune_local(args)
    if args.timeout is not None or not args.final:
        raise LauncherError(
            "--timeout and --no-final are for tune --local (a SageMaker tuning job is bounded by "
            "--max-jobs and each job's --max-run, and each of its trials is a model)"
        )
    spec = tuning.TuningSpec(
        training=_training_spec(args, local=False),
        lr_min=args.lr_min,
        lr_max=args.lr_max,
        batch_sizes=args.batch_sizes,
        max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel_jobs,
        name=args.name,
    )
    job = api.tune(spec, session=session_factory)
    print(f"tuning job {job.name}: python -m dogbreed.launcher best {job.name}")
    if job.feature_cache:
        print(f"trials on {job.instance_type} read the feature cache {job.feature_cache}")
    return 0


def _tune_local(args) -> int:
    """``python -m dogbreed.tune`` in the local training image; a failed search is a :class:`api.JobFailed`."""
    if args.instance_count != 1:
        raise LauncherError("tune --local runs one container: --instance-count must be 1")
    _no_input_mode_locally(args)
    spec = local_tuning.LocalTuningSpec(
        image=args.image,
        channels={c: getattr(args, c) for c in SPLIT_CHANNELS},
        output=args.output,
        lr_min=args.lr_min,
        lr_max=args.lr_max,
        batch_sizes=args.batch_sizes,
        trials=args.max_jobs,
        hyperparameters=parse_assignments(args.hp),
        pretrained=args.pretrained,
        features_from=args.features_from,
        model_from=args.model_from,
        timeout_seconds=args.timeout,
        final=args.final,
        instance_type=args.instance_type or "local",
    )
    search = api.tune_local(spec)
    print(f"tune report: {search.report_dir}")
    if search.model_dir is not None:
        print(f"model: {search.model_dir}")
    return 0


def cmd_best(args, session_factory: SessionFactory) -> int:
    best = api.best(args.tuning_job, session=session_factory)
    print(f"tuning job {best.tuning_job} ({best.status})")
    print(f"best training job {best.training_job}: {best.objective}={best.value:.4f}")
    for name, value in sorted(best.hyperparameters.items()):
        print(f"  {name}={value}")
    # Its model.tar.gz is the whole network (backbone and trained head), cached features or not.
    print(f"deploy it: python -m dogbreed.launcher deploy --model {best.training_job}")
    return 0


# The flags of each kind of endpoint, with the kind's own flag.
SERVERLESS_FLAGS = ("memory_mb", "max_concurrency", "provisioned_concurrency")
ASYNC_FLAGS = ("output", "failure_output", "success_topic", "error_topic", "max_concurrent_invocations")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given_without(args, names: Sequence[str], kind: str, flag: str) -> None:
    """Refuse a kind's flags without the kind: they would be ignored."""
    given = [_flag(name) for name in names if getattr(args, name) is not None]
    if given and not getattr(args, kind):
        raise LauncherError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for {flag}")


def _deploy_spec(args) -> hosting.DeploySpec:
    if not args.image:
        raise LauncherError("no serving image: pass --image or set SERVE_IMAGE_URI")
    _given_without(args, SERVERLESS_FLAGS, "serverless", "--serverless")
    _given_without(args, ASYNC_FLAGS, "asynchronous", "--async")
    scaling = None
    if args.max_instances is not None:
        scaling = hosting.Autoscaling(args.min_instances, args.max_instances, args.invocations_per_instance)
    serverless = asynchronous = None
    if args.serverless:
        given = {name: getattr(args, name) for name in SERVERLESS_FLAGS if getattr(args, name) is not None}
        serverless = hosting.Serverless(**given)
    if args.asynchronous:
        if not args.output:
            raise LauncherError("--async needs --output s3://bucket/prefix (where the answers go)")
        asynchronous = hosting.AsyncInference(
            output=args.output,
            failure_output=args.failure_output,
            success_topic=args.success_topic,
            error_topic=args.error_topic,
            max_concurrent_invocations=args.max_concurrent_invocations,
        )
    if (args.model is None) == (args.multi_model is None):
        raise LauncherError("deploy needs --model (one model) or --multi-model s3://bucket/prefix/ (many), not both")
    return hosting.DeploySpec(
        image=args.image,
        model_data=args.model or args.multi_model,
        multi_model=args.multi_model is not None,
        role=args.role,
        name=args.name,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        autoscaling=scaling,
        serverless=serverless,
        asynchronous=asynchronous,
        local=args.local,
    )


def _local_prediction_args(args) -> Path | None:
    """Check ``--predict`` and ``--explain`` before anything starts; the overlay's path, if asked for."""
    if args.predict and not args.local:
        raise LauncherError(
            "--predict IMAGE is for deploy --local; a SageMaker endpoint: "
            "python -m dogbreed.launcher predict ENDPOINT IMAGE"
        )
    if args.explain and not args.predict:
        raise LauncherError("--explain PNG needs --predict IMAGE (and --local)")
    if args.predict:
        hosting.read_image(args.predict)  # a missing file fails before the container starts
    return explanations.overlay_path(args.explain) if args.explain else None


def cmd_deploy(args, session_factory: SessionFactory) -> int:
    spec = _deploy_spec(args)
    overlay = _local_prediction_args(args)
    if args.local:
        endpoint = api.deploy_local(spec, port=args.port)
        try:
            print(f"local endpoint {spec.name} on http://localhost:{args.port}/invocations", flush=True)
            if args.predict:
                _print_prediction(api.predict(endpoint, args.predict, explain=overlay))
            else:
                _serve_until_interrupted()
        finally:
            api.delete(endpoint)
        return 0
    deployed = api.deploy(spec, wait=args.wait, session=session_factory)
    print(f"endpoint {deployed.name}")
    if deployed.asynchronous_output:
        print(f"answers: {deployed.asynchronous_output}/, errors: {deployed.asynchronous_failures}/")
        print(f"predict: python -m dogbreed.launcher predict {deployed.name} IMAGE --async")
    return 0


def _serve_until_interrupted() -> None:
    print("serving until Ctrl-C", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def cmd_predict(args, session_factory: SessionFactory) -> int:
    prediction = api.predict(
        args.endpoint,
        args.image,
        explain=args.explain,
        target_model=args.target_model,
        asynchronous=args.asynchronous,
        input_prefix=args.input,
        timeout=args.timeout,
        session=session_factory,
        # Progress goes to stderr; stdout is the answer's alone.
        echo=lambda line: print(line, file=sys.stderr, flush=True),
    )
    _print_prediction(prediction, as_json=args.json)
    return 0


def _print_prediction(prediction: api.Prediction, as_json: bool = False) -> None:
    """The answer (breeds and probabilities, or with ``as_json`` its body as the endpoint sent it) and,
    with an overlay, the map's box and where the picture with the map drawn over it went."""
    text = prediction.body
    if as_json:
        print(text, end="" if text.endswith("\n") else "\n")  # the body as the endpoint sent it
    else:
        print(prediction)
    if prediction.overlay is not None:
        # With --json, stdout stays the body alone (the box is in it).
        print(f"{prediction.explanation}; overlay: {prediction.overlay}", file=sys.stderr if as_json else sys.stdout)


def _transform_spec(args) -> transform.TransformSpec:
    missing = [f"--{name}" for name in ("model", "input", "output") if not getattr(args, name)]
    if missing:
        raise LauncherError(f"transform needs {', '.join(missing)} (or --attach JOB)")
    return transform.TransformSpec(
        image=args.image,
        model_data=args.model,
        input=args.input,
        output=args.output,
        role=args.role,
        job_name=args.job_name,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        max_payload_mb=args.max_payload_mb,
        max_concurrent_transforms=args.max_concurrent_transforms,
        content_type=args.content_type,
        local=args.local,
        explain=args.explain,
    )


def cmd_transform(args, session_factory: SessionFactory) -> int:
    """Batch transform into predictions.jsonl; exit status 1 when the job failed or an image has no prediction."""
    if args.attach:
        given = [
            flag
            for flag, value in (
                ("--model", args.model),
                ("--input", args.input),
                ("--output", args.output),
                ("--job-name", args.job_name),
                ("--local", args.local),
                ("--no-wait", not args.wait),
                ("--explain", args.explain),
            )
            if value
        ]
        if given:
            raise LauncherError(f"--attach JOB gathers that job's own output: drop {', '.join(given)}")
        name = validation.resource_name(args.attach, "--attach (a transform job's name)")
        return _finish_transform(name, lambda: api.attach_transform(name, session=session_factory))
    spec = _transform_spec(args)
    if spec.local:
        if not args.wait:
            raise LauncherError("--no-wait needs a SageMaker job: transform --local runs to its end")
        return _finish_transform(spec.job_name, lambda: api.transform_images(spec, port=args.port), local=True)
    session = session_factory()
    api.start_transform(spec, session=session)
    print(f"transform job {spec.job_name}: {spec.input}/ -> {spec.output}/ (model {spec.job_name})", flush=True)
    if not args.wait:
        print(f"gather its predictions once it ends: python -m dogbreed.launcher transform --attach {spec.job_name}")
        return 0
    return _finish_transform(spec.job_name, lambda: api.attach_transform(spec.job_name, session=session))


def _finish_transform(name: str, run: Callable[[], transform.Outcome], local: bool = False) -> int:
    """Run (or wait for) the job, then print how it ended and what predictions.jsonl holds."""
    try:
        outcome = run()
    except KeyboardInterrupt:
        print(
            "interrupted: the local job and its container are stopped"
            if local
            else f"stopped waiting; the job goes on: python -m dogbreed.launcher transform --attach {name}",
            file=sys.stderr,
        )
        return 130
    if outcome.status != "Completed":
        print(
            f"error: transform job {name} {outcome.status}: {outcome.failure_reason or 'no reason given'}",
            file=sys.stderr,
        )
    print("\n".join(outcome.summary.report()))
    return 0 if outcome.ok else 1


def cmd_delete(args, session_factory: SessionFactory) -> int:
    for line in api.delete(args.endpoint, session=session_factory):
        print(f"deleted {line}")
    return 0


def cmd_report(args, session_factory: SessionFactory) -> int:
    print(api.report(args.job, dest=args.dir, image=args.image, session=session_factory))
    return 0


def _train_parser(commands) -> None:
    p = commands.add_parser("train", help="start a training job (managed spot, checkpoints, Debugger)")
    _add_common(p)
    _add_training(p)
    _add_features_from(p)
    _add_from(p)
    p.add_argument("--no-debugger", dest="debugger", action="store_false", help="no Debugger hook, rules or profiler")
    p.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    p.add_argument("--local", action="store_true", help="run in Docker on this machine with the SDK's local mode")
    p.set_defaults(run=cmd_train)


def _features_parser(commands) -> None:
    p = commands.add_parser("features", help="start a features job: the frozen backbone's outputs, cached for tune")
    _add_common(p)
    _add_training(p)
    p.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    p.add_argument("--local", action="store_true", help="run in Docker on this machine with the SDK's local mode")
    p.set_defaults(run=cmd_features, debugger=False)  # no Debugger: nothing trains


def _tune_parser(commands) -> None:
    p = commands.add_parser("tune", help="start a tuning job over lr and batch_size, maximising valid_accuracy")
    _add_common(p)
    _add_training(p)
    _add_features_from(p)
    _add_from(p)
    p.add_argument("--lr-min", type=float, default=1e-4)
    p.add_argument("--lr-max", type=float, default=1e-1)
    p.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[16, 32, 64],
        help="comma-separated (default 16,32,64)",
    )
    p.add_argument("--max-jobs", type=int, default=10, help="training jobs (with --local: trials) in all")
    p.add_argument("--max-parallel-jobs", type=int, default=2)
    p.add_argument("--name", help="tuning job name, at most 32 characters")
    p.add_argument(
        "--local",
        action="store_true",
        help="search on this machine instead: python -m dogbreed.tune in the local training image "
        "(--image a local tag; directories instead of s3:// URIs; --output a directory)",
    )
    p.add_argument("--timeout", type=int, metavar="SECONDS", help="--local: the search's time limit")
    p.add_argument(
        "--no-final",
        dest="final",
        action="store_false",
        help="--local: do not train the final model with the best hyperparameters",
    )
    p.set_defaults(run=cmd_tune)


def _best_parser(commands) -> None:
    p = commands.add_parser("best", help="print a tuning job's best training job and its hyperparameters")
    p.add_argument("tuning_job")
    p.set_defaults(run=cmd_best)


def _add_endpoint_kinds(p: argparse.ArgumentParser) -> None:
    """deploy's --serverless and --async, each with its own flags."""
    p.add_argument(
        "--serverless",
        action="store_true",
        help="a serverless endpoint: no instances, billed per request; one worker, requests up to "
        f"{container_settings.SERVERLESS_MAX_PAYLOAD_MB} MB",
    )
    p.add_argument(
        "--memory-mb",
        type=int,
        help=f"--serverless: memory per instance, one of {', '.join(map(str, hosting.SERVERLESS_MEMORY_MB))} "
        f"(default {hosting.DEFAULT_SERVERLESS_MEMORY_MB})",
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        help=f"--serverless: requests at once, 1-{hosting.SERVERLESS_MAX_CONCURRENCY} "
        f"(default {hosting.DEFAULT_SERVERLESS_MAX_CONCURRENCY})",
    )
    p.add_argument(
        "--provisioned-concurrency",
        type=int,
        help="--serverless: requests kept warm (no cold start; billed while idle), at most --max-concurrency",
    )
    p.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="an asynchronous endpoint: requests and answers through S3 (predict --async), "
        f"{container_settings.ASYNC_TIMEOUT_S // 60} minutes and {container_settings.ASYNC_MAX_PAYLOAD_MB} MB "
        "per request at most",
    )
    p.add_argument("--output", help="--async: s3:// prefix for the answers (<output>/<inference id>.out)")
    p.add_argument(
        "--failure-output",
        help=f"--async: s3:// prefix for the error answers (default <output>/{hosting.ASYNC_FAILURES_FOLDER})",
    )
    p.add_argument("--success-topic", metavar="ARN", help="--async: SNS topic told of each answer")
    p.add_argument("--error-topic", metavar="ARN", help="--async: SNS topic told of each error")
    p.add_argument(
        "--max-concurrent-invocations",
        type=int,
        help=f"--async: requests in flight per instance, 1-{hosting.ASYNC_MAX_CONCURRENT_INVOCATIONS} "
        "(default: SageMaker chooses)",
    )


def _add_serving_model(parser: argparse.ArgumentParser) -> None:
    """--image and --model: the serving image and the trained model it serves (deploy, transform)."""
    parser.add_argument(
        "--image",
        default=os.environ.get("SERVE_IMAGE_URI"),
        help="serving image: ECR URI (default: $SERVE_IMAGE_URI); with --local a local tag",
    )
    parser.add_argument("--model", help="training job name or s3://.../model.tar.gz (with --local a model.tar.gz file)")


def _deploy_parser(commands) -> None:
    p = commands.add_parser("deploy", help="model, endpoint config and real-time endpoint from a trained model")
    _add_common(p)
    _add_serving_model(p)
    p.add_argument(
        "--multi-model",
        metavar="S3_PREFIX",
        help="instead of --model: a multi-model endpoint serving every model.tar.gz under this s3:// prefix "
        "(predict --target-model KEY picks one)",
    )
    p.add_argument("--name", help="endpoint (and model, config) name; default dogbreed-<timestamp>-<random>")
    p.add_argument(
        "--instance-type", default=None, help=f"default {hosting.DEFAULT_INSTANCE_TYPE} ('local' with --local)"
    )
    p.add_argument("--instance-count", type=int, help="default 1")
    p.add_argument("--max-instances", type=int, help="enable autoscaling up to this many instances")
    p.add_argument("--min-instances", type=int, default=1)
    p.add_argument(
        "--invocations-per-instance",
        type=float,
        default=100.0,
        help="autoscaling target: invocations per instance per minute",
    )
    _add_endpoint_kinds(p)
    p.add_argument("--no-wait", dest="wait", action="store_false", help="return before the endpoint is InService")
    p.add_argument("--local", action="store_true", help="serve in Docker on this machine (LocalSession)")
    p.add_argument("--port", type=int, default=8080, help="--local: host port")
    p.add_argument("--predict", metavar="IMAGE", help="--local: predict this image, then stop the endpoint")
    p.add_argument(
        "--explain",
        metavar="PNG",
        help="--local --predict: also ask for the top class's activation map; print its box and save "
        "the image with the map drawn over it to this .png file",
    )
    p.set_defaults(run=cmd_deploy)


def _predict_parser(commands) -> None:
    p = commands.add_parser("predict", help="send an image to an endpoint and print breeds and probabilities")
    p.add_argument("endpoint")
    p.add_argument("image", help="a JPEG or PNG file")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the endpoint's JSON answer as it sent it (its body, UTF-8, newline-terminated)",
    )
    p.add_argument(
        "--explain",
        metavar="PNG",
        help="also ask for the top class's activation map (custom attribute explain=cam): print its box "
        "and save the image with the map drawn over it to this .png file",
    )
    p.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="an asynchronous endpoint (deploy --async): upload the image to S3, queue it, wait for the answer",
    )
    p.add_argument(
        "--target-model",
        metavar="KEY",
        help="a multi-model endpoint (deploy --multi-model): the model.tar.gz to answer, by its key under "
        "the endpoint's prefix, e.g. breeds-a.tar.gz",
    )
    p.add_argument(
        "--input",
        help="--async: s3:// prefix for the upload "
        f"(default: {async_predict.INPUT_FOLDER}/ in the endpoint's output prefix)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help=f"--async: how long to wait for the answer (default {async_predict.DEFAULT_TIMEOUT_S})",
    )
    p.set_defaults(run=cmd_predict)


def _transform_parser(commands) -> None:
    p = commands.add_parser(
        "transform", help="batch transform: every image under a prefix, one line each in predictions.jsonl"
    )
    _add_common(p)
    _add_serving_model(p)
    p.add_argument("--input", help="s3:// prefix of the images, at any depth (with --local a directory)")
    p.add_argument(
        "--output",
        help="an empty s3:// prefix for the <key>.out files and predictions.jsonl (with --local a directory)",
    )
    p.add_argument(
        "--job-name", help=f"transform job (and model) name; default {transform.BASE_NAME}-<timestamp>-<random>"
    )
    p.add_argument(
        "--instance-type", default=None, help=f"default {transform.DEFAULT_INSTANCE_TYPE} ('local' with --local)"
    )
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument(
        "--max-payload-mb",
        type=int,
        default=container_settings.DEFAULT_MAX_PAYLOAD_MB,
        help="the largest image, in MB: the job's MaxPayloadInMB and the container's limit "
        f"(default %(default)s, at most {transform.MAX_PAYLOAD_LIMIT_MB})",
    )
    p.add_argument(
        "--max-concurrent-transforms",
        type=int,
        help="requests in flight per instance; default: the container's answer, its worker count",
    )
    p.add_argument(
        "--content-type",
        default=transform.CONTENT_TYPES[0],
        help=f"sent with every image, one of {', '.join(transform.CONTENT_TYPES)} (default %(default)s): "
        "the endpoint reads JPEG or PNG from the bytes whichever is named",
    )
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="return once the job is created; later: transform --attach JOB",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help=f"a class activation map of each image's top class ({explanations.ENV}={explanations.METHOD} "
        'in the container): each line of predictions.jsonl gets an "explanation" with its box',
    )
    p.add_argument(
        "--attach", metavar="JOB", help="wait for a transform job started before, then gather its predictions"
    )
    p.add_argument(
        "--local",
        action="store_true",
        help="run in Docker on this machine (LocalSession): --input and --output directories",
    )
    p.add_argument("--port", type=int, default=8080, help="--local: host port")
    p.set_defaults(run=cmd_transform)


def _delete_parser(commands) -> None:
    p = commands.add_parser("delete", help="delete an endpoint, its config, its model and its autoscaling")
    p.add_argument("endpoint")
    p.set_defaults(run=cmd_delete)


def _report_parser(commands) -> None:
    p = commands.add_parser("report", help="download a training job's output and Debugger data; build its report")
    p.add_argument("job", help="training job name")
    p.add_argument("--dir", type=Path, help="where to put it (default: build/reports/JOB)")
    p.add_argument(
        "--image",
        default=os.environ.get("TRAIN_IMAGE", api.DEFAULT_REPORT_IMAGE),
        help="a local training image that builds the report (default: $TRAIN_IMAGE or dogbreed-train:latest)",
    )
    p.set_defaults(run=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dogbreed.launcher", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in (
        _train_parser,
        _features_parser,
        _tune_parser,
        _best_parser,
        _deploy_parser,
        _predict_parser,
        _transform_parser,
        _delete_parser,
        _report_parser,
    ):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None, session_factory: SessionFactory = default_session) -> int:
    """Run one command; exit status 2 for bad input, 1 for an AWS error or an endpoint's error answer,
    a local search's own when it fails."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, session_factory)
    except api.JobFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except (hosting.EndpointError, api.AwsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (LauncherError, AssignmentError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as exc:  # AWS refused or could not be reached: its message says why
        print(f"error: {exc}", file=sys.stderr)
        return 1
