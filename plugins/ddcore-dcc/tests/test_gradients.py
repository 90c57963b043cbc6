"""Per-class gradients without a class loop equal the official per-class loop, first and second order."""

from __future__ import annotations

import pytest
import torch

from ddcore_dcc.gradients import class_grads, mean_grad
from ddcore_dcc.objective import class_wise_loss


def _batch(num_classes=3, per_class=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_classes * per_class, 3, 8, 8, generator=g)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return x, y


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("method", ["vmap", "batched_autograd"])
def test_batched_real_grads_equal_the_per_class_loop(tiny_net, norm, method):
    net = tiny_net(norm=norm)
    if norm == "batch":
        with torch.no_grad():
            net(torch.randn(12, 3, 8, 8))  # non-trivial running statistics
        net.eval()  # frozen BN, as the inner-loop sampler leaves it
    x, y = _batch()
    reference = class_grads(net, x, y, 3, method="loop")
    got = class_grads(net, x, y, 3, method=method)
    assert len(got) == len(list(net.parameters()))
    for a, b, p in zip(got, reference, net.parameters()):
        assert a.shape == (3, *p.shape)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # sanity: the classes really differ (a wrong reduction over all classes would make them equal)
    assert not torch.allclose(reference[-1][0], reference[-1][1])


def test_class_average_of_per_class_grads_is_the_mean_grad_for_equal_class_sizes(tiny_net):
    """The class-collective real side (DCC: sum_c g_c / C) equals one mean-CE gradient over the batch."""
    net = tiny_net()
    x, y = _batch(per_class=4)
    per_class = class_grads(net, x, y, 3, method="loop")
    for avg, one in zip((g.mean(0) for g in per_class), mean_grad(net, x, y)):
        torch.testing.assert_close(avg, one, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["vmap", "batched_autograd"])
def test_second_order_gradients_reach_the_synthetic_images_like_the_loop(tiny_net, method):
    net = tiny_net()
    real_x, real_y = _batch(per_class=6, seed=1)
    syn0, syn_y = _batch(per_class=2, seed=2)
    grads = {}
    for m in ("loop", method):
        syn = syn0.clone().requires_grad_(True)
        loss = class_wise_loss(net, real_x, real_y, syn, syn_y, 3, method=m)
        (grads[m],) = torch.autograd.grad(loss, syn)
    assert grads["loop"].abs().sum() > 0
    assert torch.isfinite(grads[method]).all()
    torch.testing.assert_close(grads[method], grads["loop"], rtol=1e-3, atol=1e-6)


def test_unequal_class_sizes_are_rejected(tiny_net):
    x, y = _batch()
    with pytest.raises(ValueError, match="multiple"):
        class_grads(tiny_net(), x[:-1], y[:-1], 3)


@pytest.mark.parametrize("method", ["loop", "batched_autograd"])
def test_a_substitute_forward_computes_the_real_side(tiny_net, method):
    """``forward`` (e.g. ``HotPath.first_order``'s compiled code) replaces ``net(x)``, first order only."""
    x, y = _batch()
    net = tiny_net()
    rows = []

    def forward(inp):
        rows.append(inp.shape[0])
        return net(inp)

    got = class_grads(net, x, y, 3, method=method, forward=forward)
    assert sum(rows) == x.shape[0]
    for a, b in zip(got, class_grads(net, x, y, 3, method=method)):
        torch.testing.assert_close(a, b)
    for a, b in zip(mean_grad(net, x, y, forward=forward), mean_grad(net, x, y)):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="first-order"):
        class_grads(net, x, y, 3, method=method, forward=forward, create_graph=True)


@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_a_chunked_mean_grad_equals_the_whole_batch(tiny_net, labels):
    """The class-collective real side in slices (``[run] real_chunk`` on a CPU) is the one mean-CE gradient."""
    x, y = _batch(per_class=5)  # 15 rows: slices of 4 leave a short last one
    if labels == "soft":
        y = torch.softmax(torch.randn(15, 3, generator=torch.Generator().manual_seed(3)), 1)
    net = tiny_net()
    rows = []

    def forward(inp):
        rows.append(inp.shape[0])
        return net(inp)

    got = mean_grad(net, x, y, forward=forward, chunk=4)
    assert rows == [4, 4, 4, 3]
    for a, b in zip(got, mean_grad(net, x, y)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert all(a.abs().sum() > 0 for a in got[-2:])
    rows.clear()
    mean_grad(net, x, y, forward=forward, chunk=15)  # no slice smaller than the batch: one pass
    assert rows == [15]
    with pytest.raises(ValueError, match="first-order"):
        mean_grad(net, x, y, chunk=4, create_graph=True)
