"""Built-in augmentations: ``dsa`` (Differentiable Siamese Augmentation, :mod:`ddcore.augment.dsa`)."""

from __future__ import annotations

import ddcore
from ddcore.augment.dsa import DSA, DSAConfig

__all__ = []


@ddcore.hookimpl
def ddcore_register_augmentations(registry):
    registry.add("dsa", DSA, config=DSAConfig)
