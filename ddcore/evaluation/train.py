"""Train a classifier from scratch on a (synthetic) set and measure its test accuracy.

This is ``evaluate_synset`` of VICO-UoE/DatasetCondensation (utils.py:337–360), written as plain functions:

- SGD (lr 0.01, momentum 0.9, weight decay 5e-4), shuffled batches of 256 (the last one may be smaller);
- ``epochs + 1`` epochs (the reference loops ``range(Epoch+1)``);
- one step decay: *after* epoch ``epochs // 2 + 1`` has been trained the lr is multiplied by 0.1 and the
  optimizer is re-created, which drops the momentum buffers. For 1000 epochs, epochs 0..501 run at 0.01 and
  502..1000 at 0.001 (the reference checks ``if ep in lr_schedule`` after ``epoch('train', ...)``);
- the train-time augmentation is applied to every batch (DSA in non-siamese mode for DSA-family methods);
- test: one pass in eval mode without augmentation, top-1 accuracy.

No host synchronisation happens per step: losses and correct counts stay on the device.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "balanced_subset_indices", "classification_loss", "epoch_learning_rates", "evaluate_accuracy",
    "iter_test_batches", "LOSSES", "train_classifier"
]

LOSSES: tuple[str, ...] = ("ce", "mse", "soft_ce")


def epoch_learning_rates(epochs: int, lr: float, decay_at_half: bool = True) -> list[float]:
    """The learning rate of each of the ``epochs + 1`` training epochs of the reference protocol.

    The decay is applied after epoch ``epochs // 2 + 1``, so the first decayed epoch is ``epochs // 2 + 2``
    (when it exists). A new optimizer (fresh momentum) starts at every epoch whose lr differs from the previous.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    decay_after = epochs // 2 + 1
    rates = []
    current = lr
    for ep in range(epochs + 1):
        rates.append(current)
        if decay_at_half and ep == decay_after:
            current = current * 0.1
    return rates


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean loss over the batch dimension (``-2`` of ``logits``), keeping any leading (ensemble) dimensions.

    :param logits: ``[..., B, K]``.
    :param targets: ``[..., B]`` int64 hard labels or ``[..., B, K]`` float soft labels (probabilities for
        ``"ce"``/``"soft_ce"``, regression targets for ``"mse"``).
    :param kind: ``"ce"`` (cross-entropy; hard or probability targets), ``"soft_ce"`` (``-sum(t·log_softmax)``,
        soft targets required) or ``"mse"`` (mean squared error to one-hot / given targets, averaged over
        classes as ``F.mse_loss`` does).
    :returns: ``logits.shape[:-2]`` losses (a 0-d tensor without leading dimensions).
    """
    hard = targets.dtype == torch.int64 and targets.ndim == logits.ndim - 1
    num_classes = logits.shape[-1]
    if kind == "ce" and hard:
        per_sample = F.cross_entropy(
            logits.reshape(-1, num_classes), targets.reshape(-1), reduction="none"
        ).view(targets.shape)
        return per_sample.mean(-1)
    if kind in ("ce", "soft_ce"):
        if hard:
            raise ValueError("loss 'soft_ce' needs soft labels [N, K]; got hard int64 labels (use 'ce')")
        return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean(-1)
    if kind == "mse":
        target = F.one_hot(targets, num_classes).to(logits.dtype) if hard else targets
        return (logits - target).pow(2).mean((-1, -2))
    raise ValueError(f"unknown loss {kind!r}; allowed: {', '.join(LOSSES)}")


def train_classifier(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    decay_at_half: bool = True,
    augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    generator: torch.Generator,
    loss: str = "ce",
    on_epoch_start: Optional[Callable[[int, torch.optim.Optimizer], None]] = None,
    on_epoch_end: Optional[Callable[[int], None]] = None,
) -> nn.Module:
    """Train ``net`` in place on ``(images, labels)`` with the reference protocol and return it.

    :param images: normalised float ``[N, C, H, W]`` on the net's device.
    :param labels: ``[N]`` int64 hard labels or ``[N, K]`` float soft labels.
    :param epochs: ``Epoch`` of the reference; ``epochs + 1`` epochs are trained.
    :param augment: train-time augmentation ``x -> x`` applied to every batch (``None``: none). Draw its
        randomness from ``generator`` (or a generator of its own) to stay deterministic.
    :param generator: the source of the per-epoch shuffling (``torch.randperm``), on the images' device.
    :param loss: see :func:`classification_loss`.
    :param on_epoch_start: optional ``f(epoch, optimizer)`` called before every epoch (tests, progress).
    :param on_epoch_end: optional ``f(epoch)`` called after every epoch (progress).
    """
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("cannot train on an empty set")
    if labels.shape[0] != n:
        raise ValueError(f"{n} images but {labels.shape[0]} labels")
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer: Optional[torch.optim.Optimizer] = None
    current_lr = None
    for ep, ep_lr in enumerate(epoch_learning_rates(epochs, lr, decay_at_half)):
        if ep_lr != current_lr:  # (re)create: the reference builds a new SGD, dropping momentum
            optimizer = torch.optim.SGD(params, lr=ep_lr, momentum=momentum, weight_decay=weight_decay)
            current_lr = ep_lr
        if on_epoch_start is not None:
            on_epoch_start(ep, optimizer)
        order = torch.randperm(n, generator=generator, device=generator.device)
        if order.device != images.device:
            order = order.to(images.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = images[idx]
            if augment is not None:
                x = augment(x)
            batch_loss = classification_loss(net(x), labels[idx], loss)
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
        if on_epoch_end is not None:
            on_epoch_end(ep)
    return net


def balanced_subset_indices(class_counts: Sequence[int] | torch.Tensor, limit: int) -> Optional[torch.Tensor]:
    """Indices of a deterministic, class-balanced subset of a class-sorted split (``None``: all of it).

    ``limit`` images are split over classes as evenly as possible (the first ``limit % K`` classes get one
    more, capped by the class size); each class contributes its *first* images, class-major.
    ``limit <= 0`` or ``limit >= N`` selects everything.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.int64).cpu()
    total = int(counts.sum())
    if limit <= 0 or limit >= total:
        return None
    k = counts.numel()
    share = torch.full((k,), limit // k, dtype=torch.int64)
    share[: limit % k] += 1
    take = torch.minimum(share, counts)
    offsets = torch.cumsum(counts, 0) - counts
    positions = torch.arange(int(take.max()), dtype=torch.int64)
    mask = positions[None, :] < take[:, None]
    return (offsets[:, None] + positions[None, :])[mask]


def iter_test_batches(data, batch_size: int = 1024, limit: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(normalised images, int64 labels)`` batches of a ``ClassIndexedData`` split, optionally a subset.

    :param limit: 0 = the whole split; else a class-balanced subset (:func:`balanced_subset_indices`).
    """
    subset = balanced_subset_indices(data.class_counts, limit) if limit > 0 else None
    if subset is None:
        for batch in data.iterate(batch_size):
            yield batch.images, batch.labels
        return
    subset = subset.to(data.labels.device)
    for start in range(0, subset.numel(), batch_size):
        batch = data.take(subset[start:start + batch_size])
        yield batch.images, batch.labels


@torch.no_grad()
def evaluate_accuracy(net: nn.Module, data, batch_size: int = 1024, *, limit: int = 0) -> float:
    """Top-1 accuracy (a fraction in ``[0, 1]``) of ``net`` on a ``ClassIndexedData`` split.

    Eval mode, no augmentation; the net's train/eval mode is restored afterwards. One host sync at the end.

    :param limit: 0 = the whole split; else a deterministic class-balanced subset of that many images.
    """
    was_training = net.training
    net.eval()
    correct = None
    seen = 0
    try:
        for x, y in iter_test_batches(data, batch_size, limit):
            hits = (net(x).argmax(-1) == y).sum()
            correct = hits if correct is None else correct + hits
            seen += int(y.shape[0])
    finally:
        net.train(was_training)
    if seen == 0:
        raise ValueError("cannot evaluate on an empty split")
    return float(correct) / seen
