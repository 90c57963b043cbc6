"""Test setup of this plugin: tiny tensors run faster on one thread (and do not fight other test processes)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
