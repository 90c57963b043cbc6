"""The ``ddcore`` pytest plugin (``pytest11`` entry point): fixtures for unit-testing components.

Loaded automatically by pytest wherever ddcore is installed; the fixtures are small factories, so a test asks
for what it needs (``net = tiny_net(num_classes=4)``).
"""

from __future__ import annotations

import pytest
import torch

from ddcore.testing import StubBuild, StubBuildWithNets, TinyConvNet, make_step_context

__all__ = ["one_thread", "pool_build", "step_ctx", "stub_build", "stub_build_nets", "tiny_net"]


@pytest.fixture
def tiny_net():
    """``make(num_classes=3, seed=0, norm="instance", width=8)`` → a seeded :class:`~ddcore.testing.TinyConvNet`."""
    def make(num_classes: int = 3, seed: int = 0, norm: str = "instance", width: int = 8):
        torch.manual_seed(seed)
        return TinyConvNet(width=width, num_classes=num_classes, norm=norm)

    return make


@pytest.fixture
def stub_build():
    """The :class:`~ddcore.testing.StubBuild` class (``stub_build(num_classes, seed=0)``)."""
    return StubBuild


@pytest.fixture
def stub_build_nets():
    """The :class:`~ddcore.testing.StubBuildWithNets` class (a stub build with data and ``make_backbone``)."""
    return StubBuildWithNets


@pytest.fixture
def step_ctx():
    """:func:`~ddcore.testing.make_step_context`."""
    return make_step_context


@pytest.fixture
def pool_build(tmp_path):
    """``make(num_classes=3, seed=0)`` → a :class:`~ddcore.testing.StubBuildWithNets` with a ``cache_dir``."""
    def make(num_classes: int = 3, seed: int = 0):
        build = StubBuildWithNets(num_classes, seed)
        build.cache_dir = tmp_path / "cache"
        build.log = lambda msg: None
        return build

    return make


@pytest.fixture
def one_thread():
    """Run the test on one intra-op thread (tiny tensors are faster so, and do not fight parallel tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
