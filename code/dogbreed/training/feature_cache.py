"""Cached backbone features: with ``freeze=all`` the trunk never changes, so its output for
each image is computed once and the head (the network's own final linear layer) trains on the cache.

A cache file holds one split's features and the :class:`FeatureKey` they were computed
under: the architecture, a checksum of the trunk's weights, the preprocessing, every file
of the split (relative path, size and content hash) and the views (the evaluation
transform, or K augmented views and their seed). A cache is used only when its key
equals the job's; a cache of the same split under another key is reported, naming what
differs, and recomputed. Caches come from the job's own output folder (a rerun on the
same folders) or from the ``features`` channel (cache files, or a job's
``output.tar.gz``); the job writes what it computed to ``features/`` beside
``metrics.json``, so it ends up in its ``output.tar.gz``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from dogbreed.architectures import Architecture
from dogbreed.preprocessing import Preprocessing
from dogbreed.training.checkpoints import write_atomically
from dogbreed.training.data import Batch, EpochBatches, EvalTransform, Normalize, Split, make_loader, train_transform
from dogbreed.training.loop import batches
from dogbreed.training.model import is_head_key, replace_head

log = logging.getLogger(__name__)

FORMAT = 1
VIEW_STREAM = 1  # the augmented views' seeds are a sequence of their own (see EpochBatches)
_CACHE_NAME = re.compile(r"^(?P<split>[a-z]+)-(?P<digest>[0-9a-f]{16})\.pt$")


@dataclass(frozen=True)
class FeatureKey:
    """Everything a split's features depend on; two caches are interchangeable when their keys are equal."""

    split: str
    arch: str
    weights_sha256: str  # the trunk's weights (everything but the head)
    preprocessing: str  # resize, crop, mean and std, as JSON
    files_sha256: str  # every file of the split: relative path, size and content
    files: int
    views: int
    augmentation: str  # "none" (the evaluation view), or the random transform and its seed
    format: int = FORMAT

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @property
    def file_name(self) -> str:
        return f"{self.split}-{self.digest()[:16]}.pt"

    def differences(self, other: FeatureKey) -> list[str]:
        """The names of the fields in which ``other`` differs."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


@dataclass
class SplitFeatures:
    """One split's cached features: ``features[view, sample]``; unreadable samples' rows are zero."""

    key: FeatureKey
    features: torch.Tensor  # (views, samples, dim) float32
    labels: torch.Tensor  # (samples,) long
    readable: torch.Tensor  # (samples,) bool
    unreadable: dict[int, str]  # sample index -> why it could not be decoded

    def to_dict(self) -> dict:
        return {
            "key": asdict(self.key),
            "features": self.features,
            "labels": self.labels,
            "readable": self.readable,
            "unreadable": dict(self.unreadable),
        }

    @classmethod
    def from_dict(cls, d: dict) -> SplitFeatures:
        return cls(FeatureKey(**d["key"]), d["features"], d["labels"], d["readable"], dict(d["unreadable"]))


def trunk_checksum(model: nn.Module, arch: Architecture) -> str:
    """SHA-256 of the trunk's state (every tensor but the head's, names included)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if is_head_key(name, arch):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def files_checksum(split: Split) -> tuple[str, int]:
    """SHA-256 over every image file of the split (readable or not): relative path, size, content; and its manifest."""
    paths = sorted({str(p) for p, _ in split.samples} | set(split.unreadable))
    digest = hashlib.sha256()
    for name in paths:
        path = Path(name)
        with open(path, "rb") as f:
            content = hashlib.file_digest(f, "sha256").hexdigest()
        digest.update(f"{path.relative_to(split.root)}\0{path.stat().st_size}\0{content}\n".encode())
    if split.manifest is not None:  # its labels are in no path
        digest.update(b"manifest\0" + split.manifest.read_bytes())
    return digest.hexdigest(), len(paths)


