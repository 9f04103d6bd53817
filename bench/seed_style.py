"""The training loop users run today (the seed's, the course's): the baseline of bench/train and bench/tune.

torchvision's ``ImageFolder`` with ``ToTensor`` + ``Normalize`` transforms, a frozen
ResNet with a new ``fc``, Adam on the head, and every epoch every training and
validation image through the whole network; the test split once at the end. The
DataLoaders get as many workers as the training job's default, so the comparison
is of the designs, not of the worker counts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets, models, transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class SeedStyleRun:
    seconds: float
    train_images: int  # per epoch
    epochs: int
    valid_accuracy: float

    @property
    def images_per_sec(self) -> float:
        """Training images per second of the whole job's wall time."""
        return self.train_images * self.epochs / self.seconds


def default_workers() -> int:
    return min(4, len(os.sched_getaffinity(0)))


def run(data: Path, arch: str = "resnet50", epochs: int = 5, batch_size: int = 32, lr: float = 1e-3,
        workers: int | None = None, seed: int = 0) -> SeedStyleRun:
    """Train the head for ``epochs`` the seed's way; wall time from the first file read to the test result."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    workers = default_workers() if workers is None else workers
    normalize = transforms.Normalize(MEAN, STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    eval_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), normalize])
    train = datasets.ImageFolder(data / "train", train_tf)
    loaders = {
        "train": torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers),
        "valid": torch.utils.data.DataLoader(datasets.ImageFolder(data / "valid", eval_tf), batch_size=batch_size,
                                             num_workers=workers),
    }
    if (data / "test").is_dir():
        loaders["test"] = torch.utils.data.DataLoader(datasets.ImageFolder(data / "test", eval_tf),
                                                      batch_size=batch_size, num_workers=workers)
    model = models.get_model(arch, weights=None)  # ImageNet-shaped random weights: the cost is the same
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, len(train.classes))
    criterion, optimizer = nn.CrossEntropyLoss(), torch.optim.Adam(model.fc.parameters(), lr=lr)
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        for images, labels in loaders["train"]:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
        accuracy = evaluate(model, loaders["valid"])
    if "test" in loaders:
        evaluate(model, loaders["test"])
    return SeedStyleRun(time.perf_counter() - start, len(train), epochs, accuracy)


@torch.no_grad()
def evaluate(model: nn.Module, loader) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        correct += (model(images).argmax(1) == labels).sum().item()
        total += len(labels)
    return correct / total
