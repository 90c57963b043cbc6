"""Same-budget baseline sets drawn from the real training split: ``random`` and ``herding``.

Both return a class-major :class:`~ddcore.types.SynBatch` of normalised real images with hard labels. The
budget is split over classes as evenly as possible (the first ``budget % K`` classes get one image more; a
class never gives more images than it has).

- ``random``: class-balanced uniform draw without replacement (the "Random" coreset of the DC papers).
- ``herding``: per class, greedy selection whose running mean of features best approaches the class mean
  (Welling 2009, as used by the DC papers' "Herding" coreset). Features are ``embed`` of a randomly
  initialised recipe backbone (``build.make_backbone(seed_key="herding")``, eval mode), computed over the
  training split in a few large batched forwards; the greedy selection runs for a block of classes at once
  on padded ``[classes, images, D]`` tensors, so there is no per-class forward and no host sync per pick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ddcore.errors import RecipeError
from ddcore.types import SynBatch

if TYPE_CHECKING:
    from ddcore.context import BuildContext

__all__ = [
    "BASELINE_KINDS", "EMBED_CHUNK", "embed_split", "HERDING_BLOCK_BYTES", "herding_indices", "herding_select",
    "per_class_budget", "select"
]

BASELINE_KINDS: tuple[str, ...] = ("herding", "random")

#: Images per forward pass when embedding the training split for herding.
EMBED_CHUNK = 1024
#: Upper bound (bytes) of one padded ``[classes, images, D]`` feature block during herding.
HERDING_BLOCK_BYTES = 1 << 29


def per_class_budget(budget_images: int, class_counts) -> list[int]:
    """``budget_images`` split over classes as evenly as possible, capped by each class's size."""
    if budget_images < 0:
        raise RecipeError(f"baseline budget must be >= 0 images, got {budget_images}", key="eval.baselines")
    counts = [int(c) for c in torch.as_tensor(class_counts).tolist()]
    k = len(counts)
    share = [budget_images // k + (1 if c < budget_images % k else 0) for c in range(k)]
    return [min(s, n) for s, n in zip(share, counts)]


def select(kind: str, build: "BuildContext", budget_images: int, generator: torch.Generator) -> SynBatch:
    """A baseline set of ``budget_images`` real training images chosen by ``kind``.

    :param kind: ``"random"`` or ``"herding"``.
    :param generator: the source of randomness of ``random`` (``herding`` is deterministic given the run seed).
    :raises RecipeError: for an unknown ``kind`` (key ``eval.baselines``).
    """
    if kind not in BASELINE_KINDS:
        raise RecipeError(
            f"unknown baseline {kind!r}; allowed: {', '.join(BASELINE_KINDS)}", key="eval.baselines"
        )
    data = build.train
    counts = per_class_budget(budget_images, data.class_counts)
    if kind == "random":
        indices = data.random_indices_per_class(counts, generator)
    else:
        indices = herding_indices(build, counts)
    batch = data.take(indices)
    return SynBatch(images=batch.images, labels=batch.labels)


@torch.no_grad()
def embed_split(net: torch.nn.Module, data, chunk: int = EMBED_CHUNK) -> torch.Tensor:
    """``[N, D]`` float32 embeddings of every image of ``data`` (in its order), in eval mode."""
    was_training = net.training
    net.eval()
    device = data.labels.device
    n = int(data.labels.shape[0])
    try:
        parts = [
            net.embed(data.take(torch.arange(s, min(s + chunk, n), device=device)).images).float().flatten(1)
            for s in range(0, n, chunk)
        ]
    finally:
        net.train(was_training)
    return torch.cat(parts)


@torch.no_grad()
def herding_select(features: torch.Tensor, valid: torch.Tensor, picks: int) -> torch.Tensor:
    """Greedy herding for a block of classes at once.

    :param features: ``[K, n, D]`` padded per-class features.
    :param valid: ``[K, n]`` bool, False on padding.
    :param picks: how many images to select per class (callers keep only each class's own count).
    :returns: ``[K, picks]`` positions (into ``n``), in selection order. At step ``t`` the image chosen
        minimises ``|| mean_c - (s + f) / t ||``, ``s`` the sum of the images chosen so far; it is the image
        nearest the class mean at ``t = 1``. Already-chosen and padded images are excluded.
    """
    k, n, _ = features.shape
    counts = valid.sum(1, keepdim=True).clamp(min=1).to(features.dtype)
    mean = (features * valid[..., None]).sum(1) / counts  # [K, D]
    sq_norm = (features * features).sum(-1)  # [K, n]
    taken = ~valid
    chosen_sum = torch.zeros_like(mean)
    rows = torch.arange(k, device=features.device)
    out = []
    for t in range(1, picks + 1):
        # || t*mean - s - f ||^2 = ||f||^2 - 2 <t*mean - s, f> + const(f)
        target = t * mean - chosen_sum
        dist = sq_norm - 2 * torch.bmm(features, target[..., None]).squeeze(-1)
        dist = dist.masked_fill(taken, float("inf"))
        j = dist.argmin(1)
        out.append(j)
        taken[rows, j] = True
        chosen_sum += features[rows, j]
    if not out:
        return torch.zeros(k, 0, dtype=torch.int64, device=features.device)
    return torch.stack(out, 1)


def herding_indices(build: "BuildContext", counts: list[int]) -> torch.Tensor:
    """Class-major indices into ``build.train`` chosen by herding, ``counts[c]`` for class ``c``."""
    data = build.train
    device = data.labels.device
    net = build.make_backbone(seed_key="herding")
    features = embed_split(net, data)  # [N, D]
    del net
    class_sizes = torch.as_tensor(data.class_counts, dtype=torch.int64).to(device)
    offsets = torch.cumsum(class_sizes, 0) - class_sizes
    want = torch.as_tensor(counts, dtype=torch.int64, device=device)
    k, dim = class_sizes.numel(), features.shape[1]
    n_max = int(class_sizes.max())
    per_class_bytes = max(1, n_max * dim * 4)
    block = max(1, HERDING_BLOCK_BYTES // per_class_bytes)
    positions = torch.arange(n_max, device=device)
    chosen = []
    for lo in range(0, k, block):
        cls = torch.arange(lo, min(lo + block, k), device=device)
        picks = int(want[cls].max()) if cls.numel() else 0
        if picks == 0:
            continue
        valid = positions[None, :] < class_sizes[cls, None]
        idx = (offsets[cls, None] + positions[None, :]).clamp(max=features.shape[0] - 1)
        pos = herding_select(features[idx], valid, picks)  # [b, picks]
        keep = torch.arange(picks, device=device)[None, :] < want[cls, None]
        chosen.append((offsets[cls, None] + pos)[keep])
    if not chosen:
        return torch.zeros(0, dtype=torch.int64, device=device)
    return torch.cat(chosen)
