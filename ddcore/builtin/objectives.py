"""Built-in objective ``moment_matching``: per-class feature moments of real vs synthetic images.

A small, method-neutral term so the core can be exercised without plugins. It matches, for every class, the
mean (and optionally the per-dimension standard deviation) of the step network's embeddings. All classes go
through one forward pass; per-class statistics come from ``index_add`` over the group ids.
"""

from __future__ import annotations

import attrs

import ddcore
from ddcore.components import Objective
from ddcore.config import option
from ddcore.perclass import class_means

__all__ = ["MomentMatching", "MomentMatchingConfig"]


@attrs.define(frozen=True, kw_only=True)
class MomentMatchingConfig:
    moments: int = option(2, "1: match class means; 2: means and per-dimension standard deviations.", choices=(1, 2))
    features: str = option("embedding", "Which output to match.", choices=("embedding", "logits"))


class MomentMatching(Objective):
    """Σ_c ‖μ_c(real) − μ_c(syn)‖² (+ ‖σ_c(real) − σ_c(syn)‖²) in the step network's feature space."""

    coupling = "separable"

    def __call__(self, ctx):
        c = ctx.num_classes
        real = getattr(ctx.outputs(which="real"), self.config.features).flatten(1)
        syn = getattr(ctx.outputs(which="syn"), self.config.features).flatten(1)
        mr = class_means(real, ctx.real.groups, c)[0]
        ms = class_means(syn, ctx.syn.groups, c)[0]
        loss = ((mr - ms) ** 2).sum()
        if self.config.moments == 2:
            vr = class_means(real**2, ctx.real.groups, c)[0] - mr**2
            vs = class_means(syn**2, ctx.syn.groups, c)[0] - ms**2
            loss = loss + ((vr.clamp_min(1e-8).sqrt() - vs.clamp_min(1e-8).sqrt()) ** 2).sum()
        return loss


@ddcore.hookimpl
def ddcore_register_objectives(registry):
    registry.add("moment_matching", MomentMatching, config=MomentMatchingConfig)
