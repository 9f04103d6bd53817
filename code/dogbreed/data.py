"""The image set: one folder per class in each split, e.g. ``train/001.Affenpinscher/*.jpg``.

Unreadable files (empty, text renamed ``.jpg``, truncated JPEGs) do not stop the job:
a cheap header check drops most of them at scan time, the rest fail to decode in the
Dataset and are dropped by :func:`collate_skip_unreadable`. Both are counted per split,
and too many of them (``max_unreadable_fraction``) fail the job.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from dogbreed.failure import TrainingError
from dogbreed.images import ImageDecodeError, open_image
from dogbreed.preprocessing import Preprocessing

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_NUMBERED = re.compile(r"^\d+\.(.+)$")


def class_name(folder: str) -> str:
    """``001.Affenpinscher`` -> ``Affenpinscher``, ``063.German_shepherd_dog`` -> ``German shepherd dog``."""
    match = _NUMBERED.match(folder)
    return (match.group(1) if match else folder).replace("_", " ").strip()


@dataclass
class Split:
    """One split: its classes (folder names, sorted) and its readable-looking images."""

    name: str
    root: Path
    class_dirs: list[str]
    samples: list[tuple[Path, int]]
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason, scan and load time

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


def scan_split(name: str, root: Path, class_dirs: Sequence[str] | None = None) -> Split:
    """List ``root/<class>/<image>``; raise :class:`TrainingError` for a missing or malformed split.

    ``class_dirs``, when given, is the class list of the train split: this split must have
    exactly the same folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise TrainingError(f"the {name} channel is missing: {root} is not a directory")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise TrainingError(f"the {name} channel {root} has no class folders (expected {root}/001.Breed/*.jpg)")
    if class_dirs is not None and found != list(class_dirs):
        missing = sorted(set(class_dirs) - set(found))
        extra = sorted(set(found) - set(class_dirs))
        raise TrainingError(
            f"the {name} split's class folders differ from the train split's: "
            f"missing in {name}: {missing or 'none'}; only in {name}: {extra or 'none'}"
        )
    samples: list[tuple[Path, int]] = []
    unreadable: dict[str, str] = {}
    for index, folder in enumerate(found):
        files = sorted(
            p for p in (root / folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise TrainingError(f"the class folder {root / folder} in the {name} split holds no images")
        for path in files:
            problem = _header_problem(path)
            if problem:
                unreadable[str(path)] = problem
            else:
                samples.append((path, index))
    split = Split(name, root, found, samples, unreadable)
    log.info(
        "%s: %d images in %d classes from %s (%d unreadable, skipped)",
        name, len(samples), len(found), root, len(unreadable),
    )
    for path, reason in list(unreadable.items())[:10]:
        log.warning("%s: skipping unreadable image %s: %s", name, path, reason)
    return split


class EvalTransform:
    """The evaluation transform: exactly :class:`Preprocessing`, as a tensor."""

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(self.preprocessing(image))


def train_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """Random crops and flips, normalised with the same mean/std as evaluation."""
    return T.Compose([
        T.RandomResizedCrop(preprocessing.crop_size, antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(preprocessing.mean, preprocessing.std),
    ])


class ImageDataset(Dataset):
    """``(tensor, label, index, None)``, or ``(None, label, index, reason)`` for an unreadable file."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable[[Image.Image], torch.Tensor]):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            image = open_image(path)
        except ImageDecodeError as exc:
            return None, label, index, str(exc)
        except OSError as exc:  # vanished or unreadable file
            return None, label, index, f"{type(exc).__name__}: {exc}"
        return self.transform(image), label, index, None


def collate_skip_unreadable(batch):
    """Stack the readable samples; return ``(images, labels, [(index, reason), ...])``."""
    good = [(x, y) for x, y, _, reason in batch if reason is None]
    bad = [(i, reason) for x, _, i, reason in batch if reason is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    images = torch.stack([x for x, _ in good])
    labels = torch.tensor([y for _, y in good], dtype=torch.long)
    return images, labels, bad


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; seed Python and NumPy from it too.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    split: Split,
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader over a split's readable-looking images, dropping those that fail to decode."""
    workers = dict(persistent_workers=True, prefetch_factor=4, worker_init_fn=_seed_worker) if num_workers else {}
    return DataLoader(
        ImageDataset(split.samples, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_skip_unreadable,
        generator=generator,
        **workers,
    )
