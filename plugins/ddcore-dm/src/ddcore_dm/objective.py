"""The DM mean-embedding matching term.

``L = sum_c || mean_{x in real_c} f(x) - mean_{s in syn_c} f(s) ||^2`` (DM paper Alg. 1, main_DM.py l.163).

All classes go through ONE forward pass per batch (``ctx.outputs(net, "real")`` / ``"syn"``, memoised and shared
with other terms); per-class means come from ``index_add_`` over the class ids, so no Python loop over classes
runs. With instance norm (the default ConvNet) this is exactly the official per-class loop, because every sample
is normalised on its own. With BatchNorm it is the official BN branch (main_DM.py l.187), which also runs all
classes of a batch through one forward so the batch statistics span all classes.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch

from ddcore.components import Objective
from ddcore.config import option
from ddcore.errors import RecipeError
from ddcore.perclass import class_ids, class_means


def mean_matching_loss(
    real_features: torch.Tensor,
    real_ids: torch.Tensor,
    syn_features: torch.Tensor,
    syn_ids: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """``sum_c ||mean real_c - mean syn_c||^2`` over the classes present in both batches."""
    real_mean, real_count = class_means(real_features.detach(), real_ids, num_classes)
    syn_mean, syn_count = class_means(syn_features, syn_ids, num_classes)
    present = ((real_count > 0) & (syn_count > 0)).to(syn_mean.dtype)
    return (((real_mean - syn_mean) ** 2).sum(dim=1) * present).sum()


@attrs.define(frozen=True, kw_only=True)
class DistributionMatchingConfig:
    """Options of the ``dm`` objective."""

    feature: str = option(
        "embedding",
        "Which output of the step network is matched: 'embedding' (flattened features before the classifier, "
        "DM's net.embed; 2048-d for ConvNet on 32 px) or 'logits'.",
        choices=("embedding", "logits"),
    )


class DistributionMatching(Objective):
    """DM: per-class squared distance of mean real and mean synthetic embeddings, summed over classes.

    Uses every network in ``ctx.nets`` and sums their terms (DM and the IDM commands use one network per step).
    The real side is a constant target (computed under ``no_grad`` by ``ctx.outputs``); gradients reach only the
    synthetic images.
    """

    coupling = "separable"
    # bf16 autocast kept DM's accuracy with paired seeds (MNIST IPC 1 and 10, CIFAR-10 IPC 10: docs/reproduction.md)
    bf16_safe = True

    def __init__(self, config: DistributionMatchingConfig, build):
        super().__init__(config, build)

    def _features(self, ctx, net, which: str) -> torch.Tensor:
        out = ctx.outputs(net, which)
        return out.embedding if self.config.feature == "embedding" else out.logits

    def __call__(self, ctx) -> torch.Tensor:
        if ctx.real is None:
            raise RecipeError("objective 'dm' needs real batches; set [real] sampling to 'per_class'", key="real")
        real_ids, syn_ids = class_ids(ctx.real), class_ids(ctx.syn)
        total: Optional[torch.Tensor] = None
        for net in ctx.nets:
            term = mean_matching_loss(
                self._features(ctx, net, "real"), real_ids, self._features(ctx, net, "syn"), syn_ids, ctx.num_classes
            )
            total = term if total is None else total + term
        assert total is not None, "sampler returned no networks"
        return total
