"""Approximation networks Q_a (Boost-SSDD §3.3, Algorithm 1 lines 21-23, Table 11).

Q_a: R^V -> R^V, a two-layer MLP ``V -> h -> V`` (ReLU), one per augmentation, trained after distillation to
regress the coefficient shift ``C_a^y - C^y`` from ``C^y`` with MSE. All A networks are one batched module
(weights ``[A, V, h]`` and ``[A, h, V]``), so one einsum evaluates every view — no Python loop per view.

Unstated in the paper (facts §7 "[not found]"), our choices: full-batch Adam (m <= a few thousand rows),
``epochs`` steps, lr ``lr``, best-MSE weights kept. The output bias starts at the mean shift and the output
weights at zero, so training starts from the "bias" model of Table 11 and can only improve on its MSE.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ApproximationNets(nn.Module):
    """A batched stack of A two-layer MLPs ``V -> hidden -> V``; ``forward(c [m, V]) -> [A, m, V]``."""

    def __init__(self, num_views: int, dim: int, hidden: int):
        super().__init__()
        self.num_views, self.dim, self.hidden = num_views, dim, hidden
        self.w1 = nn.Parameter(torch.empty(num_views, dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_views, hidden))
        self.w2 = nn.Parameter(torch.zeros(num_views, hidden, dim))
        self.b2 = nn.Parameter(torch.zeros(num_views, dim))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """nn.Linear's default uniform(±1/sqrt(fan_in)) for the first layer; zeros for the second."""
        with torch.no_grad():
            bound = 1.0 / math.sqrt(self.dim)
            for p in (self.w1, self.b1):
                p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)
            self.w2.zero_()
            self.b2.zero_()

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        hid = torch.relu(torch.einsum("mv,avh->amh", c, self.w1) + self.b1[:, None, :])
        return torch.einsum("amh,ahv->amv", hid, self.w2) + self.b2[:, None, :]

    def num_floats(self) -> int:
        return sum(p.numel() for p in self.parameters())


def fit_approximation(nets: ApproximationNets, c: torch.Tensor, shifts: torch.Tensor, *, epochs: int = 2000,
                      lr: float = 1e-3, generator: torch.Generator | None = None) -> float:
    """Train ``nets`` in place on ``c`` ``[m, V]`` -> ``shifts`` ``[A, m, V]``; returns the best MSE reached.

    Inputs and targets are detached; full-batch Adam; the output bias is initialised to the mean shift.
    """
    c = c.detach()
    shifts = shifts.detach()
    nets.reset_parameters(generator)
    with torch.no_grad():
        nets.b2.copy_(shifts.mean(1))
    frozen = [p for p in nets.parameters() if not p.requires_grad]
    nets.requires_grad_(True)  # the owner may keep them frozen outside this fit (away from the set's optimiser)
    opt = torch.optim.Adam(nets.parameters(), lr=lr)
    with torch.no_grad():
        best = float(torch.mean((nets(c) - shifts) ** 2))
    best_state = {k: v.detach().clone() for k, v in nets.state_dict().items()}
    with torch.enable_grad():
        for _ in range(epochs):
            loss = torch.mean((nets(c) - shifts) ** 2)
            value = float(loss.detach())  # post-distillation fitting (runs once), not the per-step distillation loop
            if value < best:  # the weights that produced this loss, before the step below
                best = value
                best_state = {k: v.detach().clone() for k, v in nets.state_dict().items()}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    nets.load_state_dict(best_state)
    for p in frozen:
        p.requires_grad_(False)
    with torch.no_grad():
        return float(torch.mean((nets(c) - shifts) ** 2))
