"""The ``pca_augmented`` parameterization: m(A+1) pairs, per-view targets, finalize, storage per target mode."""

from __future__ import annotations

import pytest
import torch

from ddcore.errors import RecipeError
from ddcore.testing import make_build_context, tiny_dataset
from ddcore_krr.networks import CifarResNet18
from ddcore_krr.teacher import Teacher, use_teacher
from ddcore_pca.storage import approximation_floats
from ddcore_rotations.augmented import PCAAugmented, PCAAugmentedConfig


def make_build(per_class=12, size=8):
    build = make_build_context(data=tiny_dataset(num_classes=3, per_class=per_class, shape=(3, size, size)))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        use_teacher(build, Teacher(CifarResNet18(base_width=2), key="tiny"))
    return build


def make(build=None, **options):
    options.setdefault("m", 5)
    options.setdefault("num_bases_x", 6)
    options.setdefault("num_bases_y", 4)
    options.setdefault("approx_epochs", 50)
    return PCAAugmented(PCAAugmentedConfig(**options), build or make_build())


def test_materialize_returns_all_view_pairs_view_major():
    param = make()
    syn = param.materialize()
    assert syn.images.shape == (20, 3, 8, 8) and syn.targets.shape == (20, 16)
    x = param.base_images()
    torch.testing.assert_close(syn.images[5:10], torch.rot90(x, 1, (-2, -1)))
    torch.testing.assert_close(syn.targets[5:10], param.coef_y_views[0] @ param.basis_y)
    assert any(p is param.coef_y_views for p in param.param_groups()[0]["params"])


def test_view_targets_start_as_projections_of_teacher_features_of_the_views():
    param = make(aug_target_init="paper")
    x0 = param.base_images().detach()
    feats = param.teacher(torch.rot90(x0, 2, (-2, -1)))
    torch.testing.assert_close(param.coef_y_views[1].detach(), feats @ param.basis_y.detach().T, atol=1e-5, rtol=0)


def test_gradients_reach_every_coefficient_through_the_views():
    param = make()
    syn = param.materialize()
    (syn.images[5:].square().sum() + syn.targets[5:].square().sum()).backward()  # only the augmented views
    for p in (param.coef_x, param.basis_x, param.coef_y_views, param.basis_y):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["same", "bias", "approx", "ideal"])
def test_finalize_switches_to_the_stored_targets(mode):
    param = make(targets=mode, hidden=2)
    with torch.no_grad():
        param.coef_y_views.add_(torch.randn_like(param.coef_y_views))
    before = param.materialize().targets.detach()
    mse = param.finalize()
    after = param.materialize().targets.detach()
    torch.testing.assert_close(after[:5], before[:5])  # the unaugmented targets never change
    c, b = param.coef_y.detach(), param.basis_y.detach()
    expected = {
        "same": lambda: c @ b,
        "bias": lambda: (c + (param.coef_y_views - c).mean(1)[0]) @ b,
        "approx": lambda: (c + param.approx(c)[0]) @ b,
        "ideal": lambda: param.coef_y_views[0] @ b,
    }[mode]().detach()
    torch.testing.assert_close(after[5:10], expected, atol=1e-5, rtol=1e-5)
    if mode == "approx":
        assert mse["approx"] <= mse["bias"] + 1e-6 <= mse["same"] + 1e-6
    assert param.finalize() == mse  # idempotent


def test_storage_counts_what_each_mode_stores():
    a, v, m, u, d_b, d_y = 3, 4, 5, 6, 48, 16
    base = u * d_b + v * d_y + m * (u + v)
    assert make(targets="same").storage_floats() == base
    assert make(targets="bias").storage_floats() == base + a * v
    assert make(targets="approx", hidden=4).storage_floats() == base + approximation_floats(a, v, 4)
    assert make(targets="ideal").storage_floats() == base + a * m * v


def test_no_views_is_the_plain_pca_set_and_other_view_sets_work():
    plain = make(views=())
    assert len(plain.materialize()) == 5 and plain.coef_y_views is None
    assert len(make(views=("jigsaw",)).materialize()) == 20
    assert len(make(views=("crop",), crop=5).materialize()) == 30


def test_supervised_views_repeat_labels():
    param = make(build=make_build(per_class=20), mode="supervised", m=6)
    syn = param.materialize()
    assert syn.targets is None and torch.equal(syn.labels, torch.arange(3).repeat_interleave(2).repeat(4))


def test_bad_views_are_recipe_errors():
    with pytest.raises(RecipeError, match="synset.views"):
        make(build=make_build(size=8), views=("crop",), crop=9)
