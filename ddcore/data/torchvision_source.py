"""The ``torchvision`` data source: CIFAR-10/100, SVHN, MNIST and FashionMNIST through ``torchvision.datasets``.

For users who have (or can download) the original files. The offline copies in ``$DDCORE_DATA`` are read by the
``npz`` source instead. Normalisation constants are the standard ones of :mod:`ddcore.data.constants`.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import numpy as np

from ddcore.config import option
from ddcore.data.source import CommonDataConfig, NativeLayout, ProcessedSource, Split, path_candidates
from ddcore.files import cache_root
from ddcore.data.constants import KNOWN_STATS
from ddcore.errors import DataError

__all__ = ["TORCHVISION_DATASETS", "TorchvisionConfig", "TorchvisionSource"]

#: dataset -> (channels, height, width, num_classes, static class names or None)
TORCHVISION_DATASETS: dict[str, tuple[int, int, int, int, Optional[tuple[str, ...]]]] = {
    "CIFAR10": (3, 32, 32, 10, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                "truck")),
    "CIFAR100": (3, 32, 32, 100, None),
    "SVHN": (3, 32, 32, 10, tuple(str(d) for d in range(10))),
    "MNIST": (1, 28, 28, 10, tuple(str(d) for d in range(10))),
    "FashionMNIST": (1, 28, 28, 10, ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                     "Sneaker", "Bag", "Ankle boot")),
}


@attrs.define(frozen=True, kw_only=True)
class TorchvisionConfig(CommonDataConfig):
    """Options of the ``torchvision`` source."""

    dataset: str = option(doc="Which torchvision dataset.", choices=tuple(TORCHVISION_DATASETS))
    root: str = option("", "Folder of the torchvision files; empty = $DDCORE_CACHE/torchvision "
                           "(~/.cache/ddcore/torchvision). Relative: under $DDCORE_DATA, then next to the recipe.")
    download: bool = option(True, "Download the files into root when they are missing (needs internet).")


class TorchvisionSource(ProcessedSource):
    """A torchvision classification dataset (CIFAR10, CIFAR100, SVHN, MNIST, FashionMNIST)."""

    source_name = "torchvision"

    def __init__(self, config: TorchvisionConfig, build: Any = None):
        super().__init__(config, build)
        if config.root:
            candidates = path_candidates(config.root, build)
            existing = [c for c in candidates if c.exists()]
            self.root = existing[0] if existing else candidates[0]
        else:
            self.root = cache_root() / "torchvision"
        self._datasets: dict[str, Any] = {}

    def _dataset(self, split: Split) -> Any:
        if split not in self._datasets:
            import torchvision.datasets as tvd

            name, download = self.config.dataset, self.config.download
            try:
                if name == "SVHN":
                    ds = tvd.SVHN(str(self.root), split=split, download=download)
                else:
                    ds = getattr(tvd, name)(str(self.root), train=(split == "train"), download=download)
            except Exception as exc:  # noqa: BLE001 - offline download errors come in many types
                how = ("downloading failed (no internet?)" if download
                       else "the files are missing and download = false")
                raise DataError(
                    f"data source 'torchvision': cannot load {name} ({split}) from {self.root}: {how} ({exc}). "
                    f"Fix: put the torchvision files of {name} under {self.root} (or set root), run once with "
                    f"download = true on a machine with internet, or use the npz source with $DDCORE_DATA"
                ) from exc
            self._datasets[split] = ds
        return self._datasets[split]

    def native(self) -> NativeLayout:
        name = self.config.dataset
        channels, height, width, num_classes, names = TORCHVISION_DATASETS[name]
        if names is None:
            names = tuple(getattr(self._dataset("train"), "classes", ()) or ())
        return NativeLayout(name=name, channels=channels, height=height, width=width, num_classes=num_classes,
                            class_names=names, stats=KNOWN_STATS[name])

    def read_labels(self, split: Split) -> np.ndarray:
        ds = self._dataset(split)
        labels = ds.labels if self.config.dataset == "SVHN" else ds.targets
        return np.asarray(labels, dtype=np.int64).reshape(-1)

    def read_images(self, split: Split, indices: Optional[np.ndarray]) -> np.ndarray:
        ds = self._datasets.pop(split, None) or self._dataset(split)
        self._datasets.pop(split, None)  # the pixels move to the caller; do not keep a second copy
        data = ds.data
        data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
        if self.config.dataset == "SVHN":  # stored [N, C, H, W]
            data = data.transpose(0, 2, 3, 1)
        return data if indices is None else data[indices]
