"""The budget rule N -> (U, V, m) and the float count, checked against hand counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddcore.errors import RecipeError
from ddcore_pca.storage import approximation_floats, plan_storage

CIFAR = dict(floats_per_image=3 * 32 * 32, basis_dim=3 * 16 * 16)


def test_cifar100_n100_matches_the_hand_count_of_facts_section_7():
    plan = plan_storage(**CIFAR, rep_dim=512, budget_images=100, num_aug=3, target_mode="approx", hidden=4)
    # 307,200 - 200*768 - 200*512 - 3*(200*4 + 4 + 4*200 + 200) = 45,788 floats of coefficients; / 400 -> 114
    assert (plan.num_bases_x, plan.num_bases_y) == (200, 200)
    assert approximation_floats(3, 200, 4) == 3 * (200 * 4 + 4 + 4 * 200 + 200) == 5412
    assert plan.m == 114
    assert plan.total_floats == 153_600 + 102_400 + 5_412 + 114 * 400 == 307_012
    assert plan.total_floats <= 100 * 3072
    assert plan.image_equivalents == pytest.approx(307_012 / 3072)


def test_table5_caps_and_explicit_bases():
    # N = 1000: 2N exceeds both dimensions -> U = 768, V = 512 by the cap rule; Table 5 uses 500/500 explicitly
    capped = plan_storage(**CIFAR, rep_dim=512, budget_images=1000)
    assert (capped.num_bases_x, capped.num_bases_y) == (768, 512)
    table5 = plan_storage(**CIFAR, rep_dim=512, budget_images=1000, num_bases_x=500, num_bases_y=500)
    assert table5.m == (1000 * 3072 - 500 * 768 - 500 * 512) // 1000 == 2432


def test_supervised_budget_is_class_major_and_ignores_representations():
    plan = plan_storage(**CIFAR, rep_dim=0, budget_images=10, num_classes=10)  # CIFAR-10, ipc 1
    # 30,720 floats - 20 bases * 768 = 15,360 -> 768 coefficient rows of 20 floats -> 76 per class
    assert plan.num_bases_x == 20 and plan.num_bases_y == 0
    assert plan.m == 760
    assert plan.total_floats == 20 * 768 + 760 * 20


def test_target_modes_count_their_extras():
    kw = dict(**CIFAR, rep_dim=512, budget_images=100, num_aug=3, hidden=4)
    same, bias = plan_storage(**kw, target_mode="same"), plan_storage(**kw, target_mode="bias")
    ideal = plan_storage(**kw, target_mode="ideal")
    assert same.extra_floats == 0 and bias.extra_floats == 3 * 200
    assert same.m == (307_200 - 256_000) // 400 == 128
    assert ideal.m == 114 and ideal.extra_floats == 3 * 114 * 200  # over budget by design (paper's upper bound)
    assert ideal.total_floats > 307_200


def test_impossible_budget_is_a_clear_recipe_error():
    with pytest.raises(RecipeError, match="cannot hold"):
        plan_storage(**CIFAR, rep_dim=512, budget_images=1, num_bases_x=200, num_bases_y=200)
    with pytest.raises(RecipeError, match="exceed the basis dimension"):
        plan_storage(**CIFAR, rep_dim=512, budget_images=10, num_bases_x=1000)
    with pytest.raises(RecipeError, match="multiple"):
        plan_storage(**CIFAR, rep_dim=0, m=15, num_classes=10)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), a=st.integers(0, 5), h=st.integers(1, 16),
       mode=st.sampled_from(["same", "bias", "approx"]), center=st.booleans())
def test_derived_m_is_the_largest_that_fits(n, a, h, mode, center):
    kw = dict(**CIFAR, rep_dim=512, budget_images=n, num_aug=a, hidden=h, target_mode=mode, center=center)
    try:
        plan = plan_storage(**kw)
    except RecipeError:
        return
    budget = n * 3072
    assert plan.total_floats <= budget
    assert plan.total_floats + plan.num_bases_x + plan.num_bases_y > budget  # one more row would not fit
