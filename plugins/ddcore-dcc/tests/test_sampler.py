"""The inner_loop sampler: loop constants, fresh networks per outer iteration, training between updates, BN, resume."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from ddcore.errors import RecipeError
from ddcore.testing import make_build_context, tiny_dataset, tiny_recipe
from ddcore.types import SynBatch
from ddcore_dcc.sampler import InnerLoop, InnerLoopConfig, resolve_loops


def _build(norm="instancenorm", ipc=1):
    recipe = tiny_recipe(backbone={"name": "ConvNet", "width": 8, "depth": 2, "norm": norm},
                         synset={"name": "pixels", "ipc": ipc})
    return make_build_context(recipe, data=tiny_dataset(num_classes=3, per_class=20))


def _sampler(build, **options):
    return InnerLoop(InnerLoopConfig(**options), build)


def _ctx(build, step, seed=0):
    g = torch.Generator().manual_seed(seed)
    syn = SynBatch(images=torch.randn(6, 3, 8, 8, generator=g), labels=torch.arange(3).repeat_interleave(2))
    return types.SimpleNamespace(step=step, syn_raw=syn, build=build, updated_synset=lambda: syn.detach())


def _weights(net):
    return [p.detach().clone() for p in net.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "loops, ipc, expected",
    [("dcc", 1, (10, 5)), ("dc", 1, (1, 1)), ("dcc", 10, (10, 50)), ("dc", 10, (10, 50)), ("dcc", 50, (50, 10)),
     ("dc", 20, (20, 25))],
)
def test_loop_constants_follow_the_official_get_loops_tables(loops, ipc, expected):
    assert resolve_loops(InnerLoopConfig(loops=loops), ipc) == expected


def test_loop_constants_overrides_recipe_ipc_and_unknown_ipc():
    assert resolve_loops(InnerLoopConfig(updates_per_net=4), 10) == (4, 50)
    assert resolve_loops(InnerLoopConfig(train_epochs=0), 1) == (10, 0)
    assert resolve_loops(InnerLoopConfig(updates_per_net=2, train_epochs=3), None) == (2, 3)
    with pytest.raises(RecipeError, match="sampler.updates_per_net"):
        resolve_loops(InnerLoopConfig(), 7)
    s = _sampler(_build(ipc=1))  # ipc read from the recipe's [synset]
    assert (s.updates_per_net, s.train_epochs) == (10, 5)
    s = _sampler(_build(ipc=1), loops="dc")
    assert (s.updates_per_net, s.train_epochs) == (1, 1)


def test_a_fresh_seeded_network_every_outer_iteration_and_counters():
    build = _build()
    s = _sampler(build, updates_per_net=3, train_epochs=1)
    first = s.nets(0)[0]
    assert s.info() == {"outer": 0, "inner": 0}
    assert s.nets(1)[0] is first and s.nets(2)[0] is first
    assert s.info() == {"outer": 0, "inner": 2}
    second = s.nets(3)[0]
    assert second is not first and s.info() == {"outer": 1, "inner": 0}
    assert not _same(_weights(first), _weights(second))
    # deterministic: the network of outer iteration 1 depends only on (run seed, 1)
    again = _sampler(build, updates_per_net=3, train_epochs=1).nets(4)[0]
    assert _same(_weights(again), _weights(second))
    assert all(p.requires_grad for p in second.parameters())


def test_network_trains_between_updates_but_not_after_the_last_update():
    build = _build()
    s = _sampler(build, updates_per_net=2, train_epochs=2)
    net = s.nets(0)[0]
    w0 = _weights(net)
    s.after_step(_ctx(build, 0))
    w1 = _weights(net)
    assert not _same(w0, w1), "inner 0 of 2 must be followed by T epochs of training"
    s.nets(1)
    s.after_step(_ctx(build, 1))
    assert _same(w1, _weights(net)), "the last update of a network is not followed by training"
    assert all(p.grad is None for p in net.parameters())


def test_zero_train_epochs_keeps_the_network_fixed():
    build = _build()
    s = _sampler(build, updates_per_net=3, train_epochs=0)
    net = s.nets(0)[0]
    w0 = _weights(net)
    s.after_step(_ctx(build, 0))
    assert _same(w0, _weights(net))


def test_batchnorm_statistics_are_refreshed_from_real_data_and_frozen():
    build = _build(norm="batchnorm")
    s = _sampler(build, updates_per_net=2, train_epochs=1)
    net = s.nets(0)[0]
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not m.training for m in bns), "BN layers are frozen (eval) during the update"
    assert net.training, "the rest of the network stays in train mode"
    assert all(m.running_mean.abs().sum() > 0 for m in bns), "running stats come from a real batch"
    frozen = [m.running_mean.clone() for m in bns]
    x = torch.randn(4, 3, 8, 8)
    net(x)  # a forward in the frozen state leaves the statistics alone
    assert all(torch.equal(m.running_mean, f) for m, f in zip(bns, frozen))
    s.after_step(_ctx(build, 0))  # training uses train-mode BN, then the next update refreshes and freezes again
    s.nets(1)
    assert all(not m.training for m in bns)


def test_instance_norm_networks_need_no_real_batch():
    build = _build()
    build.train = None  # would fail if the sampler tried to draw the BN batch
    net = _sampler(build, updates_per_net=2, train_epochs=1).nets(0)[0]
    assert net.training


def test_state_dict_round_trip_reproduces_the_network_mid_outer_iteration():
    build = _build(norm="batchnorm")
    a = _sampler(build, updates_per_net=3, train_epochs=2, momentum_net=0.9)
    a.nets(0)
    a.after_step(_ctx(build, 0))
    state = a.state_dict()
    b = _sampler(build, updates_per_net=3, train_epochs=2, momentum_net=0.9)
    b.load_state_dict(state)
    for sampler in (a, b):
        sampler.nets(1)
        sampler.after_step(_ctx(build, 1, seed=1))
    assert _same(_weights(a.nets(2)[0]), _weights(b.nets(2)[0]))
    assert b.info() == {"outer": 0, "inner": 2}
