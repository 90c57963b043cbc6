"""IDM's class-aware distribution regularisation (``--syn_ce``, uitrbn/IDM IDM_cifar10.py l.280-331).

For every class ``c`` the official loop adds ``CE(net(syn_aug_c), c) * weight_i * ce_weight`` where ``weight_i`` is
the sampled queue net's running training accuracy **in percent** (torchnet ``ClassErrorMeter.value()``; 0 for a net
never trained since the last reset). So with ``ce_weight = 0.5`` and a net at ~40 % the effective coefficient is
~20. We keep that scaling by default (``accuracy_scale = "percent"``); ``"fraction"`` divides it by 100 and
``"none"`` drops the accuracy factor.

Batched: one forward of all (expanded, augmented) synthetic images, shared with the DM term through
``ctx.outputs``; per-class mean cross-entropy via ``index_add_``, summed over classes (the official code sums the
per-class losses of its class loop).
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from ddcore.components import Objective
from ddcore.config import non_negative, option
from ddcore.errors import RecipeError


@attrs.define(frozen=True, kw_only=True)
class ClassAwareCEConfig:
    """Options of the ``class_aware_ce`` objective (its recipe ``weight`` is the official ``ce_weight``)."""

    accuracy_scale: str = option(
        "percent",
        "Factor from the sampled net's running accuracy: 'percent' (0-100, the official code), 'fraction' (0-1) "
        "or 'none' (factor 1).",
        choices=("percent", "fraction", "none"),
    )
    accuracy_floor: float = option(0.0, "Lower bound of the accuracy factor (the official code: 0, so untrained nets "
                                        "contribute nothing).", validator=non_negative)


def per_class_mean_ce(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``sum_c mean_{i in class c} CE(logits_i, c)`` without a loop over classes."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    sums = ce.new_zeros(num_classes).index_add(0, labels, ce)
    counts = ce.new_zeros(num_classes).index_add(0, labels, torch.ones_like(ce))
    return (sums / counts.clamp_min(1)).sum()


class ClassAwareCE(Objective):
    """Cross-entropy of the step net on the synthetic images, x the net's running accuracy (%) — IDM's --syn_ce."""

    coupling = "separable"

    def __call__(self, ctx) -> torch.Tensor:
        labels = ctx.syn.labels
        if labels is None or labels.dtype != torch.int64 or labels.ndim != 1:
            raise RecipeError("objective 'class_aware_ce' needs hard integer labels on the synthetic set",
                              key="objective")
        scale = self.config.accuracy_scale
        accuracies = ctx.sampler_info.get("net_accuracy")
        if scale != "none" and accuracies is None:
            raise RecipeError("objective 'class_aware_ce' weights by the sampled net's running accuracy; use a "
                              "sampler that reports it (sampler.name = 'model_queue') or accuracy_scale = 'none'",
                              key="objective")
        total = None
        for i, net in enumerate(ctx.nets):
            term = per_class_mean_ce(ctx.outputs(net, "syn").logits, labels, ctx.num_classes)
            if scale != "none":
                acc = accuracies[i] if scale == "percent" else accuracies[i] / 100.0
                term = term * acc.clamp_min(self.config.accuracy_floor)
            total = term if total is None else total + term
        assert total is not None, "sampler returned no networks"
        return total
