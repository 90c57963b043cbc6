"""Recipe switches [run] precision / channels_last: the engine step honours them and stays close to fp32."""

from __future__ import annotations

import pytest
import torch

from ddcore.errors import RecipeError
from ddcore.recipe import parse_recipe
from ddcore.testing import run_recipe, tiny_recipe


def recipe(**run) -> dict:
    # eager: compiled code rounds differently again (tests/test_compile.py covers it)
    r = tiny_recipe(run={"iterations": 2, "log_every": 1, "checkpoint_every": 0, "progress": False,
                         "compile": "off", **run})
    r.pop("eval")
    return r


def test_switches_change_arithmetic_not_results(tmp_path):
    fp32 = run_recipe(recipe(channels_last="off"), tmp_path, out_name="fp32")
    last = run_recipe(recipe(channels_last="on"), tmp_path, out_name="cl")
    auto = run_recipe(recipe(), tmp_path, out_name="auto")  # on for CPU
    bf16 = run_recipe(recipe(precision="bf16", channels_last="off"), tmp_path, out_name="bf16")
    assert torch.equal(auto.synset.images, last.synset.images)
    # channels_last only changes memory layout: same values up to kernel rounding
    torch.testing.assert_close(last.synset.images, fp32.synset.images, rtol=1e-4, atol=1e-4)
    # bf16 autocast really runs in bf16 (not bitwise fp32), but moves the images the same way as fp32
    init = run_recipe(recipe(iterations=0, channels_last="off"), tmp_path, out_name="init").synset.images
    assert not torch.equal(bf16.synset.images, fp32.synset.images)
    step_fp32 = (fp32.synset.images - init).flatten()
    step_bf16 = (bf16.synset.images - init).flatten()
    assert step_fp32.norm() > 0
    assert torch.nn.functional.cosine_similarity(step_fp32, step_bf16, dim=0) > 0.95
    losses = [m["loss"] for m in bf16.metrics()]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses == pytest.approx([m["loss"] for m in fp32.metrics()], rel=0.05)


def test_precision_is_validated():
    with pytest.raises(RecipeError, match="run"):
        parse_recipe(recipe(precision="fp8"))
