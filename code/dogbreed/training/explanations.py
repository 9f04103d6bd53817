"""The report's class activation maps: what the network looked at in a few test photos.

After the test evaluation the job picks (:func:`choose`) its worst mistakes and, for a
bounded set of classes, the most confident correct photo; runs the network on those once
more for the last feature map; and writes one overlay per map
(:func:`dogbreed.explain.overlay`) as a JPEG into ``explanations/`` beside
``metrics.json``, with ``index.json`` listing them. A mistake gets two overlays: the map
of the class it predicted and the map of its true class. The report shows them.

A few dozen photos at most: seconds, even on a CPU. Nothing here may fail the job.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from dogbreed.architectures import Architecture
from dogbreed.explain import Explanation, explain, overlay
from dogbreed.images import open_image
from dogbreed.job_outputs import CORRECT, EXPLANATIONS_DIR, MISTAKE, ClassMap, ExplainedPhoto, ExplanationsIndex
from dogbreed.preprocessing import Preprocessing
from dogbreed.training.data import EvalTransform, Normalize, Split
from dogbreed.training.loop import Predictions
from dogbreed.training.model import forward_with_feature_map, head_weights

log = logging.getLogger(__name__)

MAX_MISTAKES = 8
MAX_CLASSES = 12  # correct photos shown; with more classes, the ones with the lowest accuracy
OVERLAY_SIDE = 384
# A 384-pixel photo overlay is about 20 KB as JPEG and 150 KB as PNG; the report inlines them all.
JPEG_QUALITY = 85
BATCH = 16


@dataclass(frozen=True)
class Pick:
    """One photo to explain: a :data:`MISTAKE` or a :data:`CORRECT` answer of the test evaluation."""

    kind: str
    index: int  # the image's sample index in its split
    true: int
    predicted: int
    probability: float  # the evaluation's softmax probability of ``predicted``


@dataclass(frozen=True)
class Explainer:
    """The trained network and what it takes to run it on a photo."""

    network: nn.Module  # the whole network, its head included
    arch: Architecture
    classes: list[str]
    preprocessing: Preprocessing
    device: torch.device


def choose(predictions: Predictions, max_mistakes: int = MAX_MISTAKES, max_classes: int = MAX_CLASSES) -> list[Pick]:
    """The photos to explain, mistakes first.

    Mistakes: the ``max_mistakes`` most confident wrong answers (what a person debugging
    looks at first). Correct: each class's most confident correct photo, for the
    ``max_classes`` classes with the lowest accuracy that have one, lowest first: at 133
    classes, the right answers most worth checking (is the model right for the right
    reason where it is weakest?). Ties go to the earlier sample or class.
    """
    rows = [
        Pick(MISTAKE if t != p else CORRECT, i, t, p, q)
        for i, t, p, q in zip(
            predictions.indices.tolist(),
            predictions.labels.tolist(),
            predictions.predicted.tolist(),
            predictions.probability.tolist(),
            strict=True,
        )
    ]
    confident_first = sorted(rows, key=lambda r: (-r.probability, r.index))
    mistakes = [r for r in confident_first if r.kind == MISTAKE][:max_mistakes]
    best: dict[int, Pick] = {}
    for row in confident_first:
        if row.kind == CORRECT:
            best.setdefault(row.true, row)
    images, right = Counter(r.true for r in rows), Counter(r.true for r in rows if r.kind == CORRECT)
    weakest = sorted(best, key=lambda c: (right[c] / images[c], c))[:max_classes]
    return mistakes + [best[c] for c in weakest]


def run_network(explainer: Explainer, pixels: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (N, classes), feature maps (N, channels, h, w))`` in float32 of evaluation-transformed
    photos (uint8 pixels, as the job's loaders give them)."""
    normalize = Normalize.of(explainer.preprocessing)
    explainer.network.eval()
    probabilities, feature_maps = [], []
    with torch.inference_mode():
        for start in range(0, len(pixels), BATCH):
            batch = normalize(torch.stack(pixels[start : start + BATCH]).to(explainer.device))
            logits, feature_map = forward_with_feature_map(explainer.network, explainer.arch, batch)
            probabilities.append(logits.float().softmax(1).cpu())
            feature_maps.append(feature_map.float().cpu())
    return torch.cat(probabilities).numpy(), torch.cat(feature_maps).numpy()


