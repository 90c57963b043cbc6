"""``ddcore new-plugin NAME``: scaffold a plugin package that installs, is discovered and passes its own test.

The generated package (``ddcore-NAME/``) registers one objective term ``NAME`` with an attrs config class —
the first example of ``docs/writing-plugins.md``, which quotes these files verbatim (``tests/test_scaffold.py``
keeps the two identical)::

    ddcore-NAME/
      pyproject.toml                 # [project.entry-points.ddcore] NAME = "ddcore_NAME.plugin"
      README.md
      src/ddcore_NAME/__init__.py
      src/ddcore_NAME/plugin.py      # config class, the term, the @ddcore.hookimpl registering it
      recipes/NAME.toml              # a tiny digits recipe using the term
      tests/test_NAME.py             # discovery, an end-to-end run_recipe, a recipe error

The templates are plain strings (no package data to ship); ``{name}`` and friends are filled by
:func:`render_files`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ddcore.errors import UserError

__all__ = [
    "create_plugin", "FILES", "INIT", "NAME_RE", "names_for", "PLUGIN", "PYPROJECT", "README", "RECIPE",
    "render_files", "TEST"
]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A ddcore plugin: the {name} objective term."
requires-python = ">=3.10"
dependencies = ["ddcore>=0.1,<0.2"]

[project.optional-dependencies]
test = ["pytest>=7"]

# The entry point is how ddcore finds the plugin: group "ddcore", any name, value = the hookimpl module.
[project.entry-points.ddcore]
{name} = "{package}.plugin"

[tool.setuptools.packages.find]
where = ["src"]
'''

README = '''\
# {dist}

A ddcore plugin registering the objective term `{name}` (class-mean feature matching,
a starting point to edit).

```bash
pip install -e .                       # registers the entry point: `ddcore plugins` lists {name}
ddcore run recipes/{name}.toml         # a tiny run on scikit-learn's digits
python -m pytest tests                 # the plugin's own tests (ddcore.testing)
```
'''

INIT = '''\
"""{dist}: a ddcore plugin registering the objective term ``{name}``."""

__version__ = "0.1.0"
'''

PLUGIN = '''\
"""Hook implementations of {dist}: the objective term ``{name}``.

ddcore imports this module through the entry point in pyproject.toml and calls every function decorated
with ``@ddcore.hookimpl`` whose name matches a hook spec (see docs/hooks.md).
"""

from __future__ import annotations

import attrs
import torch

import ddcore
from ddcore.errors import RecipeError


@attrs.define(frozen=True, kw_only=True)
class {cls}Config:
    """Options of ``[[objective]] name = "{name}"`` (every field is a recipe key)."""

    features: str = ddcore.option("embedding", "Network output whose class means are matched.",
                                  choices=("embedding", "logits"))
    normalize: bool = ddcore.option(False, "L2-normalise every feature vector before averaging.")


def class_means(x: torch.Tensor, groups: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean of the rows of ``x`` with one ``index_add`` (no Python loop over classes)."""
    sums = torch.zeros(num_classes, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, groups, x)
    counts = torch.bincount(groups, minlength=num_classes).clamp_min(1).to(x.dtype)
    return sums / counts[:, None]


class {cls}(ddcore.Objective):
    """Sum over classes of the squared distance between real and synthetic class-mean features."""

    coupling = "separable"  # a sum of per-class terms: class-sharded execution is exact

    def __init__(self, config: {cls}Config, build: ddcore.BuildContext):
        super().__init__(config, build)
        if build.recipe.real.sampling == "none":
            raise RecipeError("the {name} term needs real batches; set real.sampling to per_class or uniform",
                              file=build.recipe.file, key="real.sampling")

    def __call__(self, ctx: ddcore.StepContext) -> torch.Tensor:
        # ctx.outputs runs each (network, batch) once per step and shares it with the other terms.
        real = getattr(ctx.outputs(which="real"), self.config.features).flatten(1)
        syn = getattr(ctx.outputs(which="syn"), self.config.features).flatten(1)
        if self.config.normalize:
            real = torch.nn.functional.normalize(real, dim=1)
            syn = torch.nn.functional.normalize(syn, dim=1)
        k = ctx.num_classes
        diff = class_means(real, ctx.real.groups, k) - class_means(syn, ctx.syn.groups, k)
        return (diff**2).sum()


