"""Class centralization and its pretrained pool (trained once, cached on disk, loaded once)."""

from __future__ import annotations

import math

import torch

from ddcore.config import ComponentRef
from ddcore.types import SynBatch
from ddcore_iid import pool as pool_mod
from ddcore_iid.centralization import ClassCentralization, ClassCentralizationConfig, centralization_loss
from ddcore_iid.pool import PoolConfig, cached_members, load_or_train_pool, pool_key


def test_code_form_is_within_class_scatter():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(9, 5, generator=g)
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    expected = sum(((f[ids == c] - f[ids == c].mean(0)) ** 2).sum() for c in range(3))
    torch.testing.assert_close(centralization_loss(f, ids, 3), expected)
    same = f[[0, 0, 0, 3, 3, 3, 6, 6, 6]]
    assert centralization_loss(same, ids, 3) < 1e-10


def test_paper_form_is_the_exp_hinge():
    f = torch.tensor([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    ids = torch.tensor([0, 0, 1, 1])
    # class 0: mean (1, 0), d^2 = 1 for both; class 1: d^2 = 0 -> exp(0) - 0.5 = 0.5 each
    got = centralization_loss(f, ids, 2, form="paper", alpha=0.1, beta=0.5)
    torch.testing.assert_close(got, torch.tensor(2 * (math.exp(0.1) - 0.5) + 2 * 0.5))
    assert centralization_loss(f, ids, 2, form="paper", alpha=0.1, beta=5.0) == 0  # all under the threshold


def test_pool_is_trained_once_cached_and_reloaded(pool_build, monkeypatch):
    pool_mod.clear_memo()
    build = pool_build()
    cfg = PoolConfig(size=2, epochs=1, batch=16)
    tasks = []

    class Task:  # records what the pool reports, as the run's progress display would show it
        def __init__(self, label, total, unit):
            self.label, self.total, self.unit, self.done, self.closed = label, total, unit, 0, False
            tasks.append(self)

        def advance(self, n=1):
            self.done += n

        def close(self):
            self.closed = True

    build.progress_task = lambda label, total, *, unit="models": Task(label, total, unit)
    nets = load_or_train_pool(cfg, build)
    assert len(nets) == 2 and all(not p.requires_grad for n in nets for p in n.parameters())
    assert build.train.calls == [16] * 3 * 2  # 48 images, 1 epoch, 2 members
    # progress moves batch by batch (the ETA of a member trained for hours) and ends complete
    [task] = tasks
    assert (task.total, task.unit, task.done, task.closed) == (6, "batches", 6, True) and "2 of 2" in task.label
    assert len(cached_members(cfg, build)) == 2
    assert load_or_train_pool(cfg, build) is nets  # memory: loaded once per process
    # A fresh process (memo cleared) reads the cache instead of training.
    pool_mod.clear_memo()
    monkeypatch.setattr(pool_mod, "train_member", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    again = load_or_train_pool(cfg, build)
    assert len(tasks) == 1  # nothing to train: no progress bar
    x = torch.randn(2, 3, 8, 8)
    for a, b in zip(nets, again):
        torch.testing.assert_close(a(x), b(x))
    # The trained members differ from fresh random ones and from each other.
    assert not torch.allclose(nets[0](x), nets[1](x))
    pool_mod.clear_memo()


def test_cache_key_tracks_settings_and_dataset(pool_build):
    build = pool_build()
    base = pool_key(PoolConfig(), build)
    assert pool_key(PoolConfig(epochs=30), build) != base
    assert pool_key(PoolConfig(lr=0.1), build) != base
    assert pool_key(PoolConfig(arch=ComponentRef("ResNet18BN")), build) != base
    assert pool_key(PoolConfig(size=3), build) == base  # members are shared between pool sizes
    assert pool_key(PoolConfig(), pool_build(num_classes=4)) != base


def test_objective_picks_a_member_per_step_and_only_moves_syn(pool_build, step_ctx):
    pool_mod.clear_memo()
    build = pool_build()
    term = ClassCentralization(ClassCentralizationConfig(pool=PoolConfig(size=3, epochs=1, batch=16)), build)
    g = torch.Generator().manual_seed(0)
    syn = SynBatch(images=torch.randn(6, 3, 8, 8, generator=g, requires_grad=True),
                   labels=torch.arange(3).repeat_interleave(2))
    picked = set()
    for step in range(12):
        ctx = step_ctx(build, None, syn, [], step=step)
        loss = term(ctx)
        picked.update(i for i, n in enumerate(term.pool()) if (id(n), "syn") in ctx._outputs)
        assert loss > 0
    assert len(picked) >= 2  # different members on different steps
    loss.backward()
    assert syn.images.grad.abs().sum() > 0
    assert all(p.grad is None for n in term.pool() for p in n.parameters())
    pool_mod.clear_memo()


def test_pool_members_train_through_the_runs_compiled_first_order_forward(pool_build, tmp_path):
    """Where the run compiles first-order passes (a CPU under ``compile = "auto"``), pre-training does too: the
    same member as the eager one, up to kernel rounding."""
    from torch._dynamo.utils import counters

    from ddcore.hotpath import HotPath

    members = []
    for compiled in (False, True):
        pool_mod.clear_memo()
        build = pool_build()
        build.cache_dir = tmp_path / f"cache-{compiled}"
        build.hot_path = HotPath(compile_first_order=compiled, scope="test-iid-pool")
        graphs = counters["stats"]["unique_graphs"]
        [net] = load_or_train_pool(PoolConfig(size=1, epochs=1, batch=16), build)
        assert (counters["stats"]["unique_graphs"] > graphs) == compiled
        members.append(net)
    pool_mod.clear_memo()
    for a, b in zip(members[0].state_dict().values(), members[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    x = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(members[0](x), pool_mod._new_member(PoolConfig(), pool_build(), 0)(x))