def open_picks(explainer: Explainer, split: Split, picks: list[Pick]) -> list[tuple[Pick, Image.Image, torch.Tensor]]:
    """Each pick with its photo and the evaluation transform's pixels of it; a photo that no longer decodes
    (or transforms) is skipped with a warning."""
    transform, opened = EvalTransform(explainer.preprocessing), []
    for pick in picks:
        path = split.samples[pick.index][0]
        try:
            photo = open_image(path)
            opened.append((pick, photo, transform(photo)))
        except (OSError, ValueError) as exc:  # ImageDecodeError is a ValueError
            log.warning("explanations: skipping %s: %s", path, exc)
    return opened


def save_overlay(directory: Path, name: str, photo: Image.Image, explanation: Explanation) -> ClassMap:
    """Write one map's overlay as ``name``; its entry in the index."""
    overlay(photo, explanation, max_side=OVERLAY_SIDE).save(directory / name, "JPEG", quality=JPEG_QUALITY)
    return ClassMap(explanation.class_index, explanation.label, name, explanation.box, explanation.logit)


def render(directory: Path, explainer: Explainer, split: Split, picks: list[Pick]) -> list[ExplainedPhoto]:
    """Overlays of every pick that decodes, into ``directory``; the index's entries."""
    opened = open_picks(explainer, split, picks)
    if not opened:
        return []
    probabilities, feature_maps = run_network(explainer, [pixels for _, _, pixels in opened])
    head = head_weights(explainer.network, explainer.arch)
    entries: list[ExplainedPhoto] = []
    numbers: Counter[str] = Counter()
    for (pick, photo, _), probability, feature_map in zip(opened, probabilities, feature_maps, strict=True):
        numbers[pick.kind] += 1
        stem = f"{pick.kind}_{numbers[pick.kind]:02d}"
        # A mistake: the map of the wrong answer, then the map of the class it should have found.
        shown = [(pick.predicted, "predicted")] + ([(pick.true, "true")] if pick.kind == MISTAKE else [])
        maps = [
            save_overlay(
                directory,
                f"{stem}_{which}.jpg",
                photo,
                explain(feature_map, head, c, explainer.classes[c], explainer.preprocessing, photo.size),
            )
            for c, which in shown
        ]
        path = split.samples[pick.index][0]
        entries.append(
            ExplainedPhoto(
                kind=pick.kind,
                image=str(path.relative_to(split.root)) if path.is_relative_to(split.root) else path.name,
                true=pick.true,
                true_label=explainer.classes[pick.true],
                predicted=pick.predicted,
                predicted_label=explainer.classes[pick.predicted],
                probability=float(probability[pick.predicted]),
                true_probability=float(probability[pick.true]),
                maps=tuple(maps),
            )
        )
    return entries


def write_explanations(
    output_dir: Path, explainer: Explainer, split: Split | None, predictions: Predictions | None
) -> None:
    """``explanations/`` (overlays and ``index.json``) for the test split's picks; nothing without a
    test split. A failure costs a warning, never the job."""
    directory = Path(output_dir) / EXPLANATIONS_DIR
    shutil.rmtree(directory, ignore_errors=True)  # an earlier run's, on the same folders
    if split is None or predictions is None:
        return
    start = time.perf_counter()
    try:
        directory.mkdir(parents=True)
        picks = choose(predictions)
        entries = render(directory, explainer, split, picks)
        ExplanationsIndex(
            split=split.name,
            images=len(predictions.indices),
            classes_with_correct=len(set(predictions.labels[predictions.labels == predictions.predicted].tolist())),
            max_mistakes=MAX_MISTAKES,
            max_classes=MAX_CLASSES,
            photos=tuple(entries),
        ).write(directory)
    except Exception as exc:  # noqa: BLE001 - the model is what the job is for; these only illustrate it
        log.warning("explanations could not be written (%s: %s); the model is unaffected", type(exc).__name__, exc)
        shutil.rmtree(directory, ignore_errors=True)
        return
    log.info("explanations: %d test photos in %s (%.1f s)", len(entries), directory, time.perf_counter() - start)
