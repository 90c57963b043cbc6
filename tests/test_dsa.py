"""Tests of Differentiable Siamese Augmentation (ddcore.augment.dsa) and its registration as ``dsa``."""

from __future__ import annotations

import math

import pluggy
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddcore
from ddcore import hookspecs
from ddcore.augment import dsa
from ddcore.config import structure
from ddcore.errors import RecipeError
from ddcore.registry import Registry

FAST = settings(max_examples=30, deadline=None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int, c: int = 3, h: int = 8, w: int = 8, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=gen(seed), dtype=dtype)


def one_family(name: str, **kw) -> dsa.DSAConfig:
    return dsa.DSAConfig(strategy=name, mode="all", **kw)


# --------------------------------------------------------------------------------------------- config


def test_defaults_are_the_official_param_diff_aug():
    c = dsa.DSAConfig()
    assert c.strategy == "color_crop_cutout_flip_scale_rotate" and c.mode == "single"
    assert (c.prob_flip, c.ratio_scale, c.ratio_rotate, c.ratio_crop_pad, c.ratio_cutout) == (0.5, 1.2, 15.0, 0.125, 0.5)
    assert (c.brightness, c.saturation, c.contrast) == (1.0, 2.0, 0.5)


@pytest.mark.parametrize("bad", ["color_blur", "colour", "color__crop", "color_crop_color"])
def test_bad_strategy_is_a_recipe_error_listing_tokens(bad):
    with pytest.raises(RecipeError) as info:
        structure(dsa.DSAConfig, {"strategy": bad}, key="augment[0]")
    msg = str(info.value)
    assert "augment[0].strategy" in msg
    for token in dsa.FAMILIES:
        assert token in msg


