"""PCA fitting, projection/reconstruction and the resolution maps (pure tensor code, no run)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddcore_pca import pca as pca_ops


def _orthonormal(k: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64)).Q.T.float()


@settings(max_examples=25, deadline=None)
@given(d=st.integers(4, 48), k=st.integers(1, 6), extra=st.integers(0, 20), chunk=st.integers(1, 17),
       seed=st.integers(0, 10_000), center=st.booleans())
def test_in_span_images_project_and_reconstruct_exactly(d, k, extra, chunk, seed, center):
    """Rows in a k-dim subspace: the fitted k components span it, so project->reconstruct is the identity."""
    k = min(k, d - 1)
    g = torch.Generator().manual_seed(seed + 1)
    basis = _orthonormal(k, d, seed)
    n = k + 2 + extra
    coef = torch.randn(n, k, generator=g) * torch.linspace(3, 1, k)
    offset = torch.randn(d, generator=g) if center else None
    rows = coef @ basis + (offset if center else 0)
    comps = pca_ops.fit_components(rows.split(chunk), d, k, center=center, method="gram")
    assert comps.basis.shape == (k, d)
    torch.testing.assert_close(comps.basis @ comps.basis.T, torch.eye(k), atol=1e-5, rtol=0)
    x = torch.randn(5, k, generator=g) @ basis + (offset if center else 0)  # new in-span rows
    c = pca_ops.project(x, comps.basis, comps.mean)
    back = pca_ops.reconstruct(c, comps.basis, comps.mean)
    torch.testing.assert_close(back, x, atol=1e-4 * (1 + x.abs().max().item()), rtol=0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 40))
def test_streamed_gram_equals_one_shot_and_is_sorted(seed, chunk):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(60, 12, generator=g) * torch.linspace(4, 0.5, 12)
    one = pca_ops.fit_components([rows], 12, 5)
    many = pca_ops.fit_components(rows.split(chunk), 12, 5)
    torch.testing.assert_close(one.basis, many.basis, atol=1e-5, rtol=0)
    assert torch.all(one.variance[:-1] >= one.variance[1:])
    # sign convention: the largest-magnitude entry of each component is positive
    idx = one.basis.abs().argmax(1)
    assert torch.all(one.basis.gather(1, idx[:, None]) > 0)


def test_lowrank_spans_the_same_subspace_as_gram_on_low_rank_data():
    basis = _orthonormal(4, 30, 3)
    g = torch.Generator().manual_seed(0)
    rows = (torch.randn(200, 4, generator=g) * torch.tensor([5.0, 4.0, 3.0, 2.0])) @ basis
    exact = pca_ops.fit_components([rows], 30, 4, method="gram")
    approx = pca_ops.fit_components([rows], 30, 4, method="lowrank", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(exact.basis.T @ exact.basis, approx.basis.T @ approx.basis, atol=1e-4, rtol=0)


def test_uncentered_components_minimise_reconstruction_without_mean():
    """center=False is the best rank-k basis for X ~ C B with no mean term (the paper's form)."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(300, 10, generator=g) + 3.0
    unc = pca_ops.fit_components([rows], 10, 2, center=False)
    cen = pca_ops.fit_components([rows], 10, 2, center=True)

    def err(comps):
        return (rows - pca_ops.reconstruct(pca_ops.project(rows, comps.basis), comps.basis)).pow(2).sum()

    assert err(unc) < err(cen)


def test_resize_maps_shapes_and_downscale_of_constant_image():
    x = torch.full((2, 3, 8, 8), 0.7)
    small = pca_ops.downscale(x, 2)
    assert small.shape == (2, 3, 4, 4)
    torch.testing.assert_close(small, torch.full_like(small, 0.7))
    torch.testing.assert_close(pca_ops.upsample(small, (8, 8)), x)
    assert pca_ops.downscale(x, 1) is x


@settings(max_examples=8, deadline=None)
@given(u=st.integers(1, 4), m=st.integers(1, 3), s=st.sampled_from([1, 2]), seed=st.integers(0, 1000))
def test_upsampled_reconstruction_gradcheck(u, m, s, seed):
    """X = D(C B, s) is differentiable w.r.t. both C and B and the analytic gradient matches finite differences."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(m, u, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(u, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)

    def images(c, b):
        flat = pca_ops.reconstruct(c, b)
        return pca_ops.upsample(flat.view(m, 2, 3, 3), (3 * s, 3 * s))

    assert torch.autograd.gradcheck(images, (c, b))


def test_upsample_is_linear_so_gradient_commutes():
    """D is linear: grad of <D(x), w> w.r.t. x equals D^T w, i.e. the vector-Jacobian product of D."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    (pca_ops.upsample(x, (8, 8)) * w).sum().backward()
    _, vjp = torch.autograd.functional.vjp(lambda t: pca_ops.upsample(t, (8, 8)), x.detach(), w)
    torch.testing.assert_close(x.grad, vjp)
    a, b = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g), torch.randn(2, 3, 4, 4, dtype=torch.float64,
                                                                                   generator=g)
    torch.testing.assert_close(pca_ops.upsample(2 * a - b, (8, 8)),
                               2 * pca_ops.upsample(a, (8, 8)) - pca_ops.upsample(b, (8, 8)))
