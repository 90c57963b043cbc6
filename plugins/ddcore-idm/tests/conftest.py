"""Fixtures for ddcore-idm unit tests: a tiny instance-norm backbone and a stub build context."""

from __future__ import annotations

import pytest
import torch

from ddcore.testing import StubBuild, StubBuildWithNets, TinyConvNet
from ddcore.testing import make_step_context as make_ctx


@pytest.fixture
def tiny_net():
    def make(num_classes=3, seed=0):
        torch.manual_seed(seed)
        return TinyConvNet(num_classes=num_classes)
    return make


@pytest.fixture
def stub_build():
    return StubBuild


@pytest.fixture
def step_ctx():
    return make_ctx


@pytest.fixture
def stub_build_nets():
    return StubBuildWithNets
