"""Standard per-channel normalisation constants of well-known datasets (pixels in [0, 1]).

CIFAR-10/100 and TinyImageNet are the values of the official DC/DSA/DM code (VICO-UoE/DatasetCondensation
``utils.get_dataset``; see shared/research/official_code_facts.md §0.3), so results stay comparable with the
published numbers; TinyImageNet's are the ImageNet constants, used for ImageNet folders too. MNIST, FashionMNIST
and SVHN are the usual torchvision-community values. Datasets not listed here get constants computed from their
training split (:func:`ddcore.data.transforms.channel_stats`).
"""

from __future__ import annotations

from typing import Optional

__all__ = ["FOLDER_ALIASES", "KNOWN_STATS", "Stats", "stats_for_folder"]

Stats = tuple[tuple[float, ...], tuple[float, ...]]

#: canonical dataset name -> (mean, std)
KNOWN_STATS: dict[str, Stats] = {
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "CIFAR100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "MNIST": ((0.1307,), (0.3081,)),
    "FashionMNIST": ((0.2860,), (0.3530,)),
    "SVHN": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "TinyImageNet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "ImageNet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

#: folder names (lower-cased, '_' read as '-') of npz/imagefolder datasets -> canonical dataset name.
#: ``cifar10-jpeg`` (the lossy JPEG copy in shared/datasets) deliberately uses the CIFAR-10 constants.
FOLDER_ALIASES: dict[str, str] = {
    "cifar10": "CIFAR10",
    "cifar-10": "CIFAR10",
    "cifar10-jpeg": "CIFAR10",
    "cifar100": "CIFAR100",
    "cifar-100": "CIFAR100",
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "fashionmnist": "FashionMNIST",
    "svhn": "SVHN",
    "tiny-imagenet": "TinyImageNet",
    "tiny-imagenet-200": "TinyImageNet",
    "tinyimagenet": "TinyImageNet",
    "imagenet": "ImageNet",
    "imagenet-1k": "ImageNet",
    "imagenet64": "ImageNet",
}


def stats_for_folder(folder_name: str) -> Optional[Stats]:
    """Standard constants for a dataset folder name, or ``None`` when the name is not a known dataset."""
    canonical = FOLDER_ALIASES.get(folder_name.lower().replace("_", "-"))
    return KNOWN_STATS[canonical] if canonical else None
