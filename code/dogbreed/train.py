"""The training job: fine-tune an ImageNet ResNet on a folder-per-class image set.

SageMaker runs ``python -m dogbreed.train`` with no arguments; everything then comes
from ``/opt/ml`` (see :mod:`dogbreed.environment`). ``--help`` lists every flag.
Exit status: 0 done, 1 failed (reason in ``/opt/ml/output/failure``), 2 bad
hyperparameter or flag, 143 stopped by SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dogbreed.artifacts import ModelMetadata
from dogbreed.checkpoints import GracefulStop, StopRequested, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dogbreed.config import JobPaths, TrainConfig, load_config
from dogbreed.data import EvalTransform, Split, class_name, make_loader, scan_split, train_transform
from dogbreed.debugger import create_hook
from dogbreed.environment import TrainingEnvironment
from dogbreed.export import export_model_dir
from dogbreed.images import ImageDecodeError, open_image
from dogbreed.failure import EXIT_SIGTERM, ConfigError, TrainingError, failure_reason, write_failure
from dogbreed.metrics import confusion_matrix, format_metrics, write_metrics_json, write_reports
from dogbreed.model import build_model, set_train_mode, trainable_parameters
from dogbreed.preprocessing import Preprocessing

log = logging.getLogger("dogbreed.train")

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
        handlers=[_StdoutHandler()], level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


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


def note_unreadable(split: Split, bad: list[tuple[int, str]]) -> None:
    """Count images that failed to decode in the loader; each is logged once."""
    for index, reason in bad:
        path = str(split.samples[index][0])
        if split.add_unreadable(path, reason):
            log.warning("%s: skipping unreadable image %s: %s", split.name, path, reason)


def progress(loader, desc: str):
    # A bar for people at a terminal; CloudWatch gets the epoch lines only.
    return tqdm(loader, desc=desc, leave=False, disable=not sys.stderr.isatty())


def forward_batches(model, loader, split, criterion, device, stop, amp, desc):
    """Yield ``(labels, logits, loss)`` per batch: SIGTERM checked, unreadable images
    recorded, empty batches skipped, the forward pass under autocast when ``amp``."""
    for images, labels, bad in progress(loader, desc):
        stop.check()
        note_unreadable(split, bad)
        if not len(labels):
            continue
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
            loss = criterion(logits, labels)
        yield labels, logits, loss


def train_one_epoch(model, loader, split, criterion, optimizer, scaler, device, config, hook, stop, amp) -> dict:
    """One pass over the training set; returns loss, accuracy, images and seconds."""
    set_train_mode(model, config.freeze)
    hook.set_mode("train")
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, start = 0, time.perf_counter()
    for labels, logits, loss in forward_batches(model, loader, split, criterion, device, stop, amp, "train"):
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        # Summed on the device: no GPU sync per batch.
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
    stop.check()
    if not seen:
        raise TrainingError("the train split has no readable images")
    seconds = time.perf_counter() - start
    return {"loss": loss_sum.item() / seen, "accuracy": correct.item() / seen, "images": seen, "seconds": seconds}


@torch.no_grad()
def evaluate(model, loader, split, criterion, device, num_classes, hook, stop, amp) -> dict:
    """Loss, accuracy and confusion matrix of ``model`` on a split."""
    model.eval()
    hook.set_mode("eval")
    loss_sum = torch.zeros((), device=device)
    all_labels, all_preds = [], []
    for labels, logits, loss in forward_batches(model, loader, split, criterion, device, stop, amp, split.name):
        loss_sum += loss.float() * len(labels)
        all_labels.append(labels)
        all_preds.append(logits.argmax(1))
    if not all_labels:
        raise TrainingError(f"the {split.name} split has no readable images")
    labels, preds = torch.cat(all_labels).cpu(), torch.cat(all_preds).cpu()
    return {
        "loss": loss_sum.item() / len(labels),
        "accuracy": (labels == preds).float().mean().item(),
        "matrix": confusion_matrix(labels.tolist(), preds.tolist(), num_classes),
    }


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
    return torch.stack(tensors)


def run(config: TrainConfig, paths: JobPaths, env: TrainingEnvironment, stop: GracefulStop) -> int:
    """The job proper; raises :class:`TrainingError` on expected failures."""
    log.info("hyperparameters: %s", format_config(config))
    hosts = env.hosts
    if len(hosts) > 1:
        log.warning("%d hosts: multi-host training is not implemented; %s trains alone", len(hosts), env.current_host)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    amp = config.amp and device.type == "cuda"
    if config.amp and not amp:
        log.warning("amp=true needs CUDA; training in float32 on %s", device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log.info("device: %s%s", device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")

    # Data: every split is checked before any weights are loaded.
    train_split = scan_split("train", paths.train)
    valid_split = scan_split("valid", paths.valid, train_split.class_dirs)
    test_split = None
    if paths.test.is_dir():
        test_split = scan_split("test", paths.test, train_split.class_dirs)
    else:
        log.info("no test channel at %s: test metrics are skipped", paths.test)
    splits = [s for s in (train_split, valid_split, test_split) if s is not None]
    for split in splits:
        split.check_unreadable(config.max_unreadable_fraction)
    class_dirs = train_split.class_dirs
    classes = [class_name(d) for d in class_dirs]
    num_classes = len(classes)

    preprocessing = Preprocessing(resize_size=config.resize_size, crop_size=config.image_size)
    pin = device.type == "cuda"
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = make_loader(
        train_split, train_transform(preprocessing), config.batch_size, True, config.num_workers, pin, generator
    )
    eval_transform = EvalTransform(preprocessing)
    valid_loader = make_loader(valid_split, eval_transform, config.batch_size, False, config.num_workers, pin)

    # Model, loss, optimizer.
    channel = paths.pretrained if paths.pretrained.is_dir() else None
    model = build_model(config.arch, num_classes, config.pretrained, config.freeze, channel, env.torch_home)
    model.to(device)
    params = trainable_parameters(model)
    log.info(
        "%s: %d classes, %d of %d parameters trainable (freeze=%s)",
        config.arch, num_classes, sum(p.numel() for p in params), sum(p.numel() for p in model.parameters()),
        config.freeze,
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    optimizer = make_optimizer(config, params)
    scheduler = make_scheduler(config, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    # Resume state (managed spot training).
    expected = {
        "arch": config.arch, "class_dirs": class_dirs, "freeze": config.freeze,
        "optimizer": config.optimizer, "lr_scheduler": config.lr_scheduler,
    }
    state: dict[str, Any] = {
        **expected, "epoch": 0, "best_state": None, "best_valid_loss": math.inf, "best_epoch": 0,
        "best_valid_matrix": None, "bad_epochs": 0, "history": [],
    }
    checkpoint = load_checkpoint(paths.checkpoint_dir, expected)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        if scheduler is not None and checkpoint.get("scheduler_state"):
            scheduler.load_state_dict(checkpoint["scheduler_state"])
        scaler.load_state_dict(checkpoint["scaler_state"])
        set_rng_state(checkpoint["rng"])
        generator.set_state(checkpoint["loader_rng"])
        for key in ("epoch", "best_state", "best_valid_loss", "best_epoch", "best_valid_matrix", "bad_epochs", "history"):
            state[key] = checkpoint[key]
        log.info(
            "resuming from %s after epoch %d (best valid_loss %.4f at epoch %d)",
            paths.checkpoint_dir / "checkpoint.pt", state["epoch"], state["best_valid_loss"], state["best_epoch"],
        )

    def checkpoint_now() -> None:
        save_checkpoint(paths.checkpoint_dir, {
            **state,
            "model": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
            "scaler_state": scaler.state_dict(),
            "rng": rng_state(),
            "loader_rng": generator.get_state(),
            "config": config.to_dict(),
        })

    hook = create_hook(env.debughook_config_path, config.smdebug_dir, model, criterion)
    try:
        try:
            for epoch in range(state["epoch"] + 1, config.epochs + 1):
                if config.patience and state["bad_epochs"] >= config.patience:
                    break
                log.info("epoch %d/%d", epoch, config.epochs)
                start = time.perf_counter()
                train = train_one_epoch(
                    model, train_loader, train_split, criterion, optimizer, scaler, device, config, hook, stop, amp
                )
                valid = evaluate(model, valid_loader, valid_split, criterion, device, num_classes, hook, stop, amp)
                if scheduler is not None:
                    scheduler.step()
                for split in (train_split, valid_split):
                    split.check_unreadable(config.max_unreadable_fraction)
                metrics = {
                    "epoch": epoch,
                    "train_loss": train["loss"], "train_accuracy": train["accuracy"],
                    "valid_loss": valid["loss"], "valid_accuracy": valid["accuracy"],
                    "images_per_sec": train["images"] / train["seconds"],
                    "epoch_seconds": time.perf_counter() - start,
                }
                log.info(format_metrics(metrics))
                state["history"].append(metrics)
                state["epoch"] = epoch
                if valid["loss"] < state["best_valid_loss"]:
                    state.update(
                        best_valid_loss=valid["loss"], best_epoch=epoch, bad_epochs=0, best_valid_matrix=valid["matrix"],
                        best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                    )
                else:
                    state["bad_epochs"] += 1
                checkpoint_now()
                if config.patience and state["bad_epochs"] >= config.patience:
                    log.info(
                        "early stopping: valid_loss has not improved for %d epochs (best %.4f at epoch %d)",
                        state["bad_epochs"], state["best_valid_loss"], state["best_epoch"],
                    )
                    break
        except StopRequested:
            # The interrupted epoch is redone on resume, from the weights as they are now.
            checkpoint_now()
            log.warning(
                "SIGTERM: stopped during epoch %d; checkpoint saved to %s (resumes after epoch %d)",
                state["epoch"] + 1, paths.checkpoint_dir, state["epoch"],
            )
            return EXIT_SIGTERM

        # The best epoch's weights are the model.
        model.load_state_dict(state["best_state"])
        final: dict[str, Any] = {
            "best_epoch": state["best_epoch"],
            "epochs_trained": state["epoch"],
            "valid_loss": state["best_valid_loss"],
            "valid_accuracy": state["history"][state["best_epoch"] - 1]["valid_accuracy"],
        }
        reports = {"valid": state["best_valid_matrix"]}
        if test_split is not None:
            test_loader = make_loader(test_split, eval_transform, config.batch_size, False, config.num_workers, pin)
            test = evaluate(model, test_loader, test_split, criterion, device, num_classes, hook, stop, amp)
            test_split.check_unreadable(config.max_unreadable_fraction)
            final.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
            reports["test"] = test["matrix"]
            log.info(format_metrics({"test_loss": test["loss"], "test_accuracy": test["accuracy"]}))
    except StopRequested:
        log.warning("SIGTERM during the final evaluation; the checkpoint of epoch %d is kept", state["epoch"])
        return EXIT_SIGTERM
    finally:
        hook.close()

    # Artifacts.
    metadata = ModelMetadata(
        arch=config.arch, classes=classes, preprocessing=preprocessing, class_dirs=class_dirs,
        metrics=final, hyperparameters=config.to_dict(),
    )
    diff = export_model_dir(model, metadata, paths.model_dir, sample_batch(valid_split, preprocessing))
    final["onnx_max_abs_diff"] = diff
    for split_name, matrix in reports.items():
        write_reports(paths.output_data_dir, split_name, matrix, classes)
    write_metrics_json(paths.output_data_dir, {
        "final": final,
        "history": state["history"],
        "unreadable": {s.name: s.unreadable for s in splits},
        "classes": classes,
    })
    log.info("model written to %s, reports to %s", paths.model_dir, paths.output_data_dir)
    return 0


def format_config(config: TrainConfig) -> str:
    return " ".join(f"{k}={v}" for k, v in config.to_dict().items())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; returns the exit status. Failures write ``/opt/ml/output/failure`` first."""
    setup_logging()
    env = TrainingEnvironment.from_env()
    stop = GracefulStop().install()
    try:
        config, paths = load_config(argv, env)
        return run(config, paths, env, stop)
    except TrainingError as exc:
        reason = failure_reason(exc)
        write_failure(env.failure_path, reason)
        log.error("training failed: %s", reason)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - any crash must leave a failure reason
        reason = failure_reason(exc)
        write_failure(env.failure_path, reason)
        log.exception("training failed with an unexpected error: %s", reason)
        return 1
    finally:
        stop.uninstall()


if __name__ == "__main__":
    sys.exit(main())
