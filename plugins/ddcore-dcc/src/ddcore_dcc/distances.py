"""Gradient distances of the DC family (VICO-UoE/DatasetCondensation ``utils.match_loss``).

Every function takes two lists of gradient tensors aligned with a network's ``parameters()`` and returns a
0-d tensor. Tensors may carry a leading *group* dimension (``batched=True``: ``[G, *param.shape]``, e.g. one
gradient per class); the distance is then computed per group and summed over groups, which is what the
class-wise loss ``sum_c D(g_syn_c, g_real_c)`` needs, without a Python loop over classes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

#: The official code adds this to the product of norms (``0.000001``).
EPS = 1e-6


def _rows(g: torch.Tensor, batched: bool) -> torch.Tensor:
    """Reshape to ``[..., out, rest]``: conv ``[out, in, h, w]`` -> ``[out, in*h*w]``; LayerNorm 3-D -> ``[C, h*w]``."""
    lead = 1 if batched else 0
    return g.reshape(*g.shape[: lead + 1], -1)


def layerwise_cosine(g_syn: Sequence[torch.Tensor], g_real: Sequence[torch.Tensor], *, batched: bool = False) -> torch.Tensor:
    """``'ours'``: per parameter tensor, sum over output rows of ``1 - cos(row_real, row_syn)``, summed over tensors.

    1-D tensors (biases, norm affine parameters) contribute 0, exactly as ``distance_wb`` returns 0 for them.
    """
    lead = 1 if batched else 0
    total = None
    for gs, gr in zip(g_syn, g_real):
        if gs.dim() - lead <= 1:
            continue
        s, r = _rows(gs, batched), _rows(gr, batched)
        cos = (s * r).sum(-1) / (s.norm(dim=-1) * r.norm(dim=-1) + EPS)
        term = (1.0 - cos).sum()
        total = term if total is None else total + term
    if total is None:
        ref = g_syn[0]
        return ref.new_zeros(())
    return total


def _flat(gs: Sequence[torch.Tensor], batched: bool) -> torch.Tensor:
    if batched:
        return torch.cat([g.reshape(g.shape[0], -1) for g in gs], dim=1)
    return torch.cat([g.reshape(-1) for g in gs])


def squared_l2(g_syn: Sequence[torch.Tensor], g_real: Sequence[torch.Tensor], *, batched: bool = False) -> torch.Tensor:
    """``'mse'``: squared L2 distance of all gradients concatenated (a sum, not a mean, as the official code)."""
    return ((_flat(g_syn, batched) - _flat(g_real, batched)) ** 2).sum()


def global_cosine(g_syn: Sequence[torch.Tensor], g_real: Sequence[torch.Tensor], *, batched: bool = False) -> torch.Tensor:
    """``'cos'``: ``1 - cos`` of all gradients concatenated into one vector (per group when batched)."""
    s, r = _flat(g_syn, batched), _flat(g_real, batched)
    cos = (s * r).sum(-1) / (s.norm(dim=-1) * r.norm(dim=-1) + EPS)
    return (1.0 - cos).sum()


DISTANCES: dict[str, Callable[..., torch.Tensor]] = {
    "ours": layerwise_cosine,
    "mse": squared_l2,
    "cos": global_cosine,
}
