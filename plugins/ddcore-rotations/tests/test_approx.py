"""Approximation networks Q_a: size (storage hand count) and fitting."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddcore_pca.storage import approximation_floats
from ddcore_rotations.approx import ApproximationNets, fit_approximation


@settings(max_examples=20, deadline=None)
@given(a=st.integers(1, 5), v=st.integers(1, 64), h=st.integers(1, 16))
def test_parameter_count_is_a_two_layer_mlp_per_view(a, v, h):
    nets = ApproximationNets(a, v, h)
    assert nets.num_floats() == a * (v * h + h + h * v + v) == approximation_floats(a, v, h)
    assert nets(torch.randn(7, v)).shape == (a, 7, v)


def test_batched_nets_equal_separate_mlps():
    nets = ApproximationNets(2, 5, 3)
    torch.nn.init.normal_(nets.w2)
    c = torch.randn(4, 5)
    out = nets(c)
    for a in range(2):
        ref = torch.relu(c @ nets.w1[a] + nets.b1[a]) @ nets.w2[a] + nets.b2[a]
        torch.testing.assert_close(out[a], ref)


def test_fit_beats_the_bias_model_on_a_learnable_shift():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(120, 8, generator=g)
    direction = torch.randn(2, 8, generator=g)
    shifts = torch.stack([torch.relu(c[:, :1]) * direction[0] + 0.5, -torch.relu(c[:, 1:2]) * direction[1]])
    bias_mse = float((shifts - shifts.mean(1, keepdim=True)).pow(2).mean())
    nets = ApproximationNets(2, 8, 4)
    mse = fit_approximation(nets, c, shifts, epochs=800, lr=2e-2, generator=torch.Generator().manual_seed(1))
    assert mse < 0.5 * bias_mse
    torch.testing.assert_close(torch.tensor(mse), (nets(c) - shifts).pow(2).mean(), rtol=1e-5, atol=1e-7)


def test_fit_never_ends_worse_than_the_bias_model():
    g = torch.Generator().manual_seed(2)
    c, shifts = torch.randn(30, 6, generator=g), torch.randn(3, 30, 6, generator=g)  # pure noise: nothing to learn
    bias_mse = float((shifts - shifts.mean(1, keepdim=True)).pow(2).mean())
    mse = fit_approximation(ApproximationNets(3, 6, 2), c, shifts, epochs=50, lr=0.5)
    assert mse <= bias_mse + 1e-6
