"""Pieces both applications share: seen-class test accuracy, Spearman correlation, unit-parallel training."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, TypeVar

import numpy as np
import torch

from ddcore.evaluation import run_concurrently, split_threads

T = TypeVar("T")


def class_subset_indices(data, classes: Sequence[int], per_class: int = 0) -> torch.Tensor:
    """Store positions of the images of ``classes`` in a class-sorted split (the first ``per_class`` of each; 0 = all)."""
    parts = []
    for c in classes:
        start, count = int(data.offsets[c]), int(data.counts[c])
        take = count if per_class <= 0 else min(per_class, count)
        parts.append(torch.arange(start, start + take, device=data.labels.device))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=data.labels.device)


@torch.no_grad()
def masked_accuracy(net: torch.nn.Module, data, indices: torch.Tensor, classes: Optional[Sequence[int]] = None,
                    batch_size: int = 1024) -> float:
    """Top-1 accuracy (fraction) of ``net`` on the split's images at ``indices``.

    With ``classes``, logits of every other class are masked out before the argmax (GDumb: a model trained
    on the classes seen so far predicts among them only).
    """
    if indices.numel() == 0:
        raise ValueError("cannot evaluate on an empty subset")
    was_training = net.training
    net.eval()
    mask = None
    correct = None
    try:
        for start in range(0, indices.numel(), batch_size):
            batch = data.take(indices[start:start + batch_size])
            logits = net(batch.images)
            if classes is not None:
                if mask is None:
                    mask = torch.ones(logits.shape[-1], dtype=torch.bool, device=logits.device)
                    mask[torch.as_tensor(list(classes), device=logits.device)] = False
                logits = logits.masked_fill(mask, float("-inf"))
            hits = (logits.argmax(-1) == batch.labels).sum()
            correct = hits if correct is None else correct + hits
    finally:
        net.train(was_training)
    return float(correct) / indices.numel()


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as Spearman's rho needs)."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    out = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        out[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Spearman's rank correlation of two equally long sequences; ``None`` when undefined (n < 2, a constant)."""
    if len(a) != len(b):
        raise ValueError(f"spearman: {len(a)} vs {len(b)} values")
    if len(a) < 2:
        return None
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return None if denom == 0 else float((ra * rb).sum() / denom)


def run_units(units: Sequence[T], prepare: Callable[[T], Callable[[], float]], device: torch.device, parallel: str,
              max_parallel: int = 0) -> list[float]:
    """Results of independent training units, in order.

    ``prepare(unit)`` runs in the calling thread (it builds the network: initialisers draw from the global
    RNG, which threads must not share) and returns the job that trains and tests it. With
    ``parallel='threads'`` on a CPU, groups of jobs run side by side on the intra-op threads; else one after
    another. Only one group's networks exist at a time.
    """
    workers, per_worker = 1, 1
    if parallel == "threads" and device.type == "cpu" and len(units) > 1:
        workers, per_worker = split_threads(len(units), torch.get_num_threads(), max_parallel)
    out: list[float] = []
    for lo in range(0, len(units), workers):
        jobs = [prepare(u) for u in units[lo:lo + workers]]
        out.extend(run_concurrently(jobs, workers=workers, threads_per_worker=per_worker))
    return out


def mean_std(values: Sequence[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": [float(v) for v in values]}
