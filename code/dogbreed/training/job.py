"""The training job: fine-tune an ImageNet-pretrained network (:mod:`dogbreed.architectures`) on a
folder-per-class image set.

SageMaker runs the image's ``train`` (``python -m dogbreed.training``) with no
arguments; everything then comes from ``/opt/ml`` (see :mod:`.environment`). ``--help``
lists every flag. Exit status: 0 done, 1 failed (reason in ``/opt/ml/output/failure``),
2 bad hyperparameter or flag, 143 stopped by SIGTERM after saving a checkpoint.

:func:`run` reads top to bottom as the job's stages: data, model, restore, epochs,
finish.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dogbreed.architectures import architecture
from dogbreed.artifacts import INT8_ONNX_FILE, ModelMetadata
from dogbreed.images import ImageDecodeError, open_image
from dogbreed.job_outputs import EPOCH_SCALAR_PREFIX, EPOCH_SCALARS, PROFILE_DIR, TRIAL_DIR
from dogbreed.metric_lines import format_metrics
from dogbreed.preprocessing import Preprocessing
from dogbreed.report.page import build_report
from dogbreed.training.checkpoints import (
    BestEpoch,
    JobIdentity,
    PartialEpoch,
    TrainingState,
    load_checkpoint,
    save_checkpoint,
)
from dogbreed.training.config import JobPaths, TrainConfig, load_config
from dogbreed.training.data import (
    EvalTransform,
    Normalize,
    Split,
    class_name,
    loader_failure,
    make_loader,
    scan_split,
    stop_loader_workers,
    train_transform,
)
from dogbreed.training.debugger import NoHook, create_hook
from dogbreed.training.distributed import SINGLE, Distributed, init_distributed
from dogbreed.training.distributed import close as close_distributed
from dogbreed.training.environment import TrainingEnvironment
from dogbreed.training.explanations import Explainer, write_explanations
from dogbreed.training.export import export_model_dir
from dogbreed.training.failure import EXIT_SIGTERM, ConfigError, TrainingError, failure_reason, write_failure
from dogbreed.training.feature_cache import (
    CACHE_DIR,
    FeatureLoader,
    FeatureStore,
    SplitFeatures,
    extract,
    feature_key,
    mark_unreadable,
    trunk_checksum,
)
from dogbreed.training.loop import Evaluation, GracefulStop, Learner, PassTotals, StopRequested, evaluate, train_pass
from dogbreed.training.metrics import EpochMetrics, write_metrics_json, write_confusion_csvs
from dogbreed.training.model import build_model, head_of, trainable_parameters
from dogbreed.training.profiler import JobProfiler

log = logging.getLogger("dogbreed.training")

ONNX_CHECK_IMAGES = 8


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record is logged (callers may swap it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def setup_logging() -> None:
    """Plain lines on stdout, which SageMaker sends to CloudWatch and matches metric regexes against."""
    logging.basicConfig(
        handlers=[_StdoutHandler()],
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


@dataclass
class Data:
    """The splits, their loaders and what the model needs to know of them."""

    train: Split
    valid: Split
    test: Split | None
    train_loader: DataLoader | FeatureLoader
    valid_loader: DataLoader | FeatureLoader
    test_loader: DataLoader | FeatureLoader | None
    classes: list[str]
    preprocessing: Preprocessing
    features: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> where its cached features came from

    @property
    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.valid, self.test) if s is not None]


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    if config.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.lr_scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_size, gamma=config.lr_gamma)
    return None


# Stage 1: data. Every split is checked before any weights are loaded.
def load_data(config: TrainConfig, paths: JobPaths, device: torch.device, distributed: Distributed = SINGLE) -> Data:
    """Scan the splits (failing on a missing or malformed one) and make their loaders (this process's slices)."""
    train = scan_split("train", paths.train)
    valid = scan_split("valid", paths.valid, train.class_dirs)
    test = None
    if paths.test.is_dir():
        test = scan_split("test", paths.test, train.class_dirs)
    else:
        log.info("no test channel at %s: test metrics are skipped", paths.test)
    for split in (train, valid, test):
        if split is not None:
            split.check_unreadable(config.max_unreadable_fraction)

    spec = architecture(config.arch)  # its ImageNet weights expect their own normalisation
    preprocessing = Preprocessing(
        resize_size=config.resize_size, crop_size=config.image_size, mean=spec.mean, std=spec.std
    )
    eval_transform = EvalTransform(preprocessing)

    def loader(split: Split, transform, shuffle: bool) -> DataLoader:
        return make_loader(
            split,
            transform,
            config.batch_size,
            shuffle,
            config.num_workers,
            pin_memory=device.type == "cuda",
            seed=config.seed,
            timeout=config.loader_timeout,
            rank=distributed.rank,
            world_size=distributed.world_size,
        )

    return Data(
        train=train,
        valid=valid,
        test=test,
        train_loader=loader(train, train_transform(preprocessing, config.augment), shuffle=True),
        valid_loader=loader(valid, eval_transform, shuffle=False),
        test_loader=loader(test, eval_transform, shuffle=False) if test is not None else None,
        classes=[class_name(d) for d in train.class_dirs],
        preprocessing=preprocessing,
    )


# Stage 2: the model and what trains it.
def build_learner(
    config: TrainConfig,
    paths: JobPaths,
    env: TrainingEnvironment,
    data: Data,
    device: torch.device,
    distributed: Distributed = SINGLE,
) -> Learner:
    """The network with pretrained weights and a new head, its loss, optimizer, schedule and scaler."""
    amp = config.amp and device.type == "cuda"
    if config.amp and not amp:
        log.warning("amp=true needs CUDA; training in float32 on %s", device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log.info("device: %s%s", device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")

    channel = paths.pretrained if paths.pretrained.is_dir() else None
    model = build_model(config.arch, len(data.classes), config.pretrained, config.freeze, channel, env.torch_home)
    model.to(device)
    params = trainable_parameters(model)
    log.info(
        "%s: %d classes, %d of %d parameters trainable (freeze=%s)",
        config.arch,
        len(data.classes),
        sum(p.numel() for p in params),
        sum(p.numel() for p in model.parameters()),
        config.freeze,
    )
    optimizer = make_optimizer(config, params)
    return Learner(
        trained=model,
        full_network=model,
        normalize=Normalize.of(data.preprocessing),
        criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        optimizer=optimizer,
        scheduler=make_scheduler(config, optimizer),
        scaler=torch.amp.GradScaler(device.type, enabled=amp),
        device=device,
        amp=amp,
        arch=architecture(config.arch),
        freeze=config.freeze,
        hook=NoHook(),
        profiler=JobProfiler.off(device),
        distributed=distributed,
        # DDP averages the gradients of every process's slice after each backward pass.
        ddp=DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if distributed.enabled
        else None,
    )


# Stage 2b (features on): the frozen trunk runs once per image; the passes then train fc alone.
def use_cached_features(
    config: TrainConfig, paths: JobPaths, data: Data, learner: Learner, stop: GracefulStop
) -> dict[str, SplitFeatures]:
    """Put each split's cached trunk features (read, or computed and saved) in place of its images.

    The loaders keep the image loaders' order and seeds, so training ``fc`` on them is
    training the whole network with a trunk that does not change, minus the trunk's cost.
    Returns each split's features.
    """
    features: dict[str, SplitFeatures] = {}
    store = FeatureStore(paths.output_data_dir / CACHE_DIR, paths.features)
    weights = trunk_checksum(learner.full_network, learner.arch)
    for split in data.splits:
        is_train = split is data.train
        key = feature_key(
            split,
            config.arch,
            weights,
            data.preprocessing,
            config.cached_views,
            augment=is_train and config.augment,
            seed=config.seed,
        )
        start = time.perf_counter()
        cached = store.find(key)
        if cached is None:
            cached = extract(
                learner.full_network,
                learner.arch,
                split,
                key,
                data.preprocessing,
                learner.device,
                config.batch_size,
                config.num_workers,
                config.loader_timeout,
                config.seed,
                stop,
            )
            source = str(store.save(cached))
        else:
            mark_unreadable(split, cached)
            source = "cache"
        split.check_unreadable(config.max_unreadable_fraction)
        features[split.name] = cached
        data.features[split.name] = {
            "views": key.views,
            "source": source,
            "key": key.digest()[:16],
            "seconds": round(time.perf_counter() - start, 3),
        }
        loader = FeatureLoader(cached, config.batch_size, shuffle=is_train, seed=config.seed, device=learner.device)
        setattr(data, f"{split.name}_loader", loader)
    learner.trained, learner.normalize, learner.freeze = head_of(learner.full_network, learner.arch), nn.Identity(), "none"
    if config.augment and config.feature_views == 1:
        log.warning(
            "features with augment=true and feature_views=1: every epoch sees the same random crop "
            "of each image; raise feature_views, or set augment=false"
        )
    return features


# Stage 3: restore a stopped job's progress (managed spot training, a stopped job).
def restore(config: TrainConfig, paths: JobPaths, data: Data, learner: Learner) -> TrainingState:
    """The checkpoint's state (the learner restored with it), or a fresh state."""
    identity = JobIdentity(
        config.arch,
        tuple(data.train.class_dirs),
        config.freeze,
        config.optimizer,
        config.lr_scheduler,
        config.use_features,
    )
    state = load_checkpoint(paths.checkpoint_dir, identity, learner)
    if state is None:
        return TrainingState(identity)
    for split in data.splits:
        split.unreadable.update(state.unreadable.get(split.name, {}))
    where = f"after epoch {state.epoch}"
    if state.partial is not None:
        partial = state.partial
        where = f"in epoch {partial.epoch}, " + (
            "at its validation"
            if partial.trained
            else f"after {partial.totals.positions} of its {len(data.train.samples)} training images"
        )
    best = f"best valid_loss {state.best.valid_loss:.4f} at epoch {state.best.epoch}" if state.best else "no best yet"
    log.info("resuming from %s %s (%s)", paths.checkpoint_dir / "checkpoint.pt", where, best)
    return state


# Stage 4: the epochs, with early stopping.
def train_epochs(
    config: TrainConfig,
    paths: JobPaths,
    data: Data,
    learner: Learner,
    state: TrainingState,
    stop: GracefulStop,
    after_epoch: Callable[[EpochMetrics], None] | None = None,
) -> None:
    """Train until ``epochs`` or early stopping; raises :class:`StopRequested` after checkpointing.

    ``after_epoch`` sees each finished epoch's metrics (the tuner prunes there).
    """
    first = state.partial.epoch if state.partial else state.epoch + 1
    for epoch in range(first, config.epochs + 1):
        if patience_exhausted(config, state):  # a resumed job that had stopped early
            return
        log.info("epoch %d/%d", epoch, config.epochs)
        metrics, valid = run_epoch(epoch, config, paths, data, learner, state, stop)
        log.info(metrics.line())
        record_epoch(state, metrics, valid, learner.trained)
        checkpoint(paths, data, learner, state)
        if after_epoch is not None:
            after_epoch(metrics)
        if patience_exhausted(config, state):
            log.info(
                "early stopping: valid_loss has not improved for %d epochs (best %.4f at epoch %d)",
                state.bad_epochs,
                state.best.valid_loss,
                state.best.epoch,
            )
            return


def run_epoch(
    epoch: int,
    config: TrainConfig,
    paths: JobPaths,
    data: Data,
    learner: Learner,
    state: TrainingState,
    stop: GracefulStop,
) -> tuple[EpochMetrics, Evaluation]:
    """Train one epoch (or the rest of a stopped one) and validate it; on SIGTERM, checkpoint and re-raise."""
    start = time.perf_counter()
    partial = state.partial = state.partial or PartialEpoch(epoch, PassTotals.zero(learner.device))
    try:
        if not partial.trained:
            data.train_loader.batch_sampler.set_epoch(epoch, start=partial.totals.positions)
            train_pass(learner, data.train_loader, data.train, stop, partial.totals, epoch)
            partial.trained = True
        valid = evaluate(learner, data.valid_loader, data.valid, stop, len(data.classes), epoch)
    except StopRequested:
        checkpoint(paths, data, learner, state)
        raise
    if learner.scheduler is not None:
        learner.scheduler.step()
    for split in (data.train, data.valid):
        split.check_unreadable(config.max_unreadable_fraction)
    totals = partial.totals.reduced(learner.distributed)
    metrics = EpochMetrics(
        epoch=epoch,
        train_loss=totals.loss,
        train_accuracy=totals.accuracy,
        valid_loss=valid.loss,
        valid_accuracy=valid.accuracy,
        images_per_sec=totals.images / totals.seconds,
        epoch_seconds=time.perf_counter() - start,
    )
    for name in EPOCH_SCALARS:  # the report's per-epoch curves read them back from the trial
        learner.hook.save_scalar(EPOCH_SCALAR_PREFIX + name, getattr(metrics, name))
    return metrics, valid


def record_epoch(state: TrainingState, metrics: EpochMetrics, valid: Evaluation, model: nn.Module) -> None:
    """Add a finished epoch to the state; keep its weights when its validation loss is the best yet."""
    state.history.append(metrics)
    state.epoch, state.partial = metrics.epoch, None
    if valid.loss < state.best_valid_loss:
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state.best = BestEpoch(metrics.epoch, valid.loss, valid.matrix, weights)
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1


def patience_exhausted(config: TrainConfig, state: TrainingState) -> bool:
    """True once ``patience`` epochs in a row have not lowered the validation loss."""
    return bool(config.patience) and state.bad_epochs >= config.patience


def checkpoint(paths: JobPaths, data: Data, learner: Learner, state: TrainingState) -> None:
    if not learner.distributed.is_main:  # every process holds the same weights; one writes them
        return
    state.unreadable = {s.name: dict(s.unreadable) for s in data.splits}
    state.debugger_steps = learner.hook.steps()
    save_checkpoint(paths.checkpoint_dir, state, learner)


# Stage 5: the best epoch's weights are the model; test, export, report.
def finish(
    config: TrainConfig, paths: JobPaths, data: Data, learner: Learner, state: TrainingState, stop: GracefulStop
) -> None:
    """Test the best weights, then write the model directory and the reports (the main process: the
    class activation maps of a few test photos, from its own share of the test split)."""
    learner.trained.load_state_dict(state.best.weights)
    final: dict[str, Any] = {
        "best_epoch": state.best.epoch,
        "epochs_trained": state.epoch,
        "valid_loss": state.best.valid_loss,
        "valid_accuracy": state.history[state.best.epoch - 1].valid_accuracy,
    }
    reports = {"valid": state.best.valid_matrix}
    test = None
    if data.test is not None:
        # A SIGTERM here leaves the last epoch's checkpoint, from which the test is redone.
        test = evaluate(
            learner, data.test_loader, data.test, stop, len(data.classes), state.epoch, keep_predictions=True
        )
        data.test.check_unreadable(config.max_unreadable_fraction)
        final.update(test_loss=test.loss, test_accuracy=test.accuracy)
        reports["test"] = test.matrix
        log.info(format_metrics({"test_loss": test.loss, "test_accuracy": test.accuracy}))
    if not learner.distributed.is_main:
        return

    metadata = ModelMetadata(
        arch=config.arch,
        classes=data.classes,
        preprocessing=data.preprocessing,
        class_dirs=data.train.class_dirs,
        metrics=final,
        hyperparameters=config.to_dict(),
    )
    sample = sample_batch(data.valid, data.preprocessing)
    final["onnx_max_abs_diff"] = export_model_dir(learner.full_network, metadata, paths.model_dir, sample)
    if config.int8:
        add_int8(config, paths, data, metadata, final, stop)
    else:  # an earlier run's, on the same folders
        (paths.model_dir / INT8_ONNX_FILE).unlink(missing_ok=True)
    for split_name, matrix in reports.items():
        write_confusion_csvs(paths.output_data_dir, split_name, matrix, data.classes)
    explainer = Explainer(learner.full_network, learner.arch, data.classes, data.preprocessing, learner.device)
    write_explanations(paths.output_data_dir, explainer, data.test, test.predictions if test else None)
    write_metrics(config, paths, data, state, final)
    log.info("model written to %s, reports to %s", paths.model_dir, paths.output_data_dir)


def add_int8(
    config: TrainConfig, paths: JobPaths, data: Data, metadata: ModelMetadata, final: dict[str, Any], stop: GracefulStop
) -> None:
    """``model.int8.onnx`` beside ``model.onnx``; both models' valid top-1 go into ``model.json``, the
    final metrics and a metric line."""
    # Imported here: ONNX Runtime's quantizer imports onnx, which int8=false jobs never need.
    from dogbreed.training.quantize import export_int8  # noqa: PLC0415

    start = time.perf_counter()
    readable = sum(1 for path, _ in data.train.samples if str(path) not in data.train.unreadable)
    if config.int8_calibration_images > readable:
        log.info(
            "int8_calibration_images=%d, but the train split has %d readable images: calibrating on those",
            config.int8_calibration_images,
            readable,
        )
    metadata.int8 = export_int8(
        paths.model_dir,
        data.preprocessing,
        data.train,
        data.valid,
        config.int8_calibration_images,
        config.int8_reduce_range,
        config.seed,
        stop,
        config.int8_calibration_method,
    )
    for split in (data.train, data.valid):
        split.check_unreadable(config.max_unreadable_fraction)
    top1 = {"fp32_valid_accuracy": metadata.int8.fp32_valid_top1, "int8_valid_accuracy": metadata.int8.int8_valid_top1}
    final.update(top1)
    log.info(format_metrics(top1))
    metadata.save(paths.model_dir)
    log.info("int8 export: %.1f s", time.perf_counter() - start)


def write_metrics(
    config: TrainConfig, paths: JobPaths, data: Data, state: TrainingState | None, final: dict[str, Any]
) -> None:
    """``metrics.json``: the final figures, every epoch's, the unreadable files, classes, hyperparameters
    and, with features on, where each split's features came from (``state`` None: no epoch was run)."""
    write_metrics_json(
        paths.output_data_dir,
        {
            "final": final,
            "history": [h.to_dict() for h in state.history] if state else [],
            "unreadable": {s.name: s.unreadable for s in data.splits},
            "classes": data.classes,
            "hyperparameters": config.to_dict(),
            **({"features": data.features} if data.features else {}),
        },
    )


def sample_batch(split: Split, preprocessing: Preprocessing, n: int = ONNX_CHECK_IMAGES) -> torch.Tensor:
    """Up to ``n`` evaluation-transformed images of a split, for the ONNX parity check."""
    transform, tensors = EvalTransform(preprocessing), []
    for path, _ in split.samples:
        try:
            tensors.append(transform(open_image(path)))
        except (ImageDecodeError, OSError):
            continue
        if len(tensors) == n:
            break
    return Normalize.of(preprocessing)(torch.stack(tensors))


def run(config: TrainConfig, paths: JobPaths, env: TrainingEnvironment, stop: GracefulStop) -> int:
    """The job proper; raises :class:`TrainingError` on expected failures."""
    device = pick_device(config.device)
    distributed = init_distributed(device.type == "cuda", config.distributed_timeout)
    try:
        if distributed.enabled:
            config, device = join_processes(config, env, distributed)
            stop.distributed, stop.device = distributed, device
        log.info("hyperparameters: %s", " ".join(f"{k}={v}" for k, v in config.to_dict().items()))
        return train(config, paths, env, stop, device, distributed)
    finally:
        close_distributed(distributed)


def join_processes(
    config: TrainConfig, env: TrainingEnvironment, distributed: Distributed
) -> tuple[TrainConfig, torch.device]:
    """Settings for one of several processes: its GPU, a quiet log on all but rank 0, no feature cache."""
    if not distributed.is_main:  # one copy of every line (and of every metric line) in the job's log
        logging.getLogger("dogbreed").setLevel(logging.WARNING)
    log.info(
        "distributed: %d processes joined (world_size=%d) on hosts %s, master %s",
        distributed.world_size,
        distributed.world_size,
        ",".join(env.hosts) or env.current_host,
        env.hosts[0] if env.hosts else "local",
    )
    if config.use_features:
        if config.features == "on":
            raise ConfigError(
                f"features=on trains a head on cached features, which one process does in seconds; "
                f"run it on one instance with one GPU (this job has {distributed.world_size} processes)"
            )
        log.info(
            "features=auto: off with %d processes (each trains on its slice of the images)", distributed.world_size
        )
        config = dataclasses.replace(config, features="off")
    device = (
        torch.device("cuda", distributed.local_rank)
        if torch.cuda.is_available() and config.device != "cpu"
        else torch.device("cpu")
    )
    return config, device


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators, so that what draws from them (the new
    layer's initial weights among others) repeats with ``seed``; the tuner's trials seed the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    config: TrainConfig,
    paths: JobPaths,
    env: TrainingEnvironment,
    stop: GracefulStop,
    device: torch.device,
    distributed: Distributed,
) -> int:
    """Data, learner, restore, epochs, finish; the exit status."""
    seed_everything(config.seed)

    data = load_data(config, paths, device, distributed)
    learner = build_learner(config, paths, env, data, device, distributed)
    if config.use_features:
        try:
            use_cached_features(config, paths, data, learner, stop)
        except StopRequested:
            log.warning("SIGTERM: stopped while computing features; the caches already written are kept")
            return EXIT_SIGTERM
        except RuntimeError as exc:
            raise loader_failure(exc) or exc
        if config.features_only:
            write_metrics(config, paths, data, None, final={})
            log.info(
                "features_only: feature caches written to %s; pass that folder, or this job's "
                "output.tar.gz, as the 'features' channel",
                paths.output_data_dir / CACHE_DIR,
            )
            return 0
    state = restore(config, paths, data, learner)
    if distributed.is_main:
        observe(config, paths, env, learner, state, resumed=bool(state.epoch or state.partial))
    try:
        train_epochs(config, paths, data, learner, state, stop)
        if state.best is not None:
            finish(config, paths, data, learner, state, stop)
    except StopRequested:
        if state.partial:
            log.warning(
                "SIGTERM: stopped during epoch %d; checkpoint saved to %s", state.partial.epoch, paths.checkpoint_dir
            )
        else:
            log.warning(
                "SIGTERM: stopped during the test pass or the export; the checkpoint of epoch %d in %s is kept",
                state.epoch,
                paths.checkpoint_dir,
            )
        return EXIT_SIGTERM
    except RuntimeError as exc:
        failure = loader_failure(exc)
        if failure is None:
            raise
        raise failure from exc
    finally:
        learner.hook.close()
        learner.profiler.close()
    if not distributed.is_main:
        if state.best is None:
            raise TrainingError("training diverged: the validation loss was never finite (rank 0 reports it)")
        return 0
    if state.best is None:
        diverged(config, paths, data, state, learner.hook.out_dir)
    write_job_report(config, paths, learner.hook.out_dir)
    return 0


def diverged(config: TrainConfig, paths: JobPaths, data: Data, state: TrainingState, trial_dir: Path | None) -> None:
    """No epoch had a finite validation loss: keep the history and the report (whose rules say
    why), export no model, and fail."""
    write_metrics(config, paths, data, state, final={})
    write_job_report(config, paths, trial_dir)
    losses = ", ".join(f"{h.valid_loss:.4g}" for h in state.history)
    raise TrainingError(
        f"training diverged: the validation loss was never finite in {state.epoch} epochs ({losses}); no model "
        f"was exported. Lower lr (now {config.lr}); the report in {paths.output_data_dir} shows the Debugger rules"
    )


def observe(
    config: TrainConfig,
    paths: JobPaths,
    env: TrainingEnvironment,
    learner: Learner,
    state: TrainingState,
    resumed: bool,
) -> None:
    """Start the smdebug trial and the profile (``debug``/``profile`` on); a resumed job continues both."""
    trial_dir = local_trial_dir(config, paths)
    profile_dir = paths.output_data_dir / PROFILE_DIR
    if not resumed:  # this job's own outputs from an earlier run on the same folders
        for stale in ([] if config.smdebug_dir else [trial_dir]) + [profile_dir]:
            shutil.rmtree(stale, ignore_errors=True)
    if config.debug:
        learner.hook = create_hook(
            env.debughook_config_path,
            str(trial_dir),
            learner.trained,
            learner.criterion,
            resume_steps=state.debugger_steps if resumed else None,
            tensorboard_dir=str(env.tensorboard_dir / "scalars"),
        )
    if config.profile:
        learner.profiler = JobProfiler(
            profile_dir, env.tensorboard_dir / "profiler", learner.device, config.num_workers, config.batch_size
        ).start()


def local_trial_dir(config: TrainConfig, paths: JobPaths) -> Path:
    """Where the job's own smdebug trial goes: ``smdebug_dir``, else ``debug-output`` beside metrics.json."""
    return Path(config.smdebug_dir) if config.smdebug_dir else paths.output_data_dir / TRIAL_DIR


def write_job_report(config: TrainConfig, paths: JobPaths, trial_dir: Path | None) -> None:
    """``report.html`` beside ``metrics.json``; a report that cannot be built only costs a warning.

    ``trial_dir`` is the job's smdebug trial (None with ``debug=off``).
    """
    try:
        path = build_report(
            paths.output_data_dir, trial_dir, paths.output_data_dir / PROFILE_DIR if config.profile else None
        )
    except Exception as exc:  # noqa: BLE001 - the model is written; the job has succeeded
        log.warning("the training report could not be built (%s: %s); the model is unaffected", type(exc).__name__, exc)
        return
    log.info("report written to %s", path)


def main(argv: Sequence[str] | None = None, env: TrainingEnvironment | None = None) -> int:
    """Run the job; returns the exit status. Failures write ``/opt/ml/output/failure`` first.

    ``env``: the toolkit's (see :mod:`.toolkit`); by default the local tree of :meth:`TrainingEnvironment.from_env`.
    """
    setup_logging()
    env = env or TrainingEnvironment.from_env()

    def job(stop: GracefulStop) -> int:
        config, paths = load_config(argv, env)
        return run(config, paths, env, stop)

    return run_guarded("training", env, job)


def run_guarded(what: str, env: TrainingEnvironment, body: Callable[[GracefulStop], int]) -> int:
    """``body(stop)``'s exit status with SIGTERM turned into a flag; any failure becomes one line in
    the failure file and its exit status. Loader workers never outlive it."""
    stop = GracefulStop().install()
    try:
        return body(stop)
    except TrainingError as exc:
        reason = failure_reason(exc)
        write_failure(env.failure_path, reason)
        log.error("%s failed: %s", what, reason)
        return exc.exit_code
    except Exception as exc:
        reason = failure_reason(exc)
        write_failure(env.failure_path, reason)
        log.exception("%s failed with an unexpected error: %s", what, reason)
        return 1
    finally:
        stop_loader_workers()
        stop.uninstall()
