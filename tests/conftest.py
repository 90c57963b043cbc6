"""Fixtures of the core's tests: the fixture plugin packages of tests/fixtures/, made discoverable in-process.

They are never pip-installed (requirements-dev.txt does not list them): ``ddcore.testing.local_install`` writes
their entry points into a temporary site directory for the duration of a test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ddcore.testing import local_install

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The fixture packages' own tests run only where the package is installed; here the kit checks them
# (tests/test_plugins.py: check_plugin on ddcore-thirdparty).
collect_ignore = ["fixtures"]


@pytest.fixture
def testplugin(tmp_path):
    """``ddcore-testplugin`` (an objective and an init) discoverable through its entry point."""
    with local_install(FIXTURES / "ddcore-testplugin", tmp_path / "site") as installed:
        yield installed


@pytest.fixture
def thirdparty(tmp_path):
    """``ddcore-thirdparty`` (MMD objective, DCT parameterization, nearest-centroid evaluator)."""
    with local_install(FIXTURES / "ddcore-thirdparty", tmp_path / "site") as installed:
        yield installed
