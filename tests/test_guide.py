"""The code in docs/writing-plugins.md is real: its parameterization and backbone packages run as written.

(The objective example is the `ddcore new-plugin` output, installed and tested by tests/test_scaffold.py.)
The plugin modules of the guide are executed in-process and registered with ``run_recipe(extra_plugins=...)``,
so nothing is installed; the recipes run as printed apart from ``plugins = [...]`` (an in-process registration
has no distribution) and test-scale overrides.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from ddcore.errors import RecipeError
from ddcore.testing import make_build_context, run_recipe, tiny_dataset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md"
TINY = ["run.iterations=2", "backbone.width=8", "eval.num_models=1", "eval.epochs=1"]


def guide_files() -> dict[str, str]:
    """``{path: code}`` of every block introduced by a bold path line in the guide."""
    pattern = re.compile(r"\*\*`([^`]+)`\*\*\n\n```\w*\n(.*?)\n```", re.DOTALL)
    return {path: code + "\n" for path, code in pattern.findall(GUIDE.read_text())}


def load_plugin(package: str, monkeypatch) -> types.ModuleType:
    code = guide_files()[f"ddcore-{package}/src/ddcore_{package}/plugin.py"]
    module = types.ModuleType(f"guide_ddcore_{package}_plugin")
    # in sys.modules (for this test only), so cattrs can resolve the module's string annotations
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, f"docs/writing-plugins.md:{package}/plugin.py", "exec"), module.__dict__)
    return module


def guide_recipe(package: str, name: str) -> dict:
    recipe = tomllib.loads(guide_files()[f"ddcore-{package}/recipes/{name}.toml"])
    assert recipe.pop("plugins") == [f"ddcore-{package}"]
    return recipe


def test_guide_packages_are_complete():
    files = guide_files()
    for package, recipe in (("class-mean", "class_mean"), ("lowres", "lowres"), ("tinynet", "tinynet")):
        pkg = package.replace("-", "_")
        for rel in ("pyproject.toml", f"src/ddcore_{pkg}/plugin.py", f"recipes/{recipe}.toml",
                    f"tests/test_{recipe}.py"):
            assert f"ddcore-{package}/{rel}" in files, f"the guide lacks ddcore-{package}/{rel}"
        entry_point = tomllib.loads(files[f"ddcore-{package}/pyproject.toml"])["project"]["entry-points"]["ddcore"]
        assert entry_point == {recipe: f"ddcore_{pkg}.plugin"}
        compile(files[f"ddcore-{package}/tests/test_{recipe}.py"], "test", "exec")


def test_guide_parameterization_runs(tmp_path, monkeypatch):
    plugin = load_plugin("lowres", monkeypatch)
    result = run_recipe(guide_recipe("lowres", "lowres"), tmp_path, TINY, extra_plugins=[plugin])
    assert result.synset.images.shape == (4 * 10, 1, 8, 8)
    assert result.run.parameterization.storage_floats() == 4 * 10 * 1 * 4 * 4
    assert result.run.budget_images() == 10
    with pytest.raises(RecipeError, match=r"synset\.factor: factor 3 does not divide the 8x8 images"):
        run_recipe(guide_recipe("lowres", "lowres"), tmp_path, [*TINY, "synset.factor=3"], extra_plugins=[plugin],
                   out_name="bad")


def test_guide_backbone_runs(tmp_path, monkeypatch):
    plugin = load_plugin("tinynet", monkeypatch)
    from ddcore.plugins import PluginHost

    host = PluginHost(extra=[plugin])
    build = make_build_context(data=tiny_dataset(num_classes=3, per_class=4, shape=(3, 8, 8)), host=host)
    out = build.make_backbone("TinyNet", seed_key=0).forward_all(build.train.normalize(build.train.images))
    assert out.logits.shape == (12, 3) and out.embedding.shape == (12, 32 * 2 * 2)
    result = run_recipe(guide_recipe("tinynet", "tinynet"), tmp_path, TINY, extra_plugins=[plugin])
    assert set(result.results["synset"]["per_model"]) == {"TinyNet", "ConvNet"}
