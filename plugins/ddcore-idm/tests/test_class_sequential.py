"""class_sequential_sgd == IDM's per-class loop of SGD(momentum) steps, without the per-class forward loop."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings

from ddcore.errors import RecipeError
from ddcore_idm.class_sequential import ClassSequentialSGD, ClassSequentialSGDConfig
from ddcore_idm.partition import partition_expand

K, IPC, PER_CLASS = 3, 2, 4


class _Pixels:
    """The parameterization surface the optimizer uses: class_index of the one image tensor."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def class_index(self, param):
        return self.labels if param is self.images else None


def _class_losses(net, real, real_labels, syn, syn_labels, ce_weight=0.3):
    """IDM's loss_c for every class from ONE forward of the expanded synthetic set: mean matching + CE, per class."""
    x = partition_expand(syn, 2)
    y = syn_labels.repeat_interleave(4)
    out = net.forward_all(x)
    with torch.no_grad():
        real_emb = net.embed(real)
    losses = []
    for c in range(K):  # cheap per-class reductions of one forward (the test's reference needs per-class values)
        m_r = real_emb[real_labels == c].mean(0)
        m_s = out.embedding[y == c].mean(0)
        ce = F.cross_entropy(out.logits[y == c], y[y == c])
        losses.append(((m_r - m_s) ** 2).sum() + ce_weight * ce)
    return losses


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(K * PER_CLASS, 3, 8, 8, generator=g)
    real_labels = torch.arange(K).repeat_interleave(PER_CLASS)
    syn0 = torch.randn(K * IPC, 3, 8, 8, generator=g)
    syn_labels = torch.arange(K).repeat_interleave(IPC)
    return real, real_labels, syn0, syn_labels


def _reference_loop(net, real, real_labels, syn0, syn_labels, iterations, lr, momentum):
    """The official structure: for each class, its own forward, backward and SGD step on the whole tensor."""
    syn = syn0.clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=lr, momentum=momentum)
    for _ in range(iterations):
        for c in range(K):
            rows = syn_labels == c
            x = partition_expand(syn[rows], 2)
            out = net.forward_all(x)
            with torch.no_grad():
                m_r = net.embed(real[real_labels == c]).mean(0)
            y = torch.full((x.shape[0],), c)
            loss_c = ((m_r - out.embedding.mean(0)) ** 2).sum() + 0.3 * F.cross_entropy(out.logits, y)
            opt.zero_grad()
            loss_c.backward()
            opt.step()
    return syn.detach()


def _ours(net, real, real_labels, syn0, syn_labels, iterations, lr, momentum, build):
    syn = syn0.clone().requires_grad_(True)
    opt = ClassSequentialSGD(ClassSequentialSGDConfig(lr=lr, momentum=momentum), build,
                             param_groups=[{"name": "images", "params": [syn]}],
                             parameterization=_Pixels(syn, syn_labels), total_steps=iterations)
    for _ in range(iterations):
        opt.prepare()
        loss = sum(_class_losses(net, real, real_labels, syn, syn_labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return syn.detach(), opt


@pytest.fixture
def frozen_net(tiny_net):
    net = tiny_net(num_classes=K)
    net.requires_grad_(False)
    return net


def test_equals_the_per_class_reference_loop(frozen_net, stub_build):
    real, real_labels, syn0, syn_labels = _setup()
    ref = _reference_loop(frozen_net, real, real_labels, syn0, syn_labels, iterations=4, lr=0.2, momentum=0.5)
    ours, _ = _ours(frozen_net, real, real_labels, syn0, syn_labels, 4, 0.2, 0.5, stub_build(K))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert (ours - syn0).abs().max() > 1e-3  # the images did move


def test_differs_from_one_summed_sgd_step(frozen_net, stub_build):
    real, real_labels, syn0, syn_labels = _setup()
    ref = _reference_loop(frozen_net, real, real_labels, syn0, syn_labels, iterations=3, lr=0.2, momentum=0.5)
    syn = syn0.clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.2, momentum=0.5)
    for _ in range(3):
        loss = sum(_class_losses(frozen_net, real, real_labels, syn, syn_labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (syn.detach() - ref).abs().max() > 1e-4


@given(momentum=st.floats(0.0, 0.95), lr=st.floats(0.01, 1.0), seed=st.integers(0, 50))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_equivalence_for_other_momenta(tiny_net, stub_build, momentum, lr, seed):
    net = tiny_net(num_classes=K, seed=seed).requires_grad_(False)
    real, real_labels, syn0, syn_labels = _setup(seed)
    ref = _reference_loop(net, real, real_labels, syn0, syn_labels, 2, lr, momentum)
    ours, _ = _ours(net, real, real_labels, syn0, syn_labels, 2, lr, momentum, stub_build(K))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_resume_from_state_dict_continues_identically(frozen_net, stub_build):
    real, real_labels, syn0, syn_labels = _setup()
    full, _ = _ours(frozen_net, real, real_labels, syn0, syn_labels, 4, 0.2, 0.5, stub_build(K))
    half, opt = _ours(frozen_net, real, real_labels, syn0, syn_labels, 2, 0.2, 0.5, stub_build(K))
    syn = half.clone().requires_grad_(True)
    opt2 = ClassSequentialSGD(ClassSequentialSGDConfig(), stub_build(K), param_groups=[{"params": [syn]}],
                              parameterization=_Pixels(syn, syn_labels))
    opt2.load_state_dict(opt.state_dict())
    for _ in range(2):
        opt2.prepare()
        loss = sum(_class_losses(frozen_net, real, real_labels, syn, syn_labels))
        opt2.zero_grad()
        loss.backward()
        opt2.step()
    torch.testing.assert_close(syn.detach(), full)


def test_refuses_parameters_without_class_rows(stub_build):
    p = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(RecipeError, match="class_sequential_sgd"):
        ClassSequentialSGD(ClassSequentialSGDConfig(), stub_build(K), param_groups=[{"name": "x", "params": [p]}],
                           parameterization=_Pixels(torch.zeros(1), torch.zeros(1)))
