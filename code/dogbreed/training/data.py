"""The image set: one folder per class in each split, e.g. ``train/001.Affenpinscher/*.jpg``, or a
manifest that labels the split's images (:mod:`.manifests`).

Unreadable files (empty, text renamed ``.jpg``, truncated JPEGs) do not stop the job:
a cheap header check drops most of them at scan time, the rest fail to decode in the
Dataset and are dropped by :func:`collate`. Both are counted per split,
and too many of them (``max_unreadable_fraction``) fail the job.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import re
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

from dogbreed.images import ImageDecodeError, open_image
from dogbreed.preprocessing import Preprocessing
from dogbreed.training.failure import TrainingError
from dogbreed.training.manifests import find_manifest, read_manifest

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_NUMBERED = re.compile(r"^\d+\.(.+)$")


def class_name(folder: str) -> str:
    """``001.Affenpinscher`` -> ``Affenpinscher``, ``063.German_shepherd_dog`` -> ``German shepherd dog``."""
    match = _NUMBERED.match(folder)
    return (match.group(1) if match else folder).replace("_", " ").strip()


@dataclass
class Split:
    """One split: its classes (folder names, sorted; or a manifest's class names) and its readable-looking images."""

    name: str
    root: Path
    class_dirs: list[str]
    samples: list[tuple[Path, int]]
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason, scan and load time
    manifest: Path | None = None  # the manifest that labels the split, if not class folders

    @property
    def classes(self) -> list[str]:
        """The class names a model answers with: a manifest's as written, folders' by :func:`class_name`."""
        return list(self.class_dirs) if self.manifest else [class_name(d) for d in self.class_dirs]

    @property
    def total(self) -> int:
        """Every image file found, readable or not."""
        return len(self.samples) + sum(1 for p in self.unreadable if p not in self._sample_paths)

    def __post_init__(self):
        self._sample_paths = {str(p) for p, _ in self.samples}

    def add_unreadable(self, path: str, reason: str) -> bool:
        """Record a file that failed to decode; True the first time it is seen."""
        if path in self.unreadable:
            return False
        self.unreadable[path] = reason
        return True

    def check_unreadable(self, max_fraction: float) -> None:
        """Raise :class:`TrainingError` when too many of this split's images are unreadable."""
        bad, total = len(self.unreadable), self.total
        if total and bad / total > max_fraction:
            examples = "; ".join(f"{p} ({r})" for p, r in list(self.unreadable.items())[:3])
            raise TrainingError(
                f"{bad} of {total} images ({bad / total:.1%}) in the {self.name} split cannot be "
                f"decoded, over max_unreadable_fraction={max_fraction}; e.g. {examples}"
            )


def _header_problem(path: Path) -> str | None:
    """A reason when the file is obviously not an image; reading the header only is cheap."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as image:
            image.size  # noqa: B018 - parsing the header is the check
    except Exception as exc:  # noqa: BLE001 - any failure here means "not an image"
        return f"not a recognised image: {type(exc).__name__}"
    return None


def scan_split(name: str, root: Path, class_dirs: Sequence[str] | None = None, label_attribute: str = "") -> Split:
    """List ``root/<class>/<image>``, or the images a manifest labels (:func:`.manifests.find_manifest`);
    raise :class:`TrainingError` for a missing or malformed split.

    ``class_dirs``, when given, is the class list of the train split: this split must have
    exactly the same folders (a manifest: the same class names, index for index).
    ``label_attribute`` picks a Ground Truth manifest's label attribute.
    """
    root = Path(root)
    manifest = find_manifest(root)
    if not root.is_dir():
        raise TrainingError(f"the {name} channel is missing: {root} is not a directory")
    if manifest is not None:
        labelled = read_manifest(manifest, root, label_attribute)
        found, listed = labelled.classes, labelled.samples
    else:
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not found:
            raise TrainingError(f"the {name} channel {root} has no class folders (expected {root}/001.Breed/*.jpg)")
    if class_dirs is not None and found != list(class_dirs):
        raise _other_classes(name, found, class_dirs, "classes" if manifest is not None else "class folders")
    if manifest is None:
        listed = _folder_images(name, root, found)
    samples: list[tuple[Path, int]] = []
    unreadable: dict[str, str] = {}
    for path, index in listed:
        problem = _header_problem(path)
        if problem:
            unreadable[str(path)] = problem
        else:
            samples.append((path, index))
    split = Split(name, root, found, samples, unreadable, manifest)
    log.info(
        "%s: %d images in %d classes from %s (%d unreadable, skipped)",
        name,
        len(samples),
        len(found),
        manifest or root,
        len(unreadable),
    )
    for bad, reason in list(unreadable.items())[:10]:
        log.warning("%s: skipping unreadable image %s: %s", name, bad, reason)
    return split


def _other_classes(name: str, found: Sequence[str], expected: Sequence[str], kind: str) -> TrainingError:
    """The error for a split whose classes are not the train split's (other names, or their order)."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    return TrainingError(
        f"the {name} split's {kind} differ from the train split's: "
        f"missing in {name}: {missing or 'none'}; only in {name}: {extra or 'none'}"
        + ("" if missing or extra else f" (in another order: {list(found)})")
    )