@pytest.mark.parametrize("key,value", [("mode", "M"), ("prob_flip", 1.5), ("ratio_scale", 0.8), ("contrast", -0.1)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(RecipeError, match=f"augment.{key}"):
        structure(dsa.DSAConfig, {key: value}, key="augment")


def test_none_strategy_is_identity():
    x = images(4)
    for strategy in ("none", "None", ""):
        cfg = dsa.DSAConfig(strategy=strategy)
        p = dsa.sample_params(strategy, 2, gen(0), "cpu", cfg)
        assert p.families == ()
        assert torch.equal(dsa.apply(x, p, torch.tensor([0, 1, 0, 1])), x)
        assert torch.equal(dsa.random(x, gen(0), strategy, cfg), x)


# --------------------------------------------------------------------------------------------- siamese


@pytest.mark.parametrize("family", dsa.FAMILIES)
def test_same_params_same_output_for_each_family(family):
    cfg = one_family(family)
    x = images(6, h=9, w=7)
    groups = torch.tensor([0, 1, 2, 0, 1, 2])
    p = dsa.sample_params(family, 3, gen(3), "cpu", cfg)
    assert torch.equal(dsa.apply(x, p, groups), dsa.apply(x.clone(), p, groups))
    # Siamese across batches: the same image of group g gets the same transform in a differently composed batch
    # (the real batch and the synthetic batch of a class).
    real = dsa.apply(x, p, groups)
    order = torch.tensor([4, 0, 5])
    syn = dsa.apply(x[order], p, groups[order])
    torch.testing.assert_close(syn, real[order], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", dsa.FAMILIES)
def test_samples_of_one_group_share_the_transform(family):
    base = images(1, h=8, w=8, seed=5)
    x = base.expand(8, -1, -1, -1).contiguous()
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    p = dsa.sample_params(family, 2, gen(11), "cpu", one_family(family))
    y = dsa.apply(x, p, groups)
    for i in range(1, 4):
        assert torch.equal(y[i], y[0]) and torch.equal(y[4 + i], y[4])


@pytest.mark.parametrize("dispatch", ["gather", "mask"])
def test_groups_may_choose_different_families(dispatch):
    cfg = dsa.DSAConfig()
    num_groups = 24
    p = dsa.sample_params(cfg.strategy, num_groups, gen(2), "cpu", cfg)
    assert torch.equal(p.active.sum(1), torch.ones(num_groups, dtype=torch.long))
    assert len(set(p.active.float().argmax(1).tolist())) > 1
    groups = torch.randint(0, num_groups, (60,), generator=gen(4))
    x = images(60, h=10, w=12)
    y = dsa.apply(x, p, groups, dispatch=dispatch)
    # Reference: every sample on its own with its group's single family.
    for i in range(60):
        g = int(groups[i])
        fam = p.families[int(p.active[g].float().argmax())]
        ref = dsa._family_op(fam, x[i : i + 1], p, groups[i : i + 1])
        torch.testing.assert_close(y[i : i + 1], ref, rtol=0, atol=1e-6)


def test_gather_and_mask_dispatch_agree_with_gradients():
    cfg = dsa.DSAConfig()
    p = dsa.sample_params(cfg.strategy, 12, gen(8), "cpu", cfg)
    groups = torch.arange(36) % 12
    w = images(36, h=6, w=6, seed=9)
    grads = []
    outs = []
    for dispatch in ("gather", "mask"):
        x = images(36, h=6, w=6).requires_grad_(True)
        y = dsa.apply(x, p, groups, dispatch=dispatch)
        (y * w).sum().backward()
        outs.append(y.detach())
        grads.append(x.grad)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)


def test_hand_made_layouts_fall_back_to_masks():
    import attrs

    cfg = dsa.DSAConfig()
    p = dsa.sample_params(cfg.strategy, 3, gen(4), "cpu", cfg)
    active = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    p = attrs.evolve(p, active=active)
    groups = torch.tensor([0, 1, 2, 2, 0])
    x = images(5)
    y = dsa.apply(x, p, groups, dispatch="gather")
    torch.testing.assert_close(y, dsa.apply(x, p, groups, dispatch="mask"), rtol=0, atol=0)
    assert torch.equal(y[1], x[1])
    ref0 = dsa._family_op("flip", dsa._family_op("color", x[:1], p, groups[:1]), p, groups[:1])
    assert torch.equal(y[0], ref0[0])


def test_mode_all_applies_every_family_in_strategy_order():
    cfg = dsa.DSAConfig(mode="all")
    p = dsa.sample_params(cfg.strategy, 2, gen(6), "cpu", cfg)
    assert bool(p.active.all())
    groups = torch.tensor([0, 1, 1])
    x = images(3, h=8, w=8)
    ref = x
    for fam in cfg.strategy.split("_"):
        ref = dsa._family_op(fam, ref, p, groups)
    torch.testing.assert_close(dsa.apply(x, p, groups), ref, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------- randomness


def test_same_seed_same_output_different_seed_different():
    cfg = dsa.DSAConfig()
    x = images(40)
    groups = torch.arange(40) % 10
    a = dsa.apply(x, dsa.sample_params(cfg.strategy, 10, gen(123), "cpu", cfg), groups)
    b = dsa.apply(x, dsa.sample_params(cfg.strategy, 10, gen(123), "cpu", cfg), groups)
    c = dsa.apply(x, dsa.sample_params(cfg.strategy, 10, gen(124), "cpu", cfg), groups)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(dsa.random(x, gen(5), cfg.strategy, cfg), dsa.random(x, gen(5), cfg.strategy, cfg))
    assert not torch.allclose(dsa.random(x, gen(5), cfg.strategy, cfg), dsa.random(x, gen(6), cfg.strategy, cfg))


def test_sampling_uses_only_the_given_generator():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    cfg = dsa.DSAConfig()
    dsa.sample_params(cfg.strategy, 5, gen(1), "cpu", cfg)
    dsa.random(images(4), gen(1), cfg.strategy, cfg)
    assert torch.equal(torch.get_rng_state(), before)


def test_random_picks_one_family_per_call_with_per_sample_magnitudes():
    cfg = dsa.DSAConfig(strategy="flip_cutout")
    x = torch.rand(16, 3, 8, 8, generator=gen(0)) + 1.0  # strictly positive: zeros only come from cutout
    seen = set()
    g = gen(42)
    for _ in range(12):
        y = dsa.random(x, g, cfg.strategy, cfg)
        has_hole = (y == 0).flatten(1).any(1)
        assert int(has_hole.sum()) in (0, 16)  # all samples cutout, or none
        fam = "cutout" if bool(has_hole.all()) else "flip"
        seen.add(fam)
        if fam == "cutout":  # per-sample magnitudes: the holes are not all at the same place
            assert len({tuple((y[i, 0] == 0).nonzero()[0].tolist()) for i in range(16)}) > 1
    assert seen == {"flip", "cutout"}
    p = dsa.sample_params(cfg.strategy, 30, gen(3), "cpu", cfg, one_family=True)
    assert bool((p.active == p.active[0]).all()) and int(p.active[0].sum()) == 1
    assert len(set(p.rotate.tolist())) == 30


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    ratio_scale=st.floats(1.0, 3.0),
    ratio_rotate=st.floats(0.0, 180.0),
    bright=st.floats(0.0, 4.0),
    sat=st.floats(0.0, 4.0),
    con=st.floats(0.0, 2.0),
    crop_pad=st.floats(0.0, 0.5),
    cut=st.floats(0.0, 1.0),
    hw=st.tuples(st.integers(1, 40), st.integers(1, 40)),
)
def test_magnitudes_stay_in_documented_ranges(seed, ratio_scale, ratio_rotate, bright, sat, con, crop_pad, cut, hw):
    cfg = dsa.DSAConfig(ratio_scale=ratio_scale, ratio_rotate=ratio_rotate, brightness=bright, saturation=sat,
                        contrast=con, ratio_crop_pad=crop_pad, ratio_cutout=cut)
    p = dsa.sample_params(cfg.strategy, 64, gen(seed), "cpu", cfg)
    eps = 1e-5
    assert bool((p.brightness.abs() <= bright / 2 + eps).all())
    assert bool(((p.saturation >= 0) & (p.saturation <= sat + eps)).all())
    assert bool(((p.contrast >= con) & (p.contrast <= con + 1 + eps)).all())
    assert bool(((p.scale >= 1 / ratio_scale - eps) & (p.scale <= ratio_scale + eps)).all())
    assert bool((p.rotate.abs() <= math.radians(ratio_rotate) + eps).all())
    shifts = dsa.crop_shifts(p.crop_u, hw, crop_pad)
    for axis in (0, 1):
        s = int(hw[axis] * crop_pad + 0.5)
        assert bool((shifts[:, axis].abs() <= s).all())
    k = dsa.cutout_size(hw, cut)
    centers = dsa.cutout_centers(p.cutout_u, hw, cut)
    for axis in (0, 1):
        assert bool(((centers[:, axis] >= 0) & (centers[:, axis] <= hw[axis] - (k[axis] % 2))).all())


def test_discrete_draws_cover_their_ranges_uniformly():
    cfg = dsa.DSAConfig()
    n = 6000
    p = dsa.sample_params(cfg.strategy, n, gen(0), "cpu", cfg)
    counts = p.active.sum(0)
    assert bool((counts > n / 6 * 0.85).all()) and bool((counts < n / 6 * 1.15).all())
    shifts = dsa.crop_shifts(p.crop_u, (32, 32), 0.125)
    assert set(shifts[:, 0].tolist()) == set(range(-4, 5))
    centers = dsa.cutout_centers(p.cutout_u, (32, 32), 0.5)
    assert set(centers[:, 1].tolist()) == set(range(0, 33))  # even side 16: randint(0, 33)
    assert 0.45 < p.flip.float().mean().item() < 0.55


# --------------------------------------------------------------------------------------------- ops


def test_flip_is_an_involution_and_mirrors_width():
    x = images(5, h=4, w=7)
    m = torch.tensor([True, False, True, True, False])
    assert torch.equal(dsa.flip(dsa.flip(x, m), m), x)
    y = dsa.flip(x, m)
    assert torch.equal(y[0], x[0].flip(2)) and torch.equal(y[1], x[1])


def test_crop_hand_example():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    y = dsa.crop(x, torch.tensor([[1, -2]]))  # out[i, j] = x[i + 1, j - 2]
    expected = torch.tensor([[0, 0, 5, 6], [0, 0, 9, 10], [0, 0, 13, 14], [0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(y[0, 0], expected)
    # Shifts beyond the padding clamp onto the zero border (official clamp to [0, H + 1]).
    assert torch.equal(dsa.crop(x, torch.tensor([[5, 0]])), torch.zeros_like(x))


@FAST
@given(n=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7), seed=st.integers(0, 1000))
def test_crop_matches_naive_translation(n, h, w, seed):
    x = torch.randn(n, 2, h, w, generator=gen(seed))
    shift = torch.randint(-h, h + 1, (n, 2), generator=gen(seed + 1))
    y = dsa.crop(x, shift)
    expected = torch.zeros_like(x)
    for k in range(n):
        dy, dx = int(shift[k, 0]), int(shift[k, 1])
        for i in range(h):
            for j in range(w):
                if 0 <= i + dy < h and 0 <= j + dx < w:
                    expected[k, :, i, j] = x[k, :, i + dy, j + dx]
    assert torch.equal(y, expected)


def test_cutout_hand_examples():
    x = torch.ones(2, 1, 6, 6)
    k = dsa.cutout_size((6, 6), 0.5)
    assert k == (3, 3)  # int(6 * 0.5 + 0.5)
    y = dsa.cutout(x, torch.tensor([[0, 5], [3, 3]]), k)
    hole0 = torch.zeros(6, 6, dtype=torch.bool)
    hole0[0:2, 4:6] = True  # rows -1..1, cols 4..6, clipped
    hole1 = torch.zeros(6, 6, dtype=torch.bool)
    hole1[2:5, 2:5] = True
    assert torch.equal(y[0, 0] == 0, hole0) and torch.equal(y[1, 0] == 0, hole1)
    x4 = torch.ones(1, 1, 4, 4)
    y4 = dsa.cutout(x4, torch.tensor([[4, 2]]), dsa.cutout_size((4, 4), 0.5))  # side 2: rows 3..4, cols 1..2
    hole = torch.zeros(4, 4, dtype=torch.bool)
    hole[3, 1:3] = True
    assert torch.equal(y4[0, 0] == 0, hole)


@FAST
@given(h=st.integers(1, 9), w=st.integers(1, 9), ratio=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_cutout_matches_official_clamped_scatter(h, w, ratio, seed):
    x = torch.rand(3, 2, h, w, generator=gen(seed)) + 1.0
    k = dsa.cutout_size((h, w), ratio)
    centers = dsa.cutout_centers(torch.rand(3, 2, generator=gen(seed + 1)), (h, w), ratio)
    y = dsa.cutout(x, centers, k)
    mask = torch.ones(3, h, w)
    for n in range(3):
        for a in range(k[0]):
            for b in range(k[1]):
                r = min(max(a + int(centers[n, 0]) - k[0] // 2, 0), h - 1)
                c = min(max(b + int(centers[n, 1]) - k[1] // 2, 0), w - 1)
                mask[n, r, c] = 0
    assert torch.equal(y, x * mask.unsqueeze(1))


def test_color_ops_match_their_formulas():
    x = images(4, dtype=torch.float64)
    b, s, c = torch.rand(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    v = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
    torch.testing.assert_close(dsa.brightness(x, b), x + v(b))
    m = x.mean(1, keepdim=True)
    torch.testing.assert_close(dsa.saturation(x, s), (x - m) * v(s) + m)
    m = x.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(dsa.contrast(x, c), (x - m) * v(c) + m)


def test_affine_ops_follow_grid_sample_conventions():
    x = images(3, h=6, w=6)
    # Identity parameters reproduce the input (align_corners=False maps pixel centres onto themselves).
    torch.testing.assert_close(dsa.scale(x, torch.ones(3, 2)), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(dsa.rotate(x, torch.zeros(3)), x, rtol=0, atol=1e-5)
    # Rotation by 90 degrees of a square image is an exact pixel permutation: rot90 (counter-clockwise sampling).
    y = dsa.rotate(x, torch.full((3,), math.pi / 2))
    torch.testing.assert_close(y, torch.rot90(x, k=1, dims=(2, 3)), rtol=0, atol=1e-5)
    # sx = 2 samples at twice the width coordinate: the content shrinks horizontally, zeros come in at the sides.
    z = dsa.scale(torch.ones(1, 1, 4, 8), torch.tensor([[2.0, 1.0]]))
    assert torch.equal(z[0, 0, :, 0], torch.zeros(4)) and torch.equal(z[0, 0, :, 3:5], torch.ones(4, 2))


@pytest.mark.parametrize("family", dsa.FAMILIES)
def test_gradcheck_each_family(family):
    cfg = one_family(family)
    p = dsa.sample_params(family, 2, gen(7), "cpu", cfg)
    groups = torch.tensor([0, 1, 1])
    x = images(3, c=2, h=5, w=6, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, p, groups), (x,))


@pytest.mark.parametrize("dispatch", ["gather", "mask"])
def test_gradcheck_mixed_families(dispatch):
    cfg = dsa.DSAConfig()
    p = dsa.sample_params(cfg.strategy, 6, gen(1), "cpu", cfg)
    groups = torch.arange(6)
    x = images(6, c=2, h=4, w=3, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, p, groups, dispatch=dispatch), (x,))
    small = images(6, c=1, h=3, w=3, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda t: dsa.apply(t, p, groups, dispatch=dispatch), (small,))


# --------------------------------------------------------------------------------------------- component


def test_registered_component_is_a_siamese_augmentation():
    pm = pluggy.PluginManager("ddcore")
    pm.add_hookspecs(hookspecs)
    from ddcore.builtin import augmentations

    pm.register(augmentations, "ddcore")
    registry = Registry()
    pm.hook.ddcore_register_augmentations(registry=registry.bind("augmentation", "ddcore", "ddcore"))
    entry = registry.get("augmentation", "dsa")
    config = entry.structure({"strategy": "color_crop_cutout_scale_rotate"}, key="augment[0]")
    aug = entry.factory(config, None)
    assert isinstance(aug, ddcore.Augmentation) and aug.kind == "siamese"
    x = images(8)
    groups = torch.arange(8) // 4
    params = aug.sample(2, gen(0), torch.device("cpu"))
    assert params.num_groups == 2 and "flip" not in params.families
    assert torch.equal(aug.apply(x, params, groups), dsa.apply(x, params, groups))
    assert torch.equal(aug.random(x, gen(3)), dsa.random(x, gen(3), config.strategy, config))
    module = dsa.DSAModule(config)
    assert torch.equal(module(x, params, groups), aug.apply(x, params, groups))
    assert torch.equal(module(x, generator=gen(3)), aug.random(x, gen(3)))
