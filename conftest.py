"""Shared test setup (core and every in-tree plugin): dataset location, an isolated cache, deterministic CPU threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every CI run (a red CI must be reproducible); locally they explore.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent


def pytest_configure(config):
    # Tests and CI read the offline datasets from $DDCORE_DATA; default to ../shared/datasets beside the checkout.
    if not os.environ.get("DDCORE_DATA"):
        default = ROOT.parent / "shared" / "datasets"
        if default.is_dir():
            os.environ["DDCORE_DATA"] = str(default)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # One cache per test session: caches (decoded JPEGs, pretrained pools, teachers) are shared between tests
    # of a session but never with the user's ~/.cache/ddcore.
    if not os.environ.get("DDCORE_CACHE"):
        os.environ["DDCORE_CACHE"] = str(tmp_path_factory.mktemp("ddcore-cache"))
    yield
