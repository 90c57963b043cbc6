"""Unit tests of the DM mean-matching term."""

from __future__ import annotations

import hypothesis.strategies as st
import torch
from hypothesis import given, settings

from ddcore.types import RealBatch, SynBatch
from ddcore.perclass import class_means
from ddcore_dm.objective import DistributionMatching, DistributionMatchingConfig, mean_matching_loss


def _batches(num_classes=3, per_class=4, ipc=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    real_x = torch.randn(num_classes * per_class, 3, 8, 8, generator=g)
    real_y = torch.arange(num_classes).repeat_interleave(per_class)
    real = RealBatch(images=real_x, labels=real_y, indices=torch.arange(len(real_y)), per_class=per_class)
    syn_x = torch.randn(num_classes * ipc, 3, 8, 8, generator=g, requires_grad=True)
    syn = SynBatch(images=syn_x, labels=torch.arange(num_classes).repeat_interleave(ipc))
    return real, syn


@given(k=st.integers(1, 5), n=st.integers(1, 6), d=st.integers(1, 7), seed=st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_class_means_match_a_per_class_loop(k, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(k * n, d, generator=g)
    ids = torch.randint(0, k, (k * n,), generator=g)
    means, counts = class_means(feats, ids, k)
    for c in range(k):
        rows = feats[ids == c]
        assert counts[c] == len(rows)
        if len(rows):
            torch.testing.assert_close(means[c], rows.mean(0))


@given(k=st.integers(1, 4), n=st.integers(1, 5), m=st.integers(1, 5), seed=st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_loss_is_zero_when_class_means_agree_and_positive_otherwise(k, n, m, seed):
    g = torch.Generator().manual_seed(seed)
    syn = torch.randn(k * m, 6, generator=g)
    syn_ids = torch.arange(k).repeat_interleave(m)
    # real features: the same class means, other rows (n copies of each syn class mean).
    real = class_means(syn, syn_ids, k)[0].repeat_interleave(n, dim=0)
    real_ids = torch.arange(k).repeat_interleave(n)
    assert mean_matching_loss(real, real_ids, syn, syn_ids, k).abs() < 1e-9
    shifted = real + torch.eye(6)[0]
    assert mean_matching_loss(shifted, real_ids, syn, syn_ids, k) > 0.5 * k


def test_matches_the_official_per_class_loop(tiny_net, stub_build, step_ctx):
    net = tiny_net()
    real, syn = _batches()
    ctx = step_ctx(stub_build(3), real, syn, [net])
    loss = DistributionMatching(DistributionMatchingConfig(), None)(ctx)
    expected = 0.0
    for c in range(3):
        r = net.embed(real.images[real.labels == c]).detach().mean(0)
        s = net.embed(syn.images[syn.labels == c]).mean(0)
        expected = expected + ((r - s) ** 2).sum()
    torch.testing.assert_close(loss, expected)


def test_zero_when_real_and_syn_are_the_same_images(tiny_net, stub_build, step_ctx):
    net = tiny_net()
    real, _ = _batches(per_class=2)
    syn = SynBatch(images=real.images.clone().requires_grad_(True), labels=real.labels)
    loss = DistributionMatching(DistributionMatchingConfig(), None)(step_ctx(stub_build(3), real, syn, [net]))
    assert loss.abs() < 1e-10


def test_gradient_reaches_only_the_synthetic_images(tiny_net, stub_build, step_ctx):
    net = tiny_net()
    for p in net.parameters():
        p.requires_grad_(False)
    real, syn = _batches()
    real.images.requires_grad_(True)
    loss = DistributionMatching(DistributionMatchingConfig(), None)(step_ctx(stub_build(3), real, syn, [net]))
    loss.backward()
    assert real.images.grad is None
    assert syn.images.grad is not None and syn.images.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_class_term_depends_only_on_its_own_synthetic_images(tiny_net, stub_build, step_ctx):
    """'separable' coupling: the gradient of class c's term is zero on other classes' rows (instance norm)."""
    net = tiny_net()
    real, syn = _batches()
    obj = DistributionMatching(DistributionMatchingConfig(), None)
    # Keep only class 1 of the real batch: classes 0/2 have no real rows, so they are masked out.
    keep = real.labels == 1
    real1 = type(real)(images=real.images[keep], labels=real.labels[keep], indices=real.indices[keep])
    obj(step_ctx(stub_build(3), real1, syn, [net])).backward()
    grad = syn.images.grad.flatten(1).abs().sum(1)
    assert (grad[syn.labels != 1] == 0).all() and (grad[syn.labels == 1] > 0).all()


def test_several_nets_sum(tiny_net, stub_build, step_ctx):
    a, b = tiny_net(seed=1), tiny_net(seed=2)
    real, syn = _batches()
    obj = DistributionMatching(DistributionMatchingConfig(), None)
    both = obj(step_ctx(stub_build(3), real, syn, [a, b]))
    one = obj(step_ctx(stub_build(3), real, syn, [a])) + obj(step_ctx(stub_build(3), real, syn, [b]))
    torch.testing.assert_close(both, one)


def test_a_dm_run_on_cpu_uses_bf16_by_default_and_fp32_when_asked(tmp_path):
    """DM is marked bf16-safe (paired accuracy in docs/reproduction.md), so ``precision = "auto"`` picks bf16 on CPU."""
    import json

    from ddcore.testing import run_recipe, tiny_recipe

    def run(name, **run_opts):
        r = tiny_recipe(plugins=["ddcore-dm"], objective=[{"name": "dm"}],
                        run={"iterations": 2, "log_every": 1, "checkpoint_every": 0, "progress": False,
                             "compile": "off", **run_opts})
        r.pop("eval")
        return run_recipe(r, tmp_path, out_name=name)

    auto, fp32 = run("auto"), run("fp32", precision="fp32")
    assert json.loads((auto.out_dir / "manifest.json").read_text())["hot_path"]["precision"] == "bf16"
    assert fp32.run.hot_path.precision == "fp32"
    assert not torch.equal(auto.synset.images, fp32.synset.images)
