"""Predefined views: exactness, group identities, gradients, and the expansion augmentation."""

from __future__ import annotations

import kornia
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddcore.types import SynBatch
from ddcore_rotations.expansion import PredefinedViews, PredefinedViewsConfig
from ddcore_rotations.views import SETS, VIEW_NAMES, apply_views, expand_names, make_view

images = st.builds(
    lambda n, c, s, seed: torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed)),
    st.integers(1, 3), st.integers(1, 3), st.sampled_from([2, 4, 6, 8]), st.integers(0, 10_000),
)


@settings(max_examples=30, deadline=None)
@given(x=images)
def test_four_quarter_turns_are_the_identity(x):
    rot = make_view("rot90")
    assert torch.equal(rot(rot(rot(rot(x)))), x)
    assert torch.equal(make_view("rot180")(x), rot(rot(x)))
    assert torch.equal(make_view("rot270")(x), rot(rot(rot(x))))
    assert torch.equal(make_view("rot180")(x), kornia.geometry.transform.rot180(x))  # exact, as kornia's


@settings(max_examples=30, deadline=None)
@given(x=images)
def test_jigsaw_swaps_quadrants_and_is_an_involution(x):
    lr, tb, both = (make_view(n) for n in SETS["jigsaw"])
    h, w = x.shape[-2:]
    assert torch.equal(lr(x)[..., :, : w // 2], x[..., :, w // 2:])
    assert torch.equal(tb(x)[..., : h // 2, :], x[..., h // 2:, :])
    assert torch.equal(both(x), lr(tb(x)))
    for view in (lr, tb, both):
        assert torch.equal(view(view(x)), x)


def test_five_crops_take_the_paper_windows():
    x = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32)  # every pixel distinct
    for name, (top, left) in {"crop_tl": (0, 0), "crop_tr": (0, 12), "crop_bl": (12, 0), "crop_br": (12, 12),
                              "crop_center": (6, 6)}.items():
        out = make_view(name)(x)
        window = x[..., top:top + 20, left:left + 20]
        assert out.shape == x.shape
        # bilinear upsampling of the 20x20 window: values stay inside it, corners are its corners, means agree
        assert window.min() <= out.min() and out.max() <= window.max()
        assert out[..., 0, 0] == window[..., 0, 0] and out[..., -1, -1] == window[..., -1, -1]
        assert abs(float(out.mean() - window.mean())) < 1e-3 * float(window.mean())
    assert make_view("crop_center", crop=4)(torch.ones(2, 3, 8, 8)).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_every_view_passes_gradcheck(name):
    """Views are differentiable and their gradients are the exact adjoints (rotations/jigsaw: permutations)."""
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(make_view(name, crop=2), (x,))


def test_rotation_commutes_with_the_gradient():
    """grad of L(rot(x)) equals rot^{-1}(grad of L at rot(x))."""
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    (make_view("rot90")(x) * w).sum().backward()
    assert torch.equal(x.grad, make_view("rot270")(w))


def test_expand_names_and_errors():
    assert expand_names(["rotation"]) == ("rot90", "rot180", "rot270")
    assert len(expand_names(["crop", "jigsaw_lr"])) == 6
    with pytest.raises(ValueError, match="unknown view"):
        expand_names(["rot46x"])
    with pytest.raises(ValueError, match="twice"):
        expand_names(["rotation", "rot90"])
    with pytest.raises(ValueError, match="square"):
        make_view("rot90")(torch.zeros(1, 1, 4, 6))


def test_apply_views_is_view_major():
    x = torch.randn(3, 1, 4, 4)
    out = apply_views(x, [make_view("rot90"), make_view("rot180")])
    assert out.shape == (9, 1, 4, 4)
    assert torch.equal(out[:3], x) and torch.equal(out[3:6], torch.rot90(x, 1, (-2, -1)))


def test_predefined_views_expansion_repeats_labels_and_targets():
    aug = PredefinedViews(PredefinedViewsConfig(views=("rotation",)), build=None)
    syn = SynBatch(images=torch.randn(4, 3, 8, 8), labels=torch.tensor([0, 0, 1, 1]), targets=torch.randn(4, 5))
    out = aug.expand(syn)
    assert len(out) == 16
    assert torch.equal(out.labels, syn.labels.repeat(4))
    assert torch.equal(out.targets[8:12], syn.targets)
    assert torch.equal(out.images[4:8], torch.rot90(syn.images, 1, (-2, -1)))


def test_kornia_exact_views_and_quarter_turns_agree_with_kornia():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert make_view("rot180") is kornia.geometry.transform.rot180
    assert torch.equal(make_view("hflip")(x), x.flip(-1)) and torch.equal(make_view("vflip")(x), x.flip(-2))
    # the exact quarter turn goes the way of kornia's positive angles (kornia's own is resampled, not exact)
    resampled = kornia.geometry.transform.rotate(x, torch.full((2,), 90.0), align_corners=True)
    torch.testing.assert_close(make_view("rot90")(x), resampled, atol=1e-5, rtol=0)


def test_non_right_angle_rotations_go_through_kornia_and_carry_gradients():
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert expand_names(["rotation8"]) == ("rot45", "rot90", "rot135", "rot180", "rot225", "rot270", "rot315")
    assert expand_names(["rot30", "flip"]) == ("rot30", "hflip", "vflip")
    out = make_view("rot45")(x)
    want = kornia.geometry.transform.rotate(x, torch.full((2,), 45.0), align_corners=True)
    assert torch.equal(out, want)
    assert torch.equal(make_view("rot45")(make_view("rot45")(x))[:, :, 4, 4], make_view("rot90")(x)[:, :, 4, 4])
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="rot<degrees>"):
        expand_names(["rot360"])


def test_predefined_views_expansion_with_rotation8():
    syn = SynBatch(torch.randn(4, 3, 8, 8), torch.tensor([0, 0, 1, 1]))
    aug = PredefinedViews(PredefinedViewsConfig(views=("rotation8",)), None)
    out = aug.expand(syn)
    assert out.images.shape == (32, 3, 8, 8) and out.labels.tolist() == [0, 0, 1, 1] * 8
