"""The ``pca`` parameterization on a tiny in-memory dataset with a tiny injected teacher."""

from __future__ import annotations

import pytest
import torch

from ddcore.errors import RecipeError
from ddcore.testing import make_build_context, tiny_dataset
from ddcore_krr.networks import CifarResNet18
from ddcore_krr.teacher import Teacher, use_teacher
from ddcore_pca import pca as pca_ops
from ddcore_pca.parameterization import PCAConfig, PCAParameterization


def make_build(num_classes=3, per_class=12, size=8, teacher_width=2):
    data = tiny_dataset(num_classes=num_classes, per_class=per_class, shape=(3, size, size))
    build = make_build_context(data=data)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        use_teacher(build, Teacher(CifarResNet18(base_width=teacher_width), key="tiny"))
    return build


def test_ssl_set_shapes_storage_and_init_projection():
    build = make_build()
    param = PCAParameterization(PCAConfig(budget=4, scale=2), build)
    d_b, d_y = 3 * 4 * 4, 16
    u, v = min(8, d_b), min(8, d_y)
    m = (4 * 3 * 8 * 8 - u * d_b - v * d_y) // (u + v)
    assert (param.plan.m, param.plan.num_bases_x, param.plan.num_bases_y) == (m, u, v)
    syn = param.materialize()
    assert syn.images.shape == (m, 3, 8, 8) and syn.targets.shape == (m, d_y) and syn.labels is None
    assert param.storage_floats() == u * d_b + v * d_y + m * (u + v) <= 4 * 3 * 8 * 8
    # coefficients are the projections of the init images: reconstructing them gives their best rank-U fit
    small = pca_ops.downscale(param._init_images, 2).flatten(1)
    basis = param.basis_x.detach().flatten(1)
    torch.testing.assert_close(param.coef_x.detach(), small @ basis.T)
    feats = param.teacher(param._init_images)
    torch.testing.assert_close(param.coef_y.detach(), feats @ param.basis_y.detach().T)


def test_gradients_reach_bases_and_coefficients():
    build = make_build()
    param = PCAParameterization(PCAConfig(m=5, num_bases_x=6, num_bases_y=4), build)
    syn = param.materialize()
    (syn.images.square().sum() + syn.targets.square().sum()).backward()
    for p in (param.basis_x, param.coef_x, param.basis_y, param.coef_y):
        assert p.grad is not None and p.grad.abs().sum() > 0
    names = [g["name"] for g in param.param_groups()]
    assert names == ["coefficients", "bases"]


def test_full_rank_bases_reproduce_the_downscaled_init_images():
    """With U = d_b the bases span everything: X_s = D(downscale(x_init)) exactly (in-span reconstruction)."""
    build = make_build(size=4)
    param = PCAParameterization(PCAConfig(m=4, num_bases_x=12, num_bases_y=2, scale=2), build)
    expected = pca_ops.upsample(pca_ops.downscale(param._init_images, 2), (4, 4))
    torch.testing.assert_close(param.base_images().detach(), expected, atol=1e-4, rtol=0)


def test_supervised_mode_is_class_major_with_class_index():
    build = make_build(num_classes=3, per_class=20)
    param = PCAParameterization(PCAConfig(mode="supervised", budget=3, scale=2), build)
    syn = param.materialize()
    m = param.plan.m
    assert m % 3 == 0 and syn.targets is None
    assert torch.equal(syn.labels, torch.arange(3).repeat_interleave(m // 3))
    assert torch.equal(param.class_index(param.coef_x), syn.labels)
    assert param.class_index(param.basis_x) is None
    assert param.storage_floats() <= 3 * 3 * 8 * 8


def test_table4_inits_and_frozen_bases():
    build = make_build()
    param = PCAParameterization(PCAConfig(m=4, num_bases_x=5, num_bases_y=3, basis_init="random",
                                          coef_init="random", train_bases=False), build)
    b = param.basis_x.detach().flatten(1)
    torch.testing.assert_close(b @ b.T, torch.eye(5), atol=1e-5, rtol=0)
    assert [g["name"] for g in param.param_groups()] == ["coefficients"]


def test_budget_too_small_fails_with_the_key():
    build = make_build()
    with pytest.raises(RecipeError, match="synset.budget"):
        PCAParameterization(PCAConfig(budget=1, num_bases_x=48, num_bases_y=16), build)
    with pytest.raises(RecipeError, match="images per class"):  # more images per class than the data holds
        PCAParameterization(PCAConfig(mode="supervised", budget=3), build)


def test_ssl_baselines_match_the_storage():
    build = make_build()
    param = PCAParameterization(PCAConfig(budget=4), build)
    base = param.baseline("random", 4, build.generator("baseline"))
    assert base.targets.shape == (round(4 * 192 / (192 + 16)), 16)
    torch.testing.assert_close(base.targets, param.teacher(base.images))