def _folder_images(name: str, root: Path, class_dirs: Sequence[str]) -> list[tuple[Path, int]]:
    """Every image file under each class folder, with the folder's index."""
    listed: list[tuple[Path, int]] = []
    for index, folder in enumerate(class_dirs):
        files = sorted(p for p in (root / folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise TrainingError(f"the class folder {root / folder} in the {name} split holds no images")
        listed += [(path, index) for path in files]
    return listed


class EvalTransform:
    """The evaluation transform: :meth:`Preprocessing.pixels`, as a uint8 tensor (3, H, W)."""

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(self.preprocessing.pixels(image))


def train_transform(preprocessing: Preprocessing, augment: bool = True) -> Callable[[Image.Image], torch.Tensor]:
    """Random crops and flips, as a uint8 tensor (3, H, W); :class:`Normalize` follows in the job.

    Without ``augment``, the evaluation transform.
    """
    if not augment:
        return EvalTransform(preprocessing)
    return T.Compose(
        [
            T.RandomResizedCrop(preprocessing.crop_size, antialias=True),
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
        ]
    )


@dataclass(frozen=True)
class Normalize:
    """uint8 pixels ``(N, 3, H, W)`` -> the network's float32 input, on the pixels' device.

    Loaders carry pixels, a quarter of the bytes of the float input; this runs on the
    batch in the job (on the GPU where there is one). It does the float32 operations of
    :meth:`Preprocessing.normalize` and torchvision's ``ToTensor`` + ``Normalize``, so
    training and serving see bit-identical inputs.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, preprocessing: Preprocessing) -> Normalize:
        return cls(preprocessing.mean, preprocessing.std)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        return pixels.float().div_(255).sub_(mean).div_(std)


@dataclass
class Sample:
    """One image as :class:`ImageDataset` returns it; ``image`` is None when it could not be read."""

    image: torch.Tensor | None
    label: int
    index: int
    unreadable: str | None = None


class ImageDataset(Dataset):
    """Decodes and transforms one image per key ``(index, augmentation_seed)``.

    The seed, drawn by :class:`EpochBatches`, seeds torch's RNG for that image's random
    transform alone: an image looks the same in a given epoch whichever worker loads
    it, with any ``num_workers``, and when a stopped job resumes mid-epoch.
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable[[Image.Image], torch.Tensor]):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int | None]) -> Sample:
        index, seed = key
        path, label = self.samples[index]
        try:
            image = open_image(path)
        except ImageDecodeError as exc:
            return Sample(None, label, index, str(exc))
        except OSError as exc:  # vanished or unreadable file
            return Sample(None, label, index, f"{type(exc).__name__}: {exc}")
        if seed is None:
            return Sample(self.transform(image), label, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Sample(self.transform(image), label, index)


@dataclass
class Batch:
    """The readable images of one batch (uint8 pixels), and ``(index, reason)`` for each unreadable one.

    A batch crosses from a worker process to the job as plain bytes through the
    loader's pipe (see ``__getstate__``), never through ``/dev/shm``: torch would put
    its tensors there, and Docker gives a container 64 MB of it by default, which a few
    batches in flight exhaust (the job then waits forever for a batch that never comes).
    """

    images: torch.Tensor
    labels: torch.Tensor
    unreadable: list[tuple[int, str]]
    indices: torch.Tensor | None = None  # the readable images' sample indices (the feature cache needs them)

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        return {
            "images": self.images.numpy(),
            "labels": self.labels.numpy(),
            "unreadable": self.unreadable,
            "indices": None if self.indices is None else self.indices.numpy(),
        }

    def __setstate__(self, state: dict) -> None:
        self.images = torch.from_numpy(state["images"])
        self.labels = torch.from_numpy(state["labels"])
        self.unreadable = state["unreadable"]
        self.indices = None if state["indices"] is None else torch.from_numpy(state["indices"])

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (CUDA jobs): page-locked copies for fast transfers."""
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.unreadable, self.indices)


def collate(samples: list[Sample]) -> Batch:
    """Stack the readable samples into a :class:`Batch`; the unreadable ones are listed in it."""
    good = [s for s in samples if s.unreadable is None]
    bad = [(s.index, s.unreadable) for s in samples if s.unreadable is not None]
    indices = torch.tensor([s.index for s in good], dtype=torch.long)
    if not good:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), bad, indices)
    labels = torch.tensor([s.label for s in good], dtype=torch.long)
    return Batch(torch.stack([s.image for s in good if s.image is not None]), labels, bad, indices)


class EpochBatches(Sampler[list[tuple[int, "int | None"]]]):
    """The batches of one epoch, as lists of :class:`ImageDataset` keys.

    Shuffled batches follow a permutation seeded by ``(seed, epoch)`` and carry one
    augmentation seed per image, so an epoch is the same whenever it runs; evaluation
    batches are in file order without seeds. :meth:`set_epoch` picks the epoch and how
    many of its samples to skip (a job resumed mid-epoch skips those it trained on).

    With ``world_size`` processes, each step takes ``batch_size * world_size`` samples of
    that order and process ``rank`` gets its slice, so the processes together see the
    batches of one process whose batch is the sum of theirs. A final training step
    with fewer samples than processes is left out (each process must take part in it).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        seeded: bool | None = None,
        stream: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        # seeded: augmentation seeds (default: with shuffle); stream: a separate sequence of
        # them (the feature cache's augmented views use their own).
        self.seeded = shuffle if seeded is None else seeded
        self.stream = stream
        self.epoch, self.start = 1, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    @property
    def step_size(self) -> int:
        """Samples of the epoch's order that one step consumes, over all processes."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        remaining = max(0, self.num_samples - self.start)
        steps = math.ceil(remaining / self.step_size)
        if steps and self.shuffle and remaining % self.step_size and remaining % self.step_size < self.world_size:
            steps -= 1
        return steps

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        order, seeds = list(range(self.num_samples)), [None] * self.num_samples
        if self.shuffle or self.seeded:
            entropy = [self.seed, self.epoch] + ([self.stream] if self.stream else [])
            generator = torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
            if self.shuffle:
                order = torch.randperm(self.num_samples, generator=generator).tolist()
            if self.seeded:
                seeds = torch.randint(2**62, (self.num_samples,), generator=generator).tolist()
        for first in range(self.start, self.num_samples, self.step_size):
            size = min(self.step_size, self.num_samples - first)
            if self.shuffle and size < self.world_size:
                return
            share, extra = divmod(size, self.world_size)  # even slices of a short final step
            begin = first + self.rank * share + min(self.rank, extra)
            chunk = slice(begin, begin + share + (self.rank < extra))
            yield list(zip(order[chunk], seeds[chunk], strict=True))


class BatchLoader(Protocol):
    """What a pass reads: an epoch's :class:`Batch` es in the order of its :class:`EpochBatches` (an image
    loader of :func:`make_loader`, or cached features: ``feature_cache.FeatureLoader``)."""

    @property
    def batch_sampler(self) -> EpochBatches: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...


def ignore_sigterm(worker_id: int) -> None:
    """A DataLoader worker leaves SIGTERM to the job: torchrun signals the job's whole process
    group, and a worker killed mid-batch would turn a graceful stop into a failure."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(
    split: Split,
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    seed: int = 0,
    timeout: float = 0,
    seeded: bool | None = None,
    stream: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> BatchLoader:
    """A DataLoader of :class:`Batch` over a split's readable-looking images; ``loader.batch_sampler``
    is its :class:`EpochBatches`. With workers, a batch that takes over ``timeout`` seconds
    (a stuck worker) raises instead of waiting forever."""
    loader = DataLoader(
        ImageDataset(split.samples, transform),
        batch_sampler=EpochBatches(len(split.samples), batch_size, shuffle, seed, seeded, stream, rank, world_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate,
        worker_init_fn=ignore_sigterm if num_workers else None,
        # Workers draw nothing from their own RNG (every image has its seed); a fixed
        # generator keeps their creation from consuming the job's global RNG.
        generator=torch.Generator().manual_seed(seed),
        # With workers only (DataLoader's defaults without): keep them across epochs, and a timeout.
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers else None,
        timeout=timeout if num_workers else 0,
    )
    # DataLoader types batch_sampler as any sampler; this one's is the EpochBatches given above.
    return cast(BatchLoader, loader)


def loader_failure(exc: BaseException) -> TrainingError | None:
    """A one-line :class:`TrainingError` for torch's errors about dead or stuck loader workers."""
    text = str(exc)
    if not isinstance(exc, RuntimeError) or "DataLoader" not in text:
        return None
    if "timed out" in text:
        return TrainingError(
            f"data loading stalled: {text} (loader_timeout) waiting for one batch; a DataLoader worker is "
            "stuck (e.g. on a hung file system). Raise loader_timeout if one batch legitimately takes longer"
        )
    return TrainingError(
        f"data loading failed: {text}. A killed worker is often out of memory: lower num_workers or batch_size"
    )


def stop_loader_workers() -> None:
    """Kill the DataLoader worker processes still alive at the end of the job.

    Python's exit joins every daemonic child process, so one stuck (or stopped) worker
    would keep a failed job from ever exiting. The job starts no other daemonic
    processes. torch's SIGCHLD handler is removed first: it would raise for each kill.
    """
    workers = [p for p in multiprocessing.active_children() if p.daemon]
    if not workers:
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for worker in workers:
        worker.kill()
    for worker in workers:
        worker.join(timeout=10)
