"""The KRR closed form: equals least squares, is safe in float32, and passes gradients to X_s and Y_s."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ddcore_krr.krr import crop_flip, krr_predict


def _ridge_lstsq(fs: torch.Tensor, fr: torch.Tensor, ys: torch.Tensor, ridge: float, bias: bool) -> torch.Tensor:
    """Reference: primal ridge regression solved by torch.linalg.lstsq on the augmented system [F; √λ I] W = [Y; 0]."""
    fs, fr, ys = fs.double(), fr.double(), ys.double()
    if bias:
        fs = torch.cat([fs, torch.ones(fs.shape[0], 1, dtype=fs.dtype)], 1)
        fr = torch.cat([fr, torch.ones(fr.shape[0], 1, dtype=fr.dtype)], 1)
    lam = ridge * (fs * fs).sum()
    d = fs.shape[1]
    a = torch.cat([fs, lam.sqrt() * torch.eye(d, dtype=fs.dtype)])
    b = torch.cat([ys, torch.zeros(d, ys.shape[1], dtype=ys.dtype)])
    w = torch.linalg.lstsq(a, b).solution
    return fr @ w


@settings(max_examples=15, deadline=None)
@given(m=st.integers(2, 24), extra=st.integers(1, 40), b=st.integers(1, 16), k=st.integers(1, 6),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_closed_form_equals_lstsq_min_norm_solution(m, extra, b, k, bias, seed):
    """With ridge -> 0 and full-row-rank features (d > m), the dual closed form is the minimum-norm least-squares
    solution that torch.linalg.lstsq returns for the underdetermined system F_s W = Y_s."""
    g = torch.Generator().manual_seed(seed)
    d = m + extra
    fs = torch.randn(m, d, generator=g, dtype=torch.float64)
    fr = torch.randn(b, d, generator=g, dtype=torch.float64)
    ys = torch.randn(m, k, generator=g, dtype=torch.float64)
    pred = krr_predict(fs, fr, ys, ridge=0.0, bias=bias, dtype=torch.float64)
    fs_b = torch.cat([fs, torch.ones(m, 1, dtype=fs.dtype)], 1) if bias else fs
    fr_b = torch.cat([fr, torch.ones(b, 1, dtype=fr.dtype)], 1) if bias else fr
    w = torch.linalg.lstsq(fs_b, ys, driver="gelsd").solution
    torch.testing.assert_close(pred, fr_b @ w, rtol=1e-7, atol=1e-7)


@settings(max_examples=15, deadline=None)
@given(m=st.integers(2, 30), d=st.integers(1, 40), ridge=st.sampled_from([1e-6, 1e-3, 0.1]),
       variant=st.sampled_from([("solve", "auto"), ("cholesky", "auto"), ("cholesky", "dual")]),
       seed=st.integers(0, 2**16))
def test_ridge_closed_form_equals_lstsq_of_augmented_system(m, d, ridge, variant, seed):
    """For λ > 0 (any m, d, rank-deficient kernels included) the float32 prediction equals primal ridge regression
    solved by lstsq in float64."""
    solver, form = variant
    # A forced dual system with fewer features than pairs is rank-deficient (rank d + 1 < m): with a tiny ridge its
    # float32 solve loses digits, which is why form "auto" switches to the primal system there (covered above).
    assume(not (form == "dual" and d + 1 < m and ridge < 1e-3))
    g = torch.Generator().manual_seed(seed)
    fs, fr, ys = torch.randn(m, d, generator=g), torch.randn(7, d, generator=g), torch.randn(m, 3, generator=g)
    # This property is about well-conditioned systems (the ill-conditioned case has its own test below): float32
    # error grows with the condition number, e.g. two nearly equal features among m = 2 pairs.
    fs_b = torch.cat([fs, torch.ones(m, 1)], 1).double()
    gram = fs_b.T @ fs_b + ridge * (fs_b * fs_b).sum() * torch.eye(d + 1, dtype=torch.float64)
    assume(torch.linalg.cond(gram) < 1e4)
    ref = _ridge_lstsq(fs, fr, ys, ridge, bias=True)
    pred = krr_predict(fs, fr, ys, ridge=ridge, solver=solver, form=form)
    assert pred.dtype == torch.float32
    scale = ref.abs().max().clamp_min(1.0)
    assert (pred.double() - ref).abs().max() / scale < 5e-3


@pytest.mark.parametrize("d", [12, 200])
def test_float32_is_safe_on_ill_conditioned_features(d):
    """Rank-deficient kernels (near-duplicate rows; m > d for d = 12), feature scales 1e-4..1e4 and huge
    magnitudes (1e18, whose squares overflow float32): float32 predictions stay finite and within 1 % of a float64
    reference, and gradients are finite, with both solvers (form 'auto' picks the stable primal system for d < m)."""
    g = torch.Generator().manual_seed(0)
    m = 64
    base = torch.randn(m, d, generator=g)
    base[32:] = base[:32] + 1e-6 * torch.randn(32, d, generator=g)  # near-duplicate rows
    col_scale = torch.logspace(-4, 4, d)
    fr = torch.randn(20, d, generator=g) * col_scale
    ys = torch.randn(m, 5, generator=g)
    for magnitude in (1.0, 1e18):
        fs = (base * col_scale * magnitude).requires_grad_(True)
        ys_p = ys.clone().requires_grad_(True)
        ref = krr_predict(fs.detach().double(), (fr * magnitude).double(), ys.double(), ridge=1e-6,
                          dtype=torch.float64)
        for solver in ("solve", "cholesky"):
            pred = krr_predict(fs, fr * magnitude, ys_p, ridge=1e-6, solver=solver)
            assert torch.isfinite(pred).all()
            rel = (pred.double() - ref).norm() / ref.norm()
            assert rel < 1e-2, (magnitude, solver, float(rel))
            grads = torch.autograd.grad(pred.pow(2).mean(), [fs, ys_p])
            assert all(torch.isfinite(t).all() for t in grads)


def test_gradients_reach_images_and_targets(krr_build):
    """One objective evaluation through a pool network gives non-zero finite gradients to X_s and Y_s."""
    from ddcore.context import StepContext

    build, param, pool, objective = krr_build
    syn = param.materialize()
    real = build.train.sample_uniform(16, build.generator("real", 0))
    ctx = StepContext(step=0, build=build, real=real, real_raw=real, syn=syn, syn_raw=syn, nets=pool.nets(0),
                      sampler_info=pool.info(), aug_params=[])
    loss = objective(ctx)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for p in (param.images, param.targets):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # pool networks are not optimised by the outer loss: only X_s, Y_s receive the update
    assert set(id(p) for g in param.param_groups() for p in g["params"]) == {id(param.images), id(param.targets)}


def test_crop_flip_keeps_shape_and_is_deterministic():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    a = crop_flip(x, torch.Generator().manual_seed(1), pad=2, fill=torch.tensor([-1.0, -2.0, -3.0]))
    b = crop_flip(x, torch.Generator().manual_seed(1), pad=2, fill=torch.tensor([-1.0, -2.0, -3.0]))
    assert a.shape == x.shape and torch.equal(a, b)
    # every output value is either an input value of the same channel or that channel's fill
    for c, fill in enumerate((-1.0, -2.0, -3.0)):
        allowed = set(x[:, c].flatten().tolist()) | {fill}
        assert set(a[:, c].flatten().tolist()) <= allowed
    # no padding and no flip: identity
    assert torch.equal(crop_flip(x, torch.Generator().manual_seed(0), pad=0, flip=False), x)
