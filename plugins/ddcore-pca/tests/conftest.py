"""Test setup of this plugin: tiny tensors run faster on one thread (the kit's ``one_thread`` fixture, for every test)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
