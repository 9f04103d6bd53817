"""The training job's stages, which :mod:`.job` (the entry point) and :mod:`dogbreed.tune` (whose trials
are the job's epochs on cached features) both run. In the order a job runs them:

1. :func:`load_data` -> :class:`Data`: every split scanned and checked (:mod:`.data_check`), with its loaders.
2. :func:`build_learner` -> :class:`~.loop.Learner`: the pretrained network with a new head (or an earlier
   model's, from the ``model`` channel), and what trains it.
3. :func:`use_cached_features` (features on) -> :class:`CachedFeatures`: the frozen trunk's output, once per
   image; a new :class:`Data` whose loaders read it and a new learner that trains the head alone
   (:func:`feature_data`, :func:`head_learner`).
4. :func:`restore` -> :class:`~.checkpoints.TrainingState`: a stopped job's progress, or a fresh start.
5. :func:`observe` -> the learner with the smdebug trial and the profiler (``debug``/``profile`` on).
6. :func:`train_epochs`: the epochs, with early stopping.
7. :func:`finish`: :func:`test_best` -> :class:`Tested`, :func:`export` -> :class:`Exported`,
   :func:`add_int8` (or :func:`drop_int8`) -> :class:`FinalFigures`, then :func:`write_outputs`.
8. :func:`write_job_report`: ``report.html``.

Each stage returns a frozen value that the next takes, and none rewrites what an earlier one built.
What changes as the job goes is the training state itself: the modules' weights and the optimizer's
state, the :class:`~.checkpoints.TrainingState` that the epochs advance and the checkpoints save, and
each split's unreadable images.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dogbreed.architectures import Architecture, architecture
from dogbreed.artifacts import INT8_ONNX_FILE, ModelMetadata
from dogbreed.images import ImageDecodeError, open_image
from dogbreed.job_outputs import (
    EPOCH_SCALAR_PREFIX,
    EPOCH_SCALARS,
    FEATURES_DIR,
    PROFILE_DIR,
    TRIAL_DIR,
    DataCheck,
)
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
from dogbreed.training.config import JobPaths, TrainConfig
from dogbreed.training.data import (
    BatchLoader,
    EvalTransform,
    Normalize,
    Split,
    make_loader,
    scan_split,
    train_transform,
)
from dogbreed.training.data_check import balanced_class_weights, check_data, enforce_leakage, log_data_check
from dogbreed.training.debugger import NoHook, create_hook
from dogbreed.training.distributed import SINGLE, Distributed
from dogbreed.training.environment import TrainingEnvironment
from dogbreed.training.explanations import Explainer, write_explanations
from dogbreed.training.export import export_model_dir
from dogbreed.training.failure import ConfigError
from dogbreed.training.feature_cache import (
    FeatureLoader,
    FeatureStore,
    SplitFeatures,
    extract,
    feature_key,
    mark_unreadable,
    trunk_checksum,
)
from dogbreed.training.incremental import check_fits, continue_from, find_previous_model
from dogbreed.training.loop import (
    Evaluation,
    GracefulStop,
    Learner,
    PassTotals,
    Predictions,
    StopRequested,
    evaluate,
    train_pass,
)
from dogbreed.training.metrics import EpochMetrics, write_confusion_csvs, write_metrics_json
from dogbreed.training.model import build_model, head_of, trainable_parameters
from dogbreed.training.profiler import JobProfiler

log = logging.getLogger("dogbreed.training")

ONNX_CHECK_IMAGES = 8


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators, so that what draws from them (the new
    layer's initial weights among others) repeats with ``seed``; the tuner's trials seed the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """The ``device`` hyperparameter's device (``auto``: CUDA when there is one)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The ``optimizer`` hyperparameter's optimizer over ``params``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def make_criterion(config: TrainConfig, data: Data, device: torch.device) -> nn.CrossEntropyLoss:
    """The cross-entropy loss; ``class_weights=balanced`` weighs it by the train split's counts, as the data
    check saw them (all of the split, whichever share of it this process trains on)."""
    balanced = config.class_weights == "balanced"
    weights = balanced_class_weights(data.check.counts[data.train.name], data.classes) if balanced else None
    return nn.CrossEntropyLoss(
        weight=torch.tensor(weights, dtype=torch.float32, device=device) if weights is not None else None,
        label_smoothing=config.label_smoothing,
    )


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The ``lr_scheduler`` hyperparameter's schedule, stepped once per epoch (None: a constant lr)."""
    if config.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.lr_scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_size, gamma=config.lr_gamma)
    return None


