"""The gradient_match term: the paper's 2-class linear example by hand, warm-up switching, gradient flow."""

from __future__ import annotations

import pytest
import torch

from ddcore.errors import RecipeError
from ddcore.hotpath import HotPath
from ddcore.types import RealBatch, SynBatch
from ddcore_dcc.objective import GradientMatch, GradientMatchConfig, warmup_active

# Paper §3.2: x ~ N(y * alpha * phi1 + beta * phi2, 1), phi1 = e1 (class-discriminative), phi2 = e2 (class-common).
ALPHA, BETA = 1.0, 4.0
PHI1, PHI2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])


def _real(per_class=64, seed=0):
    """Class 0 is y = +1, class 1 is y = -1; centred noise so the class means are exactly mu_+ and mu_-."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(per_class, 2, generator=g)
    noise = noise - noise.mean(0)
    mu_pos, mu_neg = ALPHA * PHI1 + BETA * PHI2, -ALPHA * PHI1 + BETA * PHI2
    x = torch.cat([mu_pos + noise, mu_neg + noise])
    y = torch.arange(2).repeat_interleave(per_class)
    return RealBatch(images=x, labels=y, indices=torch.arange(2 * per_class), per_class=per_class), mu_pos, mu_neg


def _loss(dcc, matching, distance, s_pos, s_neg):
    """The gradient_match term on the linear model at W = 0, synthetic set {(s_pos, +1), (s_neg, -1)}."""
    real, _, _ = _real()
    syn = SynBatch(images=torch.stack([s_pos, s_neg]).requires_grad_(True), labels=torch.arange(2))
    ctx = dcc.make_ctx(dcc.StubBuild(2), real, syn, [dcc.LinearNet()], sampler_info={"outer": 0, "inner": 0})
    term = GradientMatch(GradientMatchConfig(matching=matching, distance=distance, warmup_outer=0), dcc.StubBuild(2))
    return term(ctx), syn.images


def test_linear_example_losses_match_the_hand_computation(dcc):
    """At W = 0 the CE gradient of (x, y) w.r.t. W is (1/2 - onehot(y)) x^T, so for 2 classes

    class-wise   mse: sum_c 2 * (1/4) ||s_c - mu_c||^2           = 1/2 (||s+ - mu+||^2 + ||s- - mu-||^2)
    collective   mse: 2 * (1/16) ||(s+ - s-) - (mu+ - mu-)||^2    = 1/8 ||(s+ - s-) - (mu+ - mu-)||^2
    class-wise  ours: sum_c 2 (1 - cos(s_c, mu_c))
    collective  ours: 2 (1 - cos(s+ - s-, mu+ - mu-))
    i.e. the collective loss sees only the contrast s+ - s- (paper eqs. 6 and 8).
    """
    _, mu_pos, mu_neg = _real()
    s_pos, s_neg = torch.tensor([0.5, 1.0]), torch.tensor([-2.0, 3.0])

    def cos(a, b):
        return float(a @ b) / (float(a.norm() * b.norm()) + 1e-6)

    wise_mse = 0.5 * (float(((s_pos - mu_pos) ** 2).sum()) + float(((s_neg - mu_neg) ** 2).sum()))
    coll_mse = 0.125 * float((((s_pos - s_neg) - (mu_pos - mu_neg)) ** 2).sum())
    # 'ours' normalises per output row: each row of W's gradient is +-1/2 times the same vector
    wise_ours = 2 * (1 - cos(s_pos, mu_pos)) + 2 * (1 - cos(s_neg, mu_neg))
    coll_ours = 2 * (1 - cos(s_pos - s_neg, mu_pos - mu_neg))
    assert _loss(dcc, "class_wise", "mse", s_pos, s_neg)[0].item() == pytest.approx(wise_mse, rel=1e-5)
    assert _loss(dcc, "class_collective", "mse", s_pos, s_neg)[0].item() == pytest.approx(coll_mse, rel=1e-5)
    assert _loss(dcc, "class_wise", "ours", s_pos, s_neg)[0].item() == pytest.approx(wise_ours, rel=1e-4, abs=1e-5)
    assert _loss(dcc, "class_collective", "ours", s_pos, s_neg)[0].item() == pytest.approx(coll_ours, rel=1e-4, abs=1e-5)
    # invariance: shifting both synthetic points by the class-common direction leaves the collective loss unchanged
    shift = 3.0 * PHI2
    assert _loss(dcc, "class_collective", "mse", s_pos + shift, s_neg + shift)[0].item() == pytest.approx(coll_mse, rel=1e-5)


def test_linear_example_collective_matching_keeps_only_discriminative_features(dcc):
    """Gradient descent on each loss plus a norm penalty (the paper's lambda) reproduces R(S~) = alpha/(alpha+beta)
    for class-wise matching and R(S^) = 1 for class-collective matching (paper eqs. 7 and 9).

    Both losses are quadratic here (mse distance): lr 1.2 with penalty 0.1 contracts every direction (factors
    0.44 class-wise; 0.16 contrast / 0.76 common direction collective), so 40 steps converge."""

    def ratio(s):  # paper eq. 5
        a, b = (s @ PHI1).abs(), (s @ PHI2).abs()
        return float((a / (a + b)).mean())

    results = {}
    for matching in ("class_wise", "class_collective"):
        s = torch.tensor([[0.1, 0.1], [-0.1, 0.1]])
        for _ in range(40):
            loss, images = _loss(dcc, matching, "mse", s[0], s[1])
            loss = loss + 0.1 * (images**2).sum()
            (g,) = torch.autograd.grad(loss, images)
            s = (s - 1.2 * g).detach()
        results[matching] = ratio(s)
    assert results["class_wise"] == pytest.approx(ALPHA / (ALPHA + BETA), abs=0.01)  # class-common dominates
    assert results["class_collective"] > 0.99  # only the class-discriminative feature survives


@pytest.mark.parametrize(
    "boundary, warm, cold",
    [
        # code: class-wise while outer < 3 and inner < 2
        ("code", [(0, 0), (2, 1), (0, 1)], [(3, 0), (2, 2), (0, 2), (5, 5)]),
        # paper: class-wise while outer <= 3 and inner <= 2
        ("paper", [(0, 0), (3, 2), (3, 0), (0, 2)], [(4, 0), (3, 3), (0, 3)]),
    ],
)
def test_warmup_switches_exactly_at_the_configured_boundary(dcc, boundary, warm, cold):
    term = GradientMatch(GradientMatchConfig(matching="class_collective", warmup_outer=3, warmup_inner=2,
                                             warmup_boundary=boundary), dcc.StubBuild(2))
    for outer, inner in warm:
        assert warmup_active(outer, inner, 3, 2, boundary)
        assert term.collective({"outer": outer, "inner": inner}) is False, (outer, inner)
    for outer, inner in cold:
        assert not warmup_active(outer, inner, 3, 2, boundary)
        assert term.collective({"outer": outer, "inner": inner}) is True, (outer, inner)


def test_class_wise_matching_never_switches_and_disabled_warmup_needs_no_counters(dcc):
    wise = GradientMatch(GradientMatchConfig(matching="class_wise"), dcc.StubBuild(2))
    assert wise.collective({"outer": 10**6, "inner": 10**6}) is False
    off = GradientMatch(GradientMatchConfig(matching="class_collective", warmup_outer=0), dcc.StubBuild(2))
    assert off.collective({}) is True
    on = GradientMatch(GradientMatchConfig(matching="class_collective"), dcc.StubBuild(2))
    with pytest.raises(RecipeError, match="inner_loop"):
        on.collective({})


@pytest.mark.parametrize("matching", ["class_wise", "class_collective"])
@pytest.mark.parametrize("distance", ["ours", "mse", "cos"])
def test_gradients_reach_the_synthetic_images_and_the_term_is_logged(dcc, tiny_net, matching, distance):
    g = torch.Generator().manual_seed(0)
    real = RealBatch(images=torch.randn(12, 3, 8, 8, generator=g), labels=torch.arange(3).repeat_interleave(4),
                     indices=torch.arange(12), per_class=4)
    images = torch.randn(6, 3, 8, 8, generator=g).requires_grad_(True)
    syn = SynBatch(images=images, labels=torch.arange(3).repeat_interleave(2))
    net = tiny_net()
    before = [p.detach().clone() for p in net.parameters()]
    ctx = dcc.make_ctx(dcc.StubBuild(3), real, syn, [net], sampler_info={"outer": 0, "inner": 0})
    term = GradientMatch(GradientMatchConfig(matching=matching, distance=distance, warmup_outer=0), dcc.StubBuild(3))
    loss = term(ctx)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0
    for c in range(3):  # every class's images receive a gradient
        assert images.grad[2 * c:2 * c + 2].abs().sum() > 0
    assert ctx.logs["gradient_match/collective"].item() == float(matching == "class_collective")
    for p, b in zip(net.parameters(), before):  # the term never updates the network itself
        assert torch.equal(p.detach(), b)


def test_class_wise_rejects_a_synthetic_set_that_is_not_class_major(dcc, tiny_net):
    real = RealBatch(images=torch.randn(6, 3, 8, 8), labels=torch.arange(3).repeat_interleave(2),
                     indices=torch.arange(6), per_class=2)
    syn = SynBatch(images=torch.randn(3, 3, 8, 8), labels=torch.tensor([2, 0, 1]))
    ctx = dcc.make_ctx(dcc.StubBuild(3), real, syn, [tiny_net()])
    with pytest.raises(RecipeError, match="class-major"):
        GradientMatch(GradientMatchConfig(), dcc.StubBuild(3))(ctx)


def test_uniform_real_batches_are_rejected(dcc, tiny_net):
    real = RealBatch(images=torch.randn(6, 3, 8, 8), labels=torch.arange(3).repeat_interleave(2),
                     indices=torch.arange(6), per_class=None)
    syn = SynBatch(images=torch.randn(3, 3, 8, 8), labels=torch.arange(3))
    ctx = dcc.make_ctx(dcc.StubBuild(3), real, syn, [tiny_net()])
    with pytest.raises(RecipeError, match="per_class"):
        GradientMatch(GradientMatchConfig(), dcc.StubBuild(3))(ctx)


@pytest.mark.parametrize("matching", ["class_wise", "class_collective"])
def test_the_real_side_runs_the_compiled_first_order_forward(dcc, tiny_net, matching):
    """With ``HotPath.compile_first_order`` the real gradients come from compiled code (the synthetic side's double
    backward stays eager) and the loss and image gradients equal the eager step's."""
    from torch._dynamo.utils import counters

    g = torch.Generator().manual_seed(1)
    real = RealBatch(images=torch.randn(12, 3, 8, 8, generator=g), labels=torch.arange(3).repeat_interleave(4),
                     indices=torch.arange(12), per_class=4)
    syn_images = torch.randn(6, 3, 8, 8, generator=g)
    cfg = GradientMatchConfig(matching=matching, warmup_outer=0)
    results = []
    for compiled in (False, True):
        build = dcc.StubBuild(3)
        build.hot_path = HotPath(compile_first_order=compiled, scope=f"test-gm-{matching}")
        images = syn_images.clone().requires_grad_(True)
        syn = SynBatch(images=images, labels=torch.arange(3).repeat_interleave(2))
        ctx = dcc.make_ctx(build, real, syn, [tiny_net()], sampler_info={"outer": 0, "inner": 0})
        graphs = counters["stats"]["unique_graphs"]
        loss = GradientMatch(cfg, build)(ctx)
        assert (counters["stats"]["unique_graphs"] > graphs) == compiled
        loss.backward()
        results.append((loss.detach(), images.grad))
    (loss_e, grad_e), (loss_c, grad_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_c, grad_e, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_the_collective_real_side_runs_in_real_chunk_slices_when_samples_do_not_interact(dcc, tiny_net, norm):
    """``[run] real_chunk`` slices the class-collective real gradient (same loss); a net in BatchNorm train mode,
    whose statistics depend on the batch, keeps the whole batch."""
    g = torch.Generator().manual_seed(4)
    real = RealBatch(images=torch.randn(12, 3, 8, 8, generator=g), labels=torch.arange(3).repeat_interleave(4),
                     indices=torch.arange(12), per_class=4)
    syn_images = torch.randn(6, 3, 8, 8, generator=g)
    cfg = GradientMatchConfig(matching="class_collective", warmup_outer=0)
    results = []
    for chunk in (0, 5):
        net = tiny_net(norm=norm)
        rows = []
        net.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
        images = syn_images.clone().requires_grad_(True)
        syn = SynBatch(images=images, labels=torch.arange(3).repeat_interleave(2))
        ctx = dcc.make_ctx(dcc.StubBuild(3), real, syn, [net], sampler_info={"outer": 0, "inner": 0},
                           real_chunk=chunk)
        loss = GradientMatch(cfg, dcc.StubBuild(3))(ctx)
        loss.backward()
        results.append((loss.detach(), images.grad, rows))
    (loss_whole, grad_whole, rows_whole), (loss_sliced, grad_sliced, rows_sliced) = results
    assert rows_whole == [12]  # the real side's passes (the synthetic side runs forward_all)
    assert rows_sliced == ([5, 5, 2] if norm == "instance" else [12])
    torch.testing.assert_close(loss_sliced, loss_whole, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_sliced, grad_whole, rtol=1e-3, atol=1e-6)