@ddcore.hookimpl
def ddcore_register_objectives(registry):
    registry.add("{name}", {cls}, config={cls}Config)
'''

RECIPE = '''\
# The {name} term on scikit-learn's digits (bundled, no download), 2 images per class.
#   ddcore run recipes/{name}.toml
name = "{name}"
plugins = ["{dist}"]          # fail fast (exit 2) when the plugin is not installed
seed = 0
device = "auto"

[data]
name = "digits"

[real]
batch = 32                    # real images per class and step

[backbone]
name = "ConvNet"
width = 32
depth = 2

[synset]
name = "pixels"
ipc = 2
init = "real"

[sampler]
name = "random_init"          # a fresh random network every step

[[objective]]
name = "{name}"
weight = 1.0
features = "embedding"

[optimizer]
name = "sgd"
lr = 1.0
momentum = 0.5

[run]
iterations = 100
log_every = 10
checkpoint_every = 0

[eval]
name = "train_from_scratch"
models = ["ConvNet"]
num_models = 2
epochs = 100
baselines = ["random"]
'''

TEST = '''\
"""Tests of {dist}, written with ddcore.testing (the helpers ddcore's own tests use)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ddcore.errors import RecipeError
from ddcore.plugins import PluginHost
from ddcore.testing import run_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "{name}.toml"
TINY = ["run.iterations=3", "run.log_every=1", "backbone.width=8", "eval.num_models=1", "eval.epochs=2"]


def test_plugin_is_discovered():
    entry = PluginHost(autoload=True).registry.get("objective", "{name}")
    assert entry.distribution == "{dist}"


def test_recipe_runs_end_to_end(tmp_path):
    result = run_recipe(RECIPE, tmp_path, TINY)
    losses = [m["loss/{name}"] for m in result.metrics()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert result.synset.images.shape[0] == 2 * 10  # ipc 2, 10 digit classes
    assert result.results["synset"]["num_models"] == 1


def test_bad_option_names_its_key_path(tmp_path):
    with pytest.raises(RecipeError, match=r"objective\\[0\\]\\.features"):
        run_recipe(RECIPE, tmp_path, [*TINY, "objective[0].features=pixels"])
'''

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "src/{package}/__init__.py": INIT,
    "src/{package}/plugin.py": PLUGIN,
    "recipes/{name}.toml": RECIPE,
    "tests/test_{name}.py": TEST,
}


def names_for(name: str) -> dict[str, str]:
    """Template variables: ``name`` (component and entry point), ``dist``, ``package``, ``cls``."""
    if not NAME_RE.match(name):
        raise UserError(f"new-plugin: invalid name {name!r}: use lower-case letters, digits and underscores, "
                        "starting with a letter (e.g. my_term)")
    return {
        "name": name,
        "dist": "ddcore-" + name.replace("_", "-"),
        "package": "ddcore_" + name,
        "cls": "".join(part.capitalize() for part in name.split("_")) + "Term",
    }


def render_files(name: str) -> dict[str, str]:
    """``{relative path: content}`` of the package for ``name`` (nothing written)."""
    v = names_for(name)
    return {path.format(**v): text.format(**v) for path, text in FILES.items()}


def create_plugin(name: str, parent: Path | str = ".") -> Path:
    """Write ``ddcore-NAME/`` under ``parent`` and return its path; refuses to overwrite anything."""
    v = names_for(name)
    root = Path(parent) / v["dist"]
    if root.exists():
        raise UserError(f"new-plugin: {root} already exists")
    for rel, text in render_files(name).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