@dataclass(frozen=True)
class FeatureSource:
    """Where one split's cached features came from (``metrics.json``'s ``features``)."""

    views: int
    source: str  # "cache", or the file they were saved to
    key: str  # the first 16 hex digits of their FeatureKey's digest
    seconds: float

    def to_dict(self) -> dict[str, int | str | float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Data:
    """The splits, their loaders and what the model needs to know of them."""

    train: Split
    valid: Split
    test: Split | None
    train_loader: BatchLoader
    valid_loader: BatchLoader
    test_loader: BatchLoader | None
    classes: list[str]
    preprocessing: Preprocessing
    check: DataCheck  # the data check before the first epoch, with the loss's class weights
    features: Mapping[str, FeatureSource] = field(default_factory=dict)  # split name -> its cached features

    @property
    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.valid, self.test) if s is not None]


# Stage 1: data. Every split is checked before any weights are loaded.
def load_data(config: TrainConfig, paths: JobPaths, device: torch.device, distributed: Distributed = SINGLE) -> Data:
    """Scan the splits (failing on a missing or malformed one) and make their loaders (this process's slices)."""
    train = scan_split("train", paths.train, label_attribute=config.label_attribute)
    valid = scan_split("valid", paths.valid, train.class_dirs, config.label_attribute)
    test = None
    if paths.test.is_dir():
        test = scan_split("test", paths.test, train.class_dirs, config.label_attribute)
    else:
        log.info("no test channel at %s: test metrics are skipped", paths.test)
    splits = [s for s in (train, valid, test) if s is not None]
    for split in splits:
        split.check_unreadable(config.max_unreadable_fraction)
    classes = train.classes
    # Every process checks the whole splits (not its shard): the same weights and verdict on each.
    check = check_data(splits, classes, config.image_size, balanced=config.class_weights == "balanced")
    if distributed.is_main:
        log_data_check(check)
        check.write(paths.output_data_dir)
    enforce_leakage(check, config.on_leakage)

    spec = architecture(config.arch)  # its ImageNet weights expect their own normalisation
    preprocessing = Preprocessing(
        resize_size=config.resize_size, crop_size=config.image_size, mean=spec.mean, std=spec.std
    )
    eval_transform = EvalTransform(preprocessing)

    def loader(split: Split, transform: Callable, shuffle: bool) -> BatchLoader:
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
        classes=train.classes,
        preprocessing=preprocessing,
        check=check,
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
    """The network with pretrained weights and a new head (or, given a ``model`` channel, the earlier
    model's network and head, :mod:`.incremental`), its loss, optimizer, schedule and scaler."""
    amp = config.amp and device.type == "cuda"
    if config.amp and not amp:
        log.warning("amp=true needs CUDA; training in float32 on %s", device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log.info("device: %s%s", device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")

    previous = find_previous_model(paths.previous_model)
    if previous is not None:  # incremental training: the earlier model's weights, not ImageNet's
        check_fits(previous, config.arch, config.image_size)
        if config.pretrained != "imagenet" or paths.pretrained.is_dir():
            log.warning(
                "a model channel is given: pretrained=%s and the pretrained channel are not used", config.pretrained
            )
        model = continue_from(previous, data.classes, config.freeze)
    else:
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
        criterion=make_criterion(config, data, device),
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


def head_learner(
    config: TrainConfig, data: Data, network: nn.Module, arch: Architecture, device: torch.device, amp: bool
) -> Learner:
    """A learner that trains ``network``'s head alone, on cached trunk features (already normalised)."""
    head = head_of(network, arch)
    optimizer = make_optimizer(config, head.parameters())
    return Learner(
        trained=head,
        full_network=network,
        normalize=nn.Identity(),
        criterion=make_criterion(config, data, device),
        optimizer=optimizer,
        scheduler=make_scheduler(config, optimizer),
        scaler=torch.amp.GradScaler(device.type, enabled=amp),
        device=device,
        amp=amp,
        arch=arch,
        freeze="none",
        hook=NoHook(),
        profiler=JobProfiler.off(device),
    )


def feature_data(config: TrainConfig, data: Data, features: Mapping[str, SplitFeatures], device: torch.device) -> Data:
    """``data`` with loaders over each split's cached features, in the image loaders' order and seeds."""

    def loader(name: str) -> FeatureLoader:
        return FeatureLoader(
            features[name], config.batch_size, shuffle=name == "train", seed=config.seed, device=device
        )

    return dataclasses.replace(
        data,
        train_loader=loader("train"),
        valid_loader=loader("valid"),
        test_loader=loader("test") if "test" in features else None,
    )


@dataclass(frozen=True)
class CachedFeatures:
    """The job switched onto cached trunk features: its data and learner, and each split's features."""

    data: Data
    learner: Learner
    features: Mapping[str, SplitFeatures]


# Stage 3 (features on): the frozen trunk runs once per image; the passes then train the head alone.
def use_cached_features(
    config: TrainConfig, paths: JobPaths, data: Data, learner: Learner, stop: GracefulStop
) -> CachedFeatures:
    """Each split's cached trunk features (read, or computed and saved), and the data and learner that
    train on them in place of the images.

    The loaders keep the image loaders' order and seeds, so training the head on them is
    training the whole network with a trunk that does not change, minus the trunk's cost.
    """
    features: dict[str, SplitFeatures] = {}
    sources: dict[str, FeatureSource] = {}
    store = FeatureStore(paths.output_data_dir / FEATURES_DIR, paths.features)
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
        sources[split.name] = FeatureSource(key.views, source, key.digest()[:16], round(time.perf_counter() - start, 3))
    if config.augment and config.feature_views == 1:
        log.warning(
            "features with augment=true and feature_views=1: every epoch sees the same random crop "
            "of each image; raise feature_views, or set augment=false"
        )
    return CachedFeatures(
        data=dataclasses.replace(feature_data(config, data, features, learner.device), features=sources),
        learner=head_learner(config, data, learner.full_network, learner.arch, learner.device, learner.amp),
        features=features,
    )


def job_identity(config: TrainConfig, data: Data) -> JobIdentity:
    """What a checkpoint must share with this job to resume it."""
    return JobIdentity(
        config.arch,
        tuple(data.train.class_dirs),
        config.freeze,
        config.optimizer,
        config.lr_scheduler,
        config.use_features,
    )


# Stage 4: restore a stopped job's progress (managed spot training, a stopped job).
def restore(config: TrainConfig, paths: JobPaths, data: Data, learner: Learner) -> TrainingState:
    """The checkpoint's state (the learner's weights and optimizer restored with it), or a fresh state.

    The state is the job's progress, which :func:`train_epochs` advances and the checkpoints save.
    """
    identity = job_identity(config, data)
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


# Stage 5 (main process): what watches the epochs.
def observe(
    config: TrainConfig,
    paths: JobPaths,
    env: TrainingEnvironment,
    learner: Learner,
    state: TrainingState,
) -> Learner:
    """``learner`` with the smdebug trial and the profile (``debug``/``profile`` on); a resumed job
    continues both."""
    resumed = bool(state.epoch or state.partial)
    trial_dir = local_trial_dir(config, paths)
    profile_dir = paths.output_data_dir / PROFILE_DIR
    if not resumed:  # this job's own outputs from an earlier run on the same folders
        for stale in ([] if config.smdebug_dir else [trial_dir]) + [profile_dir]:
            shutil.rmtree(stale, ignore_errors=True)
    hook, profiler = learner.hook, learner.profiler
    if config.debug:
        hook = create_hook(
            env.debughook_config_path,
            str(trial_dir),
            learner.trained,
            learner.criterion,
            resume_steps=state.debugger_steps if resumed else None,
            tensorboard_dir=str(env.tensorboard_dir / "scalars"),
        )
    if config.profile:
        profiler = JobProfiler(
            profile_dir, env.tensorboard_dir / "profiler", learner.device, config.num_workers, config.batch_size
        ).start()
    return dataclasses.replace(learner, hook=hook, profiler=profiler)


def local_trial_dir(config: TrainConfig, paths: JobPaths) -> Path:
    """Where the job's own smdebug trial goes: ``smdebug_dir``, else ``debug-output`` beside metrics.json."""
    return Path(config.smdebug_dir) if config.smdebug_dir else paths.output_data_dir / TRIAL_DIR


# Stage 6: the epochs, with early stopping.
def train_epochs(
    config: TrainConfig,
    paths: JobPaths,
    data: Data,
    learner: Learner,
    state: TrainingState,
    stop: GracefulStop,
    after_epoch: Callable[[EpochMetrics], None] | None = None,
) -> None:
    """Train until ``epochs`` or early stopping, advancing ``state`` (the checkpointed progress) epoch by
    epoch; raises :class:`StopRequested` after checkpointing.

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
            best = f"best {state.best.valid_loss:.4f} at epoch {state.best.epoch}" if state.best else "none finite yet"
            log.info("early stopping: valid_loss has not improved for %d epochs (%s)", state.bad_epochs, best)
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
    """Save the state, the learner's and the unreadable images (the main process)."""
    if not learner.distributed.is_main:  # every process holds the same weights; one writes them
        return
    state.unreadable = {s.name: dict(s.unreadable) for s in data.splits}
    state.debugger_steps = learner.hook.steps()
    save_checkpoint(paths.checkpoint_dir, state, learner)


@dataclass(frozen=True)
class FinalFigures:
    """The job's final figures: ``metrics.json``'s ``final`` and ``model.json``'s ``metrics``."""

    best_epoch: int
    epochs_trained: int
    valid_loss: float
    valid_accuracy: float
    test_loss: float | None = None  # None: no test split
    test_accuracy: float | None = None
    onnx_max_abs_diff: float | None = None  # None: not exported (yet)
    fp32_valid_accuracy: float | None = None  # None: int8=false
    int8_valid_accuracy: float | None = None

    def to_dict(self) -> dict[str, float]:
        """The figures the job has, in this order."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Tested:
    """The best epoch's weights tested: the figures so far, each split's confusion matrix and
    (with a test split) this process's test predictions, which the explanations pick from."""

    figures: FinalFigures
    matrices: Mapping[str, list[list[int]]]  # split name -> confusion matrix
    test_predictions: Predictions | None


@dataclass(frozen=True)
class Exported:
    """The model directory as written: its metadata (``model.json``) and the figures with the export's."""

    metadata: ModelMetadata
    figures: FinalFigures


# Stage 7: the best epoch's weights are the model; test, export, report.
def finish(
    config: TrainConfig,
    paths: JobPaths,
    data: Data,
    learner: Learner,
    state: TrainingState,
    best: BestEpoch,
    stop: GracefulStop,
) -> None:
    """Test the best weights, then (the main process) write the model directory and the job's outputs."""
    tested = test_best(config, data, learner, state, best, stop)
    if not learner.distributed.is_main:
        return
    exported = export(config, paths, data, learner, tested.figures)
    figures = add_int8(config, paths, data, exported, stop) if config.int8 else drop_int8(paths, exported)
    write_outputs(config, paths, data, learner, state, tested, figures)
    log.info("model written to %s, reports to %s", paths.model_dir, paths.output_data_dir)


def test_best(
    config: TrainConfig, data: Data, learner: Learner, state: TrainingState, best: BestEpoch, stop: GracefulStop
) -> Tested:
    """Load the best epoch's weights and evaluate them on the test split (with one)."""
    learner.trained.load_state_dict(best.weights)
    figures = FinalFigures(
        best_epoch=best.epoch,
        epochs_trained=state.epoch,
        valid_loss=best.valid_loss,
        valid_accuracy=state.history[best.epoch - 1].valid_accuracy,
    )
    if data.test is None or data.test_loader is None:
        return Tested(figures, {"valid": best.valid_matrix}, None)
    # A SIGTERM here leaves the last epoch's checkpoint, from which the test is redone.
    test = evaluate(learner, data.test_loader, data.test, stop, len(data.classes), state.epoch, keep_predictions=True)
    data.test.check_unreadable(config.max_unreadable_fraction)
    log.info(format_metrics({"test_loss": test.loss, "test_accuracy": test.accuracy}))
    return Tested(
        dataclasses.replace(figures, test_loss=test.loss, test_accuracy=test.accuracy),
        {"valid": best.valid_matrix, "test": test.matrix},
        test.predictions,
    )


def export(config: TrainConfig, paths: JobPaths, data: Data, learner: Learner, figures: FinalFigures) -> Exported:
    """The model directory: ``model.pt``, ``model.onnx`` (checked against PyTorch), ``head.npz``, ``model.json``."""
    metadata = ModelMetadata(
        arch=config.arch,
        classes=data.classes,
        preprocessing=data.preprocessing,
        class_dirs=data.train.class_dirs,
        metrics=figures.to_dict(),
        hyperparameters=config.to_dict(),
    )
    sample = sample_batch(data.valid, data.preprocessing)
    written = export_model_dir(learner.full_network, metadata, paths.model_dir, sample)
    return Exported(written.metadata, dataclasses.replace(figures, onnx_max_abs_diff=written.onnx_max_abs_diff))


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


def add_int8(config: TrainConfig, paths: JobPaths, data: Data, exported: Exported, stop: GracefulStop) -> FinalFigures:
    """``model.int8.onnx`` beside ``model.onnx``; the final figures with both models' valid top-1, which
    ``model.json`` (rewritten with the int8 model) and a metric line also get."""
    # ONNX Runtime's quantizer imports onnx, which int8=false jobs never need.
    from dogbreed.training.quantize import export_int8  # noqa: PLC0415 - onnx only for int8=true jobs

    start = time.perf_counter()
    readable = sum(1 for path, _ in data.train.samples if str(path) not in data.train.unreadable)
    if config.int8_calibration_images > readable:
        log.info(
            "int8_calibration_images=%d, but the train split has %d readable images: calibrating on those",
            config.int8_calibration_images,
            readable,
        )
    int8 = export_int8(
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
    figures = dataclasses.replace(
        exported.figures, fp32_valid_accuracy=int8.fp32_valid_top1, int8_valid_accuracy=int8.int8_valid_top1
    )
    log.info(format_metrics({"fp32_valid_accuracy": int8.fp32_valid_top1, "int8_valid_accuracy": int8.int8_valid_top1}))
    dataclasses.replace(exported.metadata, int8=int8, metrics=figures.to_dict()).save(paths.model_dir)
    log.info("int8 export: %.1f s", time.perf_counter() - start)
    return figures


def drop_int8(paths: JobPaths, exported: Exported) -> FinalFigures:
    """int8=false: remove an earlier run's ``model.int8.onnx`` (on the same folders); the figures as exported."""
    (paths.model_dir / INT8_ONNX_FILE).unlink(missing_ok=True)
    return exported.figures


def write_outputs(
    config: TrainConfig,
    paths: JobPaths,
    data: Data,
    learner: Learner,
    state: TrainingState,
    tested: Tested,
    figures: FinalFigures,
) -> None:
    """Beside ``metrics.json``: each split's confusion matrix CSVs, the class activation maps of a few test
    photos (from this process's share of the test split), and ``metrics.json`` itself."""
    for split_name, matrix in tested.matrices.items():
        write_confusion_csvs(paths.output_data_dir, split_name, matrix, data.classes)
    explainer = Explainer(learner.full_network, learner.arch, data.classes, data.preprocessing, learner.device)
    write_explanations(paths.output_data_dir, explainer, data.test, tested.test_predictions)
    write_metrics(config, paths, data, state, figures)


def write_metrics(
    config: TrainConfig, paths: JobPaths, data: Data, state: TrainingState | None, final: FinalFigures | None
) -> None:
    """``metrics.json``: the final figures, every epoch's, the unreadable files, classes, hyperparameters
    and, with features on, where each split's features came from (``state`` None: no epoch was run;
    ``final`` None: no model)."""
    write_metrics_json(
        paths.output_data_dir,
        {
            "final": final.to_dict() if final else {},
            "history": [h.to_dict() for h in state.history] if state else [],
            "unreadable": {s.name: s.unreadable for s in data.splits},
            "classes": data.classes,
            "hyperparameters": config.to_dict(),
            **({"features": {k: v.to_dict() for k, v in data.features.items()}} if data.features else {}),
        },
    )


# Stage 8 (main process): the report.
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
