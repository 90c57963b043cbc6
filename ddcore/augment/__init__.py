"""Augmentations (public): :mod:`ddcore.augment.dsa`, Differentiable Siamese Augmentation, as functions, a module
and the registered component."""

__all__: list[str] = []