def feature_key(
    split: Split, arch: str, weights_sha256: str, preprocessing: Preprocessing, views: int, augment: bool, seed: int
) -> FeatureKey:
    """The key of ``split``'s features; augmented views (train only) also depend on the transform and seed."""
    files_sha256, count = files_checksum(split)
    augmentation = "none"
    if augment:
        augmentation = f"{train_transform(preprocessing)!r} seed={seed}".replace("\n", " ")
    return FeatureKey(
        split=split.name,
        arch=arch,
        weights_sha256=weights_sha256,
        preprocessing=json.dumps(asdict(preprocessing), sort_keys=True),
        files_sha256=files_sha256,
        files=count,
        views=views if augment else 1,
        augmentation=augmentation,
    )


class FeatureStore:
    """Where caches are looked for (the job's output folder, the ``features`` channel) and written."""

    def __init__(self, cache_dir: Path, channel: Path | None):
        self.cache_dir = Path(cache_dir)
        self.channel = channel if channel is not None and Path(channel).is_dir() else None
        self._unpacked: Path | None = None

    def candidates(self) -> list[Path]:
        """Every cache file on offer; archives in the channel are unpacked (once) to a temporary folder."""
        found = sorted(self.cache_dir.glob("*.pt")) if self.cache_dir.is_dir() else []
        if self.channel is not None:
            found += sorted(p for p in self.channel.rglob("*.pt") if p.is_file())
            found += sorted(self._unpack_archives(self.channel))
        return [p for p in found if _CACHE_NAME.match(p.name)]

    def _unpack_archives(self, channel: Path) -> list[Path]:
        if self._unpacked is None:
            self._unpacked = Path(tempfile.mkdtemp(prefix="dogbreed-features-"))
            for archive in sorted(channel.rglob("*.tar.gz")):
                with tarfile.open(archive) as tar:
                    members = [m for m in tar.getmembers() if m.isfile() and _CACHE_NAME.match(Path(m.name).name)]
                    # Flat, by name (no folders from the archive), and by hand: the image's Python
                    # (3.11.2) has no extractall(filter=).
                    for member in members:
                        source = tar.extractfile(member)
                        if source is not None:
                            with source, open(self._unpacked / Path(member.name).name, "wb") as target:
                                shutil.copyfileobj(source, target)
                log.info("features: %d cache files in %s", len(members), archive)
        return list(self._unpacked.glob("*.pt"))

    def find(self, key: FeatureKey) -> SplitFeatures | None:
        """The cache whose key is ``key``; a same-split cache with another key is logged, with what differs."""
        stale = []
        for path in self.candidates():
            name = _CACHE_NAME.match(path.name)  # candidates() keeps the names that match
            if name is None or name["split"] != key.split:
                continue
            try:
                cached = SplitFeatures.from_dict(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as exc:  # noqa: BLE001 - an unreadable cache is recomputed, never trusted
                log.warning(
                    "features: %s: ignoring the unreadable cache %s (%s: %s)", key.split, path, type(exc).__name__, exc
                )
                continue
            if cached.key == key:
                log.info("features: %s: using the cache %s", key.split, path)
                return cached
            stale.append(f"{path} (its {', '.join(key.differences(cached.key))} differ)")
        if stale:
            log.warning(
                "features: %s: no cache matches this job, so it is recomputed; not used: %s",
                key.split,
                "; ".join(stale),
            )
        return None

    def save(self, features: SplitFeatures) -> Path:
        """Write a split's cache to the output folder (atomically), replacing that split's older ones."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for old in self.cache_dir.glob(f"{features.key.split}-*.pt"):
            old.unlink()
        return write_atomically(self.cache_dir, features.to_dict(), features.key.file_name)


@torch.inference_mode()
def trunk_features(model: nn.Module, arch: Architecture, images: torch.Tensor) -> torch.Tensor:
    """The network's output before its head (float32), in channels_last memory layout."""
    head = replace_head(model, arch, nn.Identity())
    try:
        return model(images.contiguous(memory_format=torch.channels_last)).float()
    finally:
        replace_head(model, arch, head)


def extract(
    model: nn.Module,
    arch: Architecture,
    split: Split,
    key: FeatureKey,
    preprocessing: Preprocessing,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    timeout: float,
    seed: int,
    stop,
) -> SplitFeatures:
    """Run every image of ``split`` (each view) through the frozen trunk once."""
    start, augment = time.perf_counter(), key.augmentation != "none"
    transform = train_transform(preprocessing) if augment else EvalTransform(preprocessing)
    normalize, samples = Normalize.of(preprocessing), len(split.samples)
    log.info(
        "features: %s: computing %d view(s) of %d images with the frozen %s", split.name, key.views, samples, key.arch
    )
    was_training = model.training
    model.eval().to(memory_format=torch.channels_last)
    features, readable = None, torch.zeros(samples, dtype=torch.bool)
    labels = torch.tensor([label for _, label in split.samples], dtype=torch.long)
    unreadable: dict[int, str] = {}
    try:
        for view in range(key.views):
            loader = make_loader(
                split,
                transform,
                batch_size,
                False,
                num_workers,
                device.type == "cuda",
                seed,
                timeout,
                seeded=augment,
                stream=VIEW_STREAM,
            )
            loader.batch_sampler.set_epoch(view + 1)
            for batch in batches(loader, split, stop, f"{split.name} features {view + 1}/{key.views}"):
                unreadable.update(batch.unreadable)
                if not len(batch):
                    continue
                out = trunk_features(model, arch, normalize(batch.images.to(device, non_blocking=True))).cpu()
                if features is None:
                    features = torch.zeros(key.views, samples, out.shape[1])
                features[view, batch.indices] = out
                readable[batch.indices] = True
            del loader  # its persistent workers end here
    finally:
        model.to(memory_format=torch.contiguous_format).train(was_training)
    if features is None:
        features = torch.zeros(key.views, samples, 0)
    seconds = time.perf_counter() - start
    log.info(
        "features: %s: %d images x %d view(s) in %.1f s (%.1f images/s)",
        split.name,
        int(readable.sum()),
        key.views,
        seconds,
        key.views * samples / max(seconds, 1e-9),
    )
    return SplitFeatures(key, features, labels, readable, unreadable)


class FeatureLoader:
    """Batches of cached features, in the order the image loader would give them.

    It has the image loader's :class:`EpochBatches` (same seed, same order, resumable at
    any position), so a pass over it is the pass over the images without the trunk. In
    an epoch each training image's augmentation seed picks one of its cached views.
    """

    def __init__(self, cached: SplitFeatures, batch_size: int, shuffle: bool, seed: int, device: torch.device):
        self.batch_sampler = EpochBatches(len(cached.labels), batch_size, shuffle, seed)
        self.features = cached.features.to(device)
        self.labels, self.readable, self.unreadable = cached.labels, cached.readable, cached.unreadable
        self.views = cached.features.shape[0]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Batch]:
        for keys in self.batch_sampler:
            indices = torch.tensor([index for index, _ in keys], dtype=torch.long)
            views = torch.tensor([(seed or 0) % self.views for _, seed in keys], dtype=torch.long)
            ok = self.readable[indices]
            good = indices[ok]
            bad = [(int(i), self.unreadable.get(int(i), "unreadable")) for i in indices[~ok]]
            images = self.features[views[ok].to(self.features.device), good.to(self.features.device)]
            yield Batch(images, self.labels[good], bad, good)


def mark_unreadable(split: Split, cached: SplitFeatures) -> None:
    """Count a cache's undecodable images in the split, as decoding them here would have."""
    for index, reason in cached.unreadable.items():
        path = str(split.samples[index][0])
        if split.add_unreadable(path, reason):
            log.warning("%s: skipping unreadable image %s: %s", split.name, path, reason)
