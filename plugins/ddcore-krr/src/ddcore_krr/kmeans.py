"""k-means (Lloyd) on the device, and the "nearest member per centroid" coreset of the paper's Kmeans baseline."""

from __future__ import annotations

import torch


def _sq_dists(x: torch.Tensor, centers: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    return (x_sq[:, None] - 2 * x @ centers.T + centers.pow(2).sum(1)[None, :]).clamp_min_(0)


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, *, generator: torch.Generator, iterations: int = 30,
           chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``x`` ``[N, D]``: returns ``(centers [k, D], assignment [N])``.

    Initialised with k distinct random points; an empty cluster is re-seeded with the point farthest from its
    centre. Distances are computed in chunks of ``chunk`` rows to bound memory.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kmeans needs 1 <= k <= N, got k={k}, N={n}")
    x = x.float()
    x_sq = x.pow(2).sum(1)
    perm = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
    centers = x[perm[:k]].clone()
    assign = torch.zeros(n, dtype=torch.int64, device=x.device)
    for _ in range(iterations):
        best = torch.empty(n, device=x.device)
        for s in range(0, n, chunk):
            d = _sq_dists(x[s:s + chunk], centers, x_sq[s:s + chunk])
            best[s:s + chunk], assign[s:s + chunk] = d.min(1)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp_min(1)[:, None].to(x.dtype))
        n_empty = int(empty.sum())
        if n_empty:  # re-seed empty clusters with the points worst served
            far = torch.topk(best, n_empty).indices
            centers[empty] = x[far]
    for s in range(0, n, chunk):
        assign[s:s + chunk] = _sq_dists(x[s:s + chunk], centers, x_sq[s:s + chunk]).argmin(1)
    return centers, assign


@torch.no_grad()
def kmeans_medoid_indices(x: torch.Tensor, k: int, *, generator: torch.Generator, iterations: int = 30) -> torch.Tensor:
    """Indices of ``k`` distinct rows of ``x``: per cluster, the member nearest to its centroid.

    Clusters that end up empty (rare) are filled with random unused rows, so exactly ``k`` distinct indices come back.
    """
    centers, assign = kmeans(x, k, generator=generator, iterations=iterations)
    x = x.float()
    d = (x - centers[assign]).pow(2).sum(1)
    # per cluster argmin of d: sort by (cluster, distance) and take the first row of each cluster
    order = torch.argsort(d)
    order = order[torch.argsort(assign[order], stable=True)]
    sorted_assign = assign[order]
    first = torch.ones_like(sorted_assign, dtype=torch.bool)
    first[1:] = sorted_assign[1:] != sorted_assign[:-1]
    chosen = order[first]
    if chosen.numel() < k:
        used = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        used[chosen] = True
        rest = torch.nonzero(~used).flatten()
        pick = torch.randperm(rest.numel(), generator=generator, device=generator.device)[: k - chosen.numel()]
        chosen = torch.cat([chosen, rest[pick.to(rest.device)]])
    return chosen
