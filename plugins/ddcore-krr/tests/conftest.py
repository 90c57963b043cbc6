"""Shared fixture: a tiny build context with parameterization, pool and objective (ddcore_krr.testing)."""

from __future__ import annotations

import pytest

from ddcore_krr.testing import tiny_krr_build


@pytest.fixture
def krr_build(tmp_path):
    return tiny_krr_build(tmp_path)
