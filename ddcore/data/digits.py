"""The ``digits`` data source: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).

It is the offline default of the quickstart and of fast tests. Pixel values 0..16 are scaled to uint8
``round(v * 255 / 16)``. The train/test split is stratified and deterministic: the images are permuted with
``numpy.random.default_rng(split_seed)``, and within each class the first ``round((1 - test_fraction) * n_c)``
images of that permuted order go to train, the rest to test (kept in permuted order). Normalisation constants are
computed from the (processed) training split.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import numpy as np

from ddcore.config import OptionValueError, option
from ddcore.data.source import CommonDataConfig, NativeLayout, ProcessedSource, Split

__all__ = ["DigitsConfig", "DigitsSource"]


def _fraction(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise OptionValueError(attribute.name, f"expected a number strictly between 0 and 1, got {value!r}")


@attrs.define(frozen=True, kw_only=True)
class DigitsConfig(CommonDataConfig):
    """Options of the ``digits`` source."""

    test_fraction: float = option(0.2, "Fraction of each class held out as the test split.", validator=_fraction)
    split_seed: int = option(0, "Seed of the fixed permutation that defines the train/test split.")


class DigitsSource(ProcessedSource):
    """scikit-learn's 8x8 handwritten digits (10 classes, gray), split 80/20 per class deterministically."""

    source_name = "digits"

    def __init__(self, config: DigitsConfig, build: Any = None):
        super().__init__(config, build)
        self._splits: Optional[dict[str, tuple[np.ndarray, np.ndarray]]] = None

    def _load_all(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._splits is None:
            from sklearn.datasets import load_digits

            bunch = load_digits()
            images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
            labels = bunch.target.astype(np.int64)
            perm = np.random.default_rng(self.config.split_seed).permutation(labels.shape[0])
            images, labels = images[perm], labels[perm]
            # rank of each image within its class, in permuted order (vectorised)
            order = np.argsort(labels, kind="stable")
            sorted_labels = labels[order]
            rank = np.empty_like(order)
            rank[order] = np.arange(labels.shape[0]) - np.searchsorted(sorted_labels, sorted_labels)
            n_train = np.rint(np.bincount(labels) * (1.0 - self.config.test_fraction)).astype(np.int64)
            is_train = rank < n_train[labels]
            self._splits = {
                "train": (images[is_train], labels[is_train]),
                "test": (images[~is_train], labels[~is_train]),
            }
        return self._splits

    def native(self) -> NativeLayout:
        return NativeLayout(name="digits", channels=1, height=8, width=8, num_classes=10,
                            class_names=tuple(str(d) for d in range(10)), stats=None)

    def read_labels(self, split: Split) -> np.ndarray:
        return self._load_all()[split][1]

    def data_key(self, split: Split) -> Optional[str]:
        import sklearn

        return f"digits-{sklearn.__version__}-{self.config.split_seed}-{self.config.test_fraction}"

    def read_images(self, split: Split, indices: Optional[np.ndarray]) -> np.ndarray:
        images = self._load_all()[split][0]
        return images if indices is None else images[indices]
