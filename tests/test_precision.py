"""Recipe switches [run] precision / channels_last: the engine step honours them and stays close to fp32."""

from __future__ import annotations

import json

import pytest
import torch

from ddcore.builtin.objectives import MomentMatching, MomentMatchingConfig
from ddcore.errors import RecipeError
from ddcore.hotpath import HotPath
from ddcore import hookimpl
from ddcore.plugins import PluginHost
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


class _SafeMoments(MomentMatching):
    """The built-in moment matching, marked as measured safe under bf16 (a stand-in for DM)."""

    bf16_safe = True


class _SafePlugin:
    @hookimpl
    def ddcore_register_objectives(self, registry):
        registry.add("safe_moments", _SafeMoments, config=MomentMatchingConfig)


def _auto_run(tmp_path, objectives: list[str], out_name: str, **run):
    r = recipe(channels_last="off", **run)
    r["objective"] = [{"name": n, "moments": 1} for n in objectives]
    return run_recipe(r, tmp_path, out_name=out_name, host=PluginHost(extra=[_SafePlugin()]))


def test_auto_precision_is_bf16_on_cpu_only_when_every_objective_is_bf16_safe(tmp_path):
    safe = _auto_run(tmp_path, ["safe_moments"], "safe")
    bf16 = _auto_run(tmp_path, ["safe_moments"], "bf16", precision="bf16")
    fp32 = _auto_run(tmp_path, ["safe_moments"], "fp32", precision="fp32")
    mixed = _auto_run(tmp_path, ["safe_moments", "moment_matching"], "mixed")
    mixed_fp32 = _auto_run(tmp_path, ["safe_moments", "moment_matching"], "mixed_fp32", precision="fp32")
    assert safe.run.hot_path.precision == "bf16" and mixed.run.hot_path.precision == "fp32"
    assert torch.equal(safe.synset.images, bf16.synset.images)
    assert not torch.equal(safe.synset.images, fp32.synset.images)
    assert torch.equal(mixed.synset.images, mixed_fp32.synset.images)
    # the manifest says what "auto" became, so a report can tell the arithmetic of every run
    manifest = json.loads((safe.out_dir / "manifest.json").read_text())
    assert manifest["hot_path"]["precision"] == "bf16"
    assert json.loads((mixed.out_dir / "manifest.json").read_text())["hot_path"]["precision"] == "fp32"


@pytest.mark.parametrize(("device", "choice", "expected"), [
    ("cpu", "auto", "bf16"), ("cuda", "auto", "fp32"), ("cpu", "fp32", "fp32"), ("cuda", "bf16", "bf16"),
    ("cpu", "tf32", "tf32")])
def test_precision_resolves_per_device(device, choice, expected):
    run = parse_recipe(recipe(precision=choice)).run
    assert HotPath.resolve(run, torch.device(device)).precision == expected
