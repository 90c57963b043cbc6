"""The class-aware CE term: per-class mean CE, summed over classes, x the sampled net's accuracy in percent."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddcore.errors import RecipeError
from ddcore.types import SynBatch
from ddcore_idm.class_aware_ce import ClassAwareCE, ClassAwareCEConfig


def _syn():
    g = torch.Generator().manual_seed(0)
    return SynBatch(images=torch.randn(6, 3, 8, 8, generator=g, requires_grad=True),
                    labels=torch.tensor([0, 0, 1, 1, 2, 2]))


def test_matches_the_per_class_loop_times_accuracy_percent(tiny_net, stub_build, step_ctx):
    net, syn = tiny_net(), _syn()
    acc = torch.tensor(37.5)
    ctx = step_ctx(stub_build(3), None, syn, [net], sampler_info={"net_accuracy": [acc]})
    loss = ClassAwareCE(ClassAwareCEConfig(), None)(ctx)
    ref = sum(F.cross_entropy(net(syn.images[2 * c:2 * c + 2]), syn.labels[2 * c:2 * c + 2]) for c in range(3))
    torch.testing.assert_close(loss, ref * 37.5)
    frac = ClassAwareCE(ClassAwareCEConfig(accuracy_scale="fraction"), None)(
        step_ctx(stub_build(3), None, syn, [net], sampler_info={"net_accuracy": [acc]}))
    torch.testing.assert_close(frac, ref * 0.375)


def test_untrained_net_contributes_nothing(tiny_net, stub_build, step_ctx):
    net, syn = tiny_net(), _syn()
    ctx = step_ctx(stub_build(3), None, syn, [net], sampler_info={"net_accuracy": [torch.tensor(0.0)]})
    assert ClassAwareCE(ClassAwareCEConfig(), None)(ctx) == 0


def test_needs_an_accuracy_reporting_sampler(tiny_net, stub_build, step_ctx):
    ctx = step_ctx(stub_build(3), None, _syn(), [tiny_net()])
    with pytest.raises(RecipeError, match="model_queue"):
        ClassAwareCE(ClassAwareCEConfig(), None)(ctx)
    assert ClassAwareCE(ClassAwareCEConfig(accuracy_scale="none"), None)(ctx) > 0
