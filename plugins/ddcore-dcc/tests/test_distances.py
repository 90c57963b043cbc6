"""The three gradient distances against hand-computed values, and their batched (per-class) forms."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from ddcore_dcc.distances import EPS, global_cosine, layerwise_cosine, squared_l2

# one 2x2 "linear" weight and a bias
G_REAL = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 2.0])]
G_SYN = [torch.tensor([[2.0, 0.0], [1.0, 0.0]]), torch.tensor([5.0, 5.0])]


def test_ours_is_rowwise_one_minus_cosine_and_ignores_biases():
    # row 0: parallel -> 1 - 2/(2 + eps); row 1: orthogonal -> 1; the bias contributes nothing
    expected = (1 - 2 / (2 + EPS)) + 1.0
    assert layerwise_cosine(G_SYN, G_REAL).item() == pytest.approx(expected, abs=1e-7)
    only_bias = layerwise_cosine([G_SYN[1]], [G_REAL[1]])
    assert only_bias.item() == 0.0


def test_ours_reshapes_conv_weights_per_output_channel():
    # the same numbers as a [out=2, in=1, 1, 2] conv kernel: rows are output channels
    conv_real, conv_syn = G_REAL[0].view(2, 1, 1, 2), G_SYN[0].view(2, 1, 1, 2)
    assert layerwise_cosine([conv_syn], [conv_real]).item() == pytest.approx(layerwise_cosine(G_SYN[:1], G_REAL[:1]).item())
    # a [2, 3, 3, 3] kernel whose output channel 1 is anti-parallel: 1 - (-1) = 2 for that row, 0 for row 0
    w = torch.randn(1, 3, 3, 3)
    real = torch.cat([w, w])
    syn = torch.cat([2 * w, -w])
    assert layerwise_cosine([syn], [real]).item() == pytest.approx(2.0, abs=1e-5)


def test_mse_is_sum_of_squared_differences_over_all_tensors():
    # weight differences (1, 0, 1, -1): 1 + 0 + 1 + 1 = 3; bias differences (4, 3): 16 + 9 = 25
    assert squared_l2(G_SYN, G_REAL).item() == pytest.approx(28.0)


def test_cos_is_one_minus_cosine_of_concatenated_gradients():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 2.0])
    s = torch.tensor([2.0, 0.0, 1.0, 0.0, 5.0, 5.0])
    expected = 1 - float(r @ s) / (math.sqrt(float(r @ r) * float(s @ s)) + EPS)
    assert global_cosine(G_SYN, G_REAL).item() == pytest.approx(expected, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(groups=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_batched_distance_is_the_sum_over_groups(groups, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3, 3, 3), (4,), (5, 16), (5,)]
    real = [torch.randn(groups, *s, generator=g) for s in shapes]
    syn = [torch.randn(groups, *s, generator=g) for s in shapes]
    for fn in (layerwise_cosine, squared_l2, global_cosine):
        batched = fn(syn, real, batched=True)
        looped = sum(fn([t[i] for t in syn], [t[i] for t in real]) for i in range(groups))
        assert batched.item() == pytest.approx(looped.item(), rel=1e-5, abs=1e-5)
