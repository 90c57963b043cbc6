"""Per-class reductions of batched tensors, without a Python loop over classes and without host syncs (public).

Objective terms compare real and synthetic statistics class by class; these are the one implementation every
term (built-in or plugin) uses. ``ids`` is an int64 ``[N]`` tensor of class ids in ``[0, num_classes)``.
"""

from __future__ import annotations

import torch

__all__ = ["class_blocks", "class_ids", "class_means", "class_sums"]


def class_ids(batch) -> torch.Tensor:
    """Hard class ids of a real or synthetic batch: ``labels`` when they are int64 ``[N]``, else ``groups``.

    Soft-label synthetic sets (``[N, K]`` labels) are class-major by construction, so their ``groups`` are the
    classes.
    """
    labels = getattr(batch, "labels", None)
    if labels is not None and labels.dtype == torch.int64 and labels.ndim == 1:
        return labels
    groups = getattr(batch, "groups", None)
    if groups is None:
        raise ValueError(f"{type(batch).__name__} has neither hard labels nor groups: no class ids")
    return groups


def class_sums(x: torch.Tensor, ids: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(``[K, *x.shape[1:]]`` per-class sums, ``[K]`` counts in ``x.dtype``) with one ``index_add`` each."""
    flat = x.reshape(x.shape[0], -1)
    sums = flat.new_zeros(num_classes, flat.shape[1]).index_add(0, ids, flat)
    counts = flat.new_zeros(num_classes).index_add(0, ids, torch.ones_like(ids, dtype=flat.dtype))
    return sums.view(num_classes, *x.shape[1:]), counts


def class_means(x: torch.Tensor, ids: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(``[K, *x.shape[1:]]`` per-class means, ``[K]`` counts); a class without rows gets a zero mean, count 0."""
    sums, counts = class_sums(x, ids, num_classes)
    shape = (num_classes,) + (1,) * (x.dim() - 1)
    return sums / counts.clamp_min(1).view(shape), counts


def class_blocks(x: torch.Tensor, ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[N, ...]`` rows grouped into ``[K, N/K, ...]`` by class (stable sort by id; no host sync).

    Requires every class to hold exactly ``N/K`` rows: true for the engine's per-class real batches and for
    class-major synthetic sets with the same ipc everywhere (also after an expansion).
    """
    n = x.shape[0]
    if n % num_classes:
        raise ValueError(f"{n} rows cannot hold the same number of rows for each of {num_classes} classes")
    order = torch.argsort(ids, stable=True)
    return x[order].reshape(num_classes, n // num_classes, *x.shape[1:])
