"""Fixtures for ddcore-dcc tests: the paper's linear model, and the kit's helpers as one namespace.

The tiny ConvNet (``tiny_net``) and the stub contexts come from ddcore's testing kit (its pytest plugin). Tests
run with ``--import-mode=importlib`` (no sys.path tricks), so helpers are handed out as fixtures.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from ddcore.components import Backbone, BackboneOutput
from ddcore.testing import StubBuild, TinyConvNet
from ddcore.testing import make_step_context as make_ctx


class LinearNet(Backbone):
    """``logits = x @ W.T`` (no bias): the paper's §3.2 linear model, with CE instead of the hinge loss."""

    def __init__(self, dim: int = 2, num_classes: int = 2):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_classes, dim))

    def forward_all(self, x):
        emb = x.flatten(1)
        return BackboneOutput(embedding=emb, feature_map=emb[:, :, None, None], logits=emb @ self.weight.T)


@pytest.fixture
def dcc():
    """The helper classes/functions of this file, as one namespace."""
    return types.SimpleNamespace(LinearNet=LinearNet, TinyConvNet=TinyConvNet, StubBuild=StubBuild, make_ctx=make_ctx)
