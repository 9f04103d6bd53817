"""The report's figures, drawn with matplotlib (no display: the Agg backend) as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: jobs and CI have no display

import matplotlib.pyplot as plt
import numpy as np

from dogbreed.report.data import EpochSeries, StepSeries, StepSplit, SystemSeries

DPI = 110
TRAIN, VALID = "#1f77b4", "#d62728"


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def step_curves(steps: StepSeries) -> bytes:
    """Training loss and accuracy of every step (the batch's), as the smdebug trial recorded them."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 3.6))
    loss_ax.plot(steps.steps, steps.loss, color=TRAIN, lw=1)
    acc_ax.plot(steps.steps, steps.accuracy, color=TRAIN, lw=1)
    for ax, name in ((loss_ax, "train loss per step"), (acc_ax, "train accuracy per step")):
        ax.set_xlabel("training step")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    acc_ax.set_ylim(-0.02, 1.02)
    return to_png(fig)


def epoch_curves(epochs: EpochSeries, best_epoch: int | None) -> bytes:
    """Train and valid loss and accuracy per epoch; the best epoch (the model's weights) marked."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 3.6))
    loss_ax.plot(epochs.epochs, epochs.train_loss, "o-", color=TRAIN, label="train")
    loss_ax.plot(epochs.epochs, epochs.valid_loss, "s-", color=VALID, label="valid")
    acc_ax.plot(epochs.epochs, epochs.train_accuracy, "o-", color=TRAIN, label="train")
    acc_ax.plot(epochs.epochs, epochs.valid_accuracy, "s-", color=VALID, label="valid")
    for ax, name in ((loss_ax, "loss per epoch"), (acc_ax, "accuracy per epoch")):
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    acc_ax.set_ylim(-0.02, 1.02)
    return to_png(fig)


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> bytes:
    """A heatmap of row-normalised counts; labels shrink with the number of classes (133 stay legible)."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(classes)
    side = min(max(4.5, 0.14 * n + 2), 24)
    font = 9 if n <= 20 else max(3, 9 - n // 20)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=font)
    ax.set_yticks(range(n), classes, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 12:
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(
                    j,
                    i,
                    str(int(value)),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return to_png(fig)


def system_utilisation(system: SystemSeries) -> bytes:
    """CPU per core, host memory, disk and network over the job's time (GPU when there was one)."""
    panels = 4 if system.gpu_utilisation else 3
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.2 * panels), sharex=True)
    t = system.seconds
    cores = np.asarray(system.cpu_per_core).T if system.cpu_per_core else np.zeros((0, len(t)))
    for index, core in enumerate(cores):
        axes[0].plot(t, core, lw=0.8, alpha=0.7, label=f"cpu{index}")
    axes[0].set_ylabel("CPU %")
    axes[0].set_ylim(0, 105)
    if len(cores) <= 8:
        axes[0].legend(fontsize=7, ncol=8, loc="upper right")
    axes[1].plot(t, system.memory_percent, color="#9467bd")
    axes[1].set_ylabel("memory %")
    axes[1].set_ylim(0, 105)
    axes[2].plot(t, np.asarray(system.disk_read) / 1e6, label="disk read")
    axes[2].plot(t, np.asarray(system.disk_write) / 1e6, label="disk write")
    axes[2].plot(t, np.asarray(system.net_recv) / 1e6, label="net recv", ls="--")
    axes[2].plot(t, np.asarray(system.net_sent) / 1e6, label="net sent", ls="--")
    axes[2].set_ylabel("MB/s")
    axes[2].legend(fontsize=7, ncol=4, loc="upper right")
    if system.gpu_utilisation:
        axes[3].plot(t, system.gpu_utilisation, label="GPU %", color="#2ca02c")
        axes[3].plot(t, system.gpu_memory_percent, label="GPU memory %", color="#8c564b")
        axes[3].set_ylabel("GPU %")
        axes[3].set_ylim(0, 105)
        axes[3].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("seconds since the job started")
    for ax in axes:
        ax.grid(alpha=0.3)
    return to_png(fig)


def step_split(split: StepSplit) -> bytes:
    """Each training step's time, stacked: waiting for data, forward/backward, optimizer."""
    fig, ax = plt.subplots(figsize=(11, 3.2))
    ax.stackplot(
        split.steps,
        split.data_seconds,
        split.forward_backward_seconds,
        split.optimizer_seconds,
        labels=["waiting for data", "forward/backward", "optimizer"],
        colors=["#ff7f0e", "#1f77b4", "#2ca02c"],
        alpha=0.85,
    )
    ax.set_xlabel("training step")
    ax.set_ylabel("seconds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return to_png(fig)


def search_trials(trials: Sequence, objective: str) -> bytes:
    """Left: each trial's objective against its lr (log scale), coloured by batch size; pruned
    trials hollow at their last epoch's value. Right: every trial's valid accuracy per epoch."""
    fig, (scatter_ax, curve_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    sizes = sorted({t.params.get("batch_size") for t in trials if t.params.get("batch_size") is not None})
    colours = {size: plt.cm.viridis(i / max(1, len(sizes) - 1)) for i, size in enumerate(sizes)}
    for trial in trials:
        last = trial.history[-1]["valid_accuracy"] if trial.history else None
        value = trial.value if trial.value is not None else last
        if value is None or "lr" not in trial.params:
            continue
        colour = colours.get(trial.params.get("batch_size"), TRAIN)
        hollow = trial.state != "COMPLETE"
        scatter_ax.scatter(trial.params["lr"], value, s=36, edgecolors=colour, facecolors="none" if hollow else colour)
    for size, colour in colours.items():
        scatter_ax.scatter([], [], color=colour, label=f"batch_size={size}")
    scatter_ax.set_xscale("log")
    scatter_ax.set_xlabel("lr")
    scatter_ax.set_ylabel(objective)
    scatter_ax.set_title(f"{objective} by trial (hollow: pruned)", fontsize=10)
    if colours:
        scatter_ax.legend(fontsize=8)
    for trial in trials:
        if trial.history:
            epochs = [h["epoch"] for h in trial.history]
            accuracy = [h["valid_accuracy"] for h in trial.history]
            curve_ax.plot(
                epochs,
                accuracy,
                "-",
                lw=1,
                alpha=0.8 if trial.state == "COMPLETE" else 0.35,
                color=VALID if trial.state == "COMPLETE" else "grey",
            )
    curve_ax.set_xlabel("epoch")
    curve_ax.set_title("valid accuracy per epoch (grey: pruned)", fontsize=10)
    curve_ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in (scatter_ax, curve_ax):
        ax.grid(alpha=0.3)
    return to_png(fig)
