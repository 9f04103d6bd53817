"""The data check before the first epoch: counts per class and split, images smaller than the crop,
grey and CMYK images, exact duplicates within a split and across splits (leakage), and the loss's
class weights (``class_weights=balanced``).

It reads the samples the data stage listed (:attr:`Split.samples`), so it checks whatever listed
them, and opens each image's header only (PIL's ``Image.open`` without ``load``): the pixels are
never decoded, the bytes are read once to hash them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dogbreed.cpus import usable_cpus
from dogbreed.job_outputs import DataCheck, Leak
from dogbreed.training.data import Split
from dogbreed.training.failure import TrainingError

log = logging.getLogger("dogbreed.training")

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
LOGGED_FILES = 10  # files named in one log line; the JSON has them all


@dataclass(frozen=True)
class _FileFacts:
    digest: bytes
    mode: str
    size: tuple[int, int]
    grey_palette: bool


def _facts(path: Path) -> _FileFacts:
    # sha256 (with the CPU's SHA extensions, twice blake2b's speed here); hashlib releases the GIL on
    # big buffers, so the threads overlap reading and hashing.
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").digest()
    with Image.open(path) as image:  # the header only
        palette = image.palette.tobytes() if image.mode in ("P", "PA") and image.palette else b""
        grey_palette = bool(palette) and all(
            palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3)
        )
        return _FileFacts(digest, image.mode, image.size, grey_palette)


def _name(split: Split, path: Path) -> str:
    """``<split>/<path under its folder>`` (the path itself when it lies elsewhere)."""
    try:
        return f"{split.name}/{path.relative_to(split.root)}"
    except ValueError:
        return f"{split.name}/{path}"


def balanced_class_weights(counts: Sequence[int], classes: Sequence[str]) -> tuple[float, ...]:
    """``N / (C * n_c)`` per class (sklearn's ``balanced``); a class without training images is an error."""
    empty = [name for name, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise TrainingError(
            f"class_weights=balanced: no readable training images for {len(empty)} classes: {', '.join(empty[:10])}"
        )
    total = sum(counts)
    return tuple(total / (len(counts) * n) for n in counts)


def check_data(splits: Sequence[Split], classes: Sequence[str], image_size: int, balanced: bool) -> DataCheck:
    """Check every listed image of ``splits`` (train first); with ``balanced``, the train split's class weights."""
    start = time.perf_counter()
    files = [(split, path) for split in splits for path, _ in split.samples]
    with ThreadPoolExecutor(max_workers=min(8, 2 * usable_cpus())) as pool:
        facts = list(pool.map(lambda item: _facts(item[1]), files))
    small, grey, cmyk = [], [], []
    by_digest: dict[bytes, list[tuple[Split, str]]] = defaultdict(list)
    for (split, path), fact in zip(files, facts, strict=True):
        name = _name(split, path)
        by_digest[fact.digest].append((split, name))
        if min(fact.size) < image_size:
            small.append(name)
        if fact.mode in GREY_MODES or fact.grey_palette:
            grey.append(name)
        elif fact.mode == "CMYK":
            cmyk.append(name)
    duplicates, leaks = [], []
    for same in by_digest.values():
        for split in splits:
            group = tuple(name for s, name in same if s is split)
            if len(group) > 1:
                duplicates.append(group)
        # Each file of a later split pairs with the first copy in the earliest split that holds one.
        first_split, first = same[0]
        leaks += [Leak(first_split.name, first, s.name, name) for s, name in same[1:] if s is not first_split]
    counts = {s.name: tuple(sum(1 for _, c in s.samples if c == i) for i in range(len(classes))) for s in splits}
    return DataCheck(
        classes=tuple(classes),
        counts=counts,
        unreadable={s.name: len(s.unreadable) for s in splits},
        image_size=image_size,
        small=tuple(small),
        grey=tuple(grey),
        cmyk=tuple(cmyk),
        duplicates=tuple(duplicates),
        leaks=tuple(leaks),
        class_weights=balanced_class_weights(counts[splits[0].name], classes) if balanced else None,
        seconds=time.perf_counter() - start,
    )


def _some(names: Sequence[str]) -> str:
    more = f" and {len(names) - LOGGED_FILES} more" if len(names) > LOGGED_FILES else ""
    return ", ".join(names[:LOGGED_FILES]) + more


def log_data_check(check: DataCheck) -> None:
    """A compact summary in the log, and a warning per finding naming (at most ten of) its files."""
    counts = "; ".join(f"{split} {sum(n)} ({'/'.join(map(str, n))})" for split, n in check.counts.items())
    log.info("data check (%.1f s): images per class, %s: %s", check.seconds, "/".join(check.classes), counts)
    if check.class_weights is not None:
        weights = ", ".join(f"{c} {w:.3f}" for c, w in zip(check.classes, check.class_weights, strict=True))
        log.info("class_weights=balanced: %s", weights)
    findings = [
        (check.small, f"smaller than the {check.image_size}-pixel crop (upscaled)"),
        (check.grey, "greyscale (trained as RGB with three equal channels)"),
        (check.cmyk, "CMYK (converted to RGB)"),
    ]
    for names, what in findings:
        if names:
            log.warning("data check: %d images %s: %s", len(names), what, _some(names))
    if check.duplicates:
        groups = [" = ".join(g) for g in check.duplicates]
        log.warning("data check: %d groups of identical files within a split: %s", len(groups), _some(groups))
    if check.leaks:
        log.warning("data check: leakage: %s", leakage_line(check))


def leakage_line(check: DataCheck) -> str:
    """The leaks in one line: how many per pair of splits, and (at most ten of) the files."""
    pairs: dict[str, int] = defaultdict(int)
    for leak in check.leaks:
        pairs[leak.pair] += 1
    per_pair = ", ".join(f"{n} in {pair}" for pair, n in pairs.items())
    files = _some([f"{leak.first} = {leak.second}" for leak in check.leaks])
    return f"{len(check.leaks)} files are in two splits ({per_pair}): {files}"


def enforce_leakage(check: DataCheck, on_leakage: str) -> None:
    """``on_leakage=fail``: raise :class:`TrainingError` when a file is in two splits."""
    if check.leaks and on_leakage == "fail":
        raise TrainingError(f"on_leakage=fail: {leakage_line(check)}")
