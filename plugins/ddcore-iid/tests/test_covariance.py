"""Covariance matching: official formula, zero for identical batches, invariant to feature shifts."""

from __future__ import annotations

import hypothesis.strategies as st
import torch
from hypothesis import given, settings

from ddcore.types import RealBatch, SynBatch
from ddcore_iid.covariance import (CovarianceMatching, CovarianceMatchingConfig, class_covariances,
                                   covariance_matching_loss)


def _official_class_loss(real_c, syn_c):
    """main_DM_IID.py: per class, batch-mean-centred [B, C, HW] maps, D D^T averaged over the batch, sum of squares."""
    def cov(x):
        d = x - x.mean(0, keepdim=True)
        return torch.stack([di @ di.T for di in d]).mean(0)
    return ((cov(syn_c) - cov(real_c)) ** 2).sum()


def _maps(k, n, c, p, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k * n, c, p, generator=g)
    return x, torch.arange(k).repeat_interleave(n)


@given(k=st.integers(1, 4), n=st.integers(1, 5), m=st.integers(1, 4), c=st.integers(1, 5), p=st.integers(1, 6),
       seed=st.integers(0, 999))
@settings(max_examples=40, deadline=None)
def test_matches_the_official_per_class_formula(k, n, m, c, p, seed):
    real, real_ids = _maps(k, n, c, p, seed)
    syn, syn_ids = _maps(k, m, c, p, seed + 1)
    expected = sum(_official_class_loss(real[real_ids == j], syn[syn_ids == j]) for j in range(k))
    torch.testing.assert_close(covariance_matching_loss(real, real_ids, syn, syn_ids, k), expected,
                               rtol=1e-4, atol=1e-5)


@given(k=st.integers(1, 4), n=st.integers(1, 5), c=st.integers(1, 5), p=st.integers(1, 6), seed=st.integers(0, 999))
@settings(max_examples=40, deadline=None)
def test_zero_for_identical_batches_and_invariant_to_shifts(k, n, c, p, seed):
    x, ids = _maps(k, n, c, p, seed)
    assert covariance_matching_loss(x, ids, x.clone(), ids, k) == 0
    g = torch.Generator().manual_seed(seed + 7)
    per_class_shift = torch.randn(k, c, p, generator=g) * 10
    shifted = x + per_class_shift[ids]
    torch.testing.assert_close(class_covariances(shifted, ids, k), class_covariances(x, ids, k), rtol=1e-4, atol=1e-4)
    y, _ = _maps(k, n, c, p, seed + 3)
    base = covariance_matching_loss(x, ids, y, ids, k)
    torch.testing.assert_close(covariance_matching_loss(x, ids, y + per_class_shift[ids], ids, k), base,
                               rtol=1e-3, atol=1e-3)


def test_order_of_rows_does_not_matter():
    x, ids = _maps(3, 4, 2, 3, 0)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(class_covariances(x[perm], ids[perm], 3), class_covariances(x, ids, 3))


def test_objective_on_the_step_net_gradient_only_to_syn(tiny_net, stub_build, step_ctx):
    net = tiny_net().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    real = RealBatch(images=torch.randn(12, 3, 8, 8, generator=g), labels=torch.arange(3).repeat_interleave(4),
                     indices=torch.arange(12), per_class=4)
    syn = SynBatch(images=torch.randn(6, 3, 8, 8, generator=g, requires_grad=True),
                   labels=torch.arange(3).repeat_interleave(2))
    term = CovarianceMatching(CovarianceMatchingConfig(), None)
    loss = term(step_ctx(stub_build(3), real, syn, [net]))
    fr = net.forward_all(real.images).feature_map.flatten(2)
    fs = net.forward_all(syn.images).feature_map.flatten(2)
    expected = sum(_official_class_loss(fr[4 * c:4 * c + 4], fs[2 * c:2 * c + 2]) for c in range(3))
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    loss.backward()
    assert syn.images.grad.abs().sum() > 0
    same = SynBatch(images=real.images.clone(), labels=real.labels)
    assert term(step_ctx(stub_build(3), real, same, [net])) < 1e-6
