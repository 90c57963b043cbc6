"""``ddcore new-plugin NAME [--kind KIND]``: scaffold a plugin package that installs, is discovered and passes its
own tests.

The generated package (``ddcore-NAME/``) registers one component ``NAME`` of ``KIND`` (``objective`` by default;
``parameterization``, ``augmentation``, ``sampler``, ``evaluator``, ``backbone``, ``data``) with an attrs config
class. Its tests are the plugin kit's contract (:func:`ddcore.testing.contract_tests`) plus a tiny end-to-end run
(eager, no compilation: seconds on a 2-core CPU). The objective package is the first example of
``docs/writing-plugins.md``, which quotes it verbatim (``tests/test_scaffold.py`` keeps the two identical)::

    ddcore-NAME/
      pyproject.toml                 # [project.entry-points.ddcore] NAME = "ddcore_NAME.plugin"
      README.md
      src/ddcore_NAME/__init__.py
      src/ddcore_NAME/plugin.py      # config class, the term, the @ddcore.hookimpl registering it
      recipes/NAME.toml              # a tiny digits recipe using the term
      tests/test_NAME.py             # the kit's contract, an end-to-end run_recipe, a recipe error

The templates are plain strings (no package data to ship); ``{name}`` and friends are filled by
:func:`render_files`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ddcore.errors import UserError

__all__ = ["KINDS", "create_plugin", "names_for", "render_files"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A ddcore plugin: the {name} {kind_text}."
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

A ddcore plugin registering the {kind_text} `{name}` ({summary}, a starting point to edit).

```bash
pip install -e .                       # registers the entry point: `ddcore plugins` lists {name}
ddcore run recipes/{name}.toml         # a tiny run on scikit-learn's digits
python -m pytest tests                 # the plugin's own tests (ddcore.testing)
```
'''

INIT = '''\
"""{dist}: a ddcore plugin registering the {kind_text} ``{name}``."""

__version__ = "0.1.0"
'''

PLUGINS = {
    'objective': '''\
"""Hook implementations of {dist}: the {kind_text} ``{name}``.

ddcore imports this module through the entry point in pyproject.toml and calls every function decorated
with ``@ddcore.hookimpl`` whose name matches a hook spec (see docs/hooks.md).
"""

from __future__ import annotations

import attrs
import torch

import ddcore
from ddcore.errors import RecipeError
from ddcore.perclass import class_means


@attrs.define(frozen=True, kw_only=True)
class {cls}Config:
    """Options of ``[[objective]] name = "{name}"`` (every field is a recipe key)."""

    features: str = ddcore.option("embedding", "Network output whose class means are matched.",
                                  choices=("embedding", "logits"))
    normalize: bool = ddcore.option(False, "L2-normalise every feature vector before averaging.")


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
        # ddcore.perclass: per-class means with one index_add (no Python loop over classes, no host sync)
        diff = class_means(real, ctx.real.groups, k)[0] - class_means(syn, ctx.syn.groups, k)[0]
        return (diff**2).sum()


@ddcore.hookimpl
def ddcore_register_objectives(registry):
    registry.add("{name}", {cls}, config={cls}Config)
''',
    'parameterization': '''\
"""Hook implementations of {dist}: the {kind_text} ``{name}``.

ddcore imports this module through the entry point in pyproject.toml and calls every function decorated
with ``@ddcore.hookimpl`` whose name matches a hook spec (see docs/hooks.md).
"""

from __future__ import annotations

import attrs
import torch

import ddcore
from ddcore.config import ComponentRef, positive


@attrs.define(frozen=True, kw_only=True)
class {cls}Config:
    """Options of ``[synset] name = "{name}"``."""

    ipc: int = ddcore.option(2, "Synthetic images per class.", validator=positive)
    init: ComponentRef = ddcore.option(ComponentRef("real"), "Initialiser of the images (kind 'init').")


class {cls}(ddcore.Parameterization):
    """Class-major learnable images plus one learnable contrast per image: ``images * exp(log_contrast)``."""

    def __init__(self, config: {cls}Config, build: ddcore.BuildContext):
        super().__init__(config, build)
        counts = [config.ipc] * build.num_classes
        init = build.make_component("init", config.init, key="synset.init")
        with torch.no_grad():
            images = init(counts, build.generator("init")).to(build.device)
        self.images = torch.nn.Parameter(images.contiguous())
        self.log_contrast = torch.nn.Parameter(torch.zeros(len(images), 1, 1, 1, device=build.device))
        self.register_buffer("labels", torch.arange(build.num_classes, device=build.device)
                             .repeat_interleave(config.ipc))

    def materialize(self) -> ddcore.SynBatch:
        return ddcore.SynBatch(images=self.images * self.log_contrast.exp(), labels=self.labels)

    def storage_floats(self) -> int:
        return self.images.numel() + self.log_contrast.numel()

    def class_index(self, param: torch.Tensor):
        # both tensors are class-major, one row per image: class-wise optimizers may update them class by class
        return self.labels


@ddcore.hookimpl
def ddcore_register_parameterizations(registry):
    registry.add("{name}", {cls}, config={cls}Config)
''',
    'augmentation': '''\
"""Hook implementations of {dist}: the {kind_text} ``{name}``.

ddcore imports this module through the entry point in pyproject.toml and calls every function decorated
with ``@ddcore.hookimpl`` whose name matches a hook spec (see docs/hooks.md).
"""

from __future__ import annotations

import attrs
import torch

import ddcore
from ddcore.config import OptionValueError


def probability(instance, attribute, value):
    """Validator: a recipe value outside [0, 1] is an error naming the key (``augment[0].probability``)."""
    if not 0.0 <= value <= 1.0:
        raise OptionValueError(attribute.name, f"expected a probability in [0, 1], got {{value}}")


@attrs.define(frozen=True, kw_only=True)
class {cls}Config:
    """Options of ``[[augment]] name = "{name}"``."""

    probability: float = ddcore.option(0.5, "Probability of a horizontal flip (per class and step, or per image).",
                                       validator=probability)


class {cls}(ddcore.SiameseAugmentation):
    """Horizontal flips: one coin per class and step, replayed on the real and the synthetic batch."""

    def sample(self, num_groups: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        return torch.rand(num_groups, generator=generator, device=generator.device).to(device) < self.config.probability

    def apply(self, x: torch.Tensor, params: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        flip = params[groups].view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)

    def random(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        coins = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device)
        return torch.where((coins < self.config.probability).view(-1, 1, 1, 1), x.flip(-1), x)


@ddcore.hookimpl
def ddcore_register_augmentations(registry):
    registry.add("{name}", {cls}, config={cls}Config)
''',
    'sampler': '''\
"""Hook implementations of {dist}: the {kind_text} ``{name}``.

ddcore imports this module through the entry point in pyproject.toml and calls every function decorated
with ``@ddcore.hookimpl`` whose name matches a hook spec (see docs/hooks.md).
"""

from __future__ import annotations

import attrs
import torch

import ddcore
from ddcore.config import positive


@attrs.define(frozen=True, kw_only=True)
class {cls}Config:
    """Options of ``[sampler] name = "{name}"``."""

    reuse: int = ddcore.option(2, "Steps each random network is kept for.", validator=positive)


class {cls}(ddcore.Sampler):
    """A fresh randomly initialised recipe backbone every ``reuse`` steps (seeded: resume draws the same nets)."""

    def __init__(self, config: {cls}Config, build: ddcore.BuildContext):
        super().__init__(config, build)
        self._net = None
        self._serial = -1

    def nets(self, step: int) -> list[torch.nn.Module]:
        serial = step // self.config.reuse
        if serial != self._serial:
            self._net = self.build.make_backbone(seed_key=("{name}", serial))
            self._serial = serial
        return [self._net]

    def info(self) -> dict:
        return {{"net_serial": self._serial}}


@ddcore.hookimpl
def ddcore_register_samplers(registry):
    registry.add("{name}", {cls}, config={cls}Config)
''',
    'evaluator': '''\
"""Hook implementations of {dist}: the {kind_text} ``{name}``.

ddcore imports this module through the entry point in pyproject.toml and calls every function decorated
with ``@ddcore.hookimpl`` whose name matches a hook spec (see docs/hooks.md).
"""

from __future__ import annotations

import attrs
import torch

import ddcore
from ddcore.config import non_negative
from ddcore.perclass import class_ids, class_means


@attrs.define(frozen=True, kw_only=True)
class {cls}Config:
    """Options of ``[eval] name = "{name}"``."""

    test_limit: int = ddcore.option(0, "Test images scored (0: all).", validator=non_negative)


class {cls}(ddcore.Evaluator):
    """Nearest class centroid: each test image gets the class of the closest synthetic class mean (percent).

    The sharded contract of ``ddcore.Evaluator``: ``units`` lists independent pieces, ``evaluate_units`` scores
    some of them; the base class provides ``evaluate`` and ``summarize`` (an ``EvaluationResult``).
    """

    def units(self):
        return [("centroid", 0)]

    def evaluate_units(self, synset, *, seed, units):
        test, k = self.build.test, self.build.num_classes
        means, counts = class_means(synset.images.flatten(1).to(self.build.device), class_ids(synset), k)
        x, y = test.normalize(test.images).flatten(1), test.labels
        if self.config.test_limit:
            x, y = x[:self.config.test_limit], y[:self.config.test_limit]
        dist = torch.cdist(x, means).masked_fill(counts[None, :] == 0, float("inf"))
        accuracy = 100.0 * (dist.argmin(1) == y).float().mean().item()
        return [accuracy for _ in units]


@ddcore.hookimpl
def ddcore_register_evaluators(registry):
    registry.add("{name}", {cls}, config={cls}Config)
''',
    'backbone': '''\
"""Hook implementations of {dist}: the {kind_text} ``{name}``.

ddcore imports this module through the entry point in pyproject.toml and calls every function decorated
with ``@ddcore.hookimpl`` whose name matches a hook spec (see docs/hooks.md).
"""

from __future__ import annotations

import attrs
import torch

import ddcore
from ddcore.config import positive


@attrs.define(frozen=True, kw_only=True)
class {cls}Config:
    """Options of ``[backbone] name = "{name}"``."""

    hidden: int = ddcore.option(64, "Width of the hidden layer.", validator=positive)


class {cls}(ddcore.Backbone):
    """A two-layer perceptron on the flattened image (``feature_map`` is the hidden layer as ``[N, h, 1, 1]``)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int):
        super().__init__()
        self.hidden = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_features, hidden), torch.nn.ReLU())
        self.classifier = torch.nn.Linear(hidden, num_classes)

    def forward_all(self, x: torch.Tensor) -> ddcore.BackboneOutput:
        h = self.hidden(x)
        return ddcore.BackboneOutput(embedding=h, feature_map=h[:, :, None, None], logits=self.classifier(h))


def build_{name}(config: {cls}Config, *, info: ddcore.DatasetInfo, num_classes: int) -> {cls}:
    c, h, w = info.image_shape
    return {cls}(c * h * w, config.hidden, num_classes)


@ddcore.hookimpl
def ddcore_register_backbones(registry):
    registry.add("{name}", build_{name}, config={cls}Config, doc={cls}.__doc__)
''',
    'data': '''\
"""Hook implementations of {dist}: the {kind_text} ``{name}``.

ddcore imports this module through the entry point in pyproject.toml and calls every function decorated
with ``@ddcore.hookimpl`` whose name matches a hook spec (see docs/hooks.md).
"""

from __future__ import annotations

import attrs
import torch

import ddcore
from ddcore.config import positive


@attrs.define(frozen=True, kw_only=True)
class {cls}Config:
    """Options of ``[data] name = "{name}"``."""

    classes: int = ddcore.option(4, "Number of classes.", validator=positive)
    per_class: int = ddcore.option(32, "Training images per class (the test split has a quarter as many).",
                                   validator=positive)
    size: int = ddcore.option(16, "Image height and width.", validator=positive)
    seed: int = ddcore.option(0, "Seed of the generated images.")


class {cls}(ddcore.DataSource):
    """Generated gray images: class ``c`` is noise around brightness ``(c + 0.5) / classes`` (no download)."""

    def info(self) -> ddcore.DatasetInfo:
        cfg = self.config
        return ddcore.DatasetInfo(name="{name}", num_classes=cfg.classes, channels=1, height=cfg.size,
                                  width=cfg.size, mean=(0.5,), std=(0.3,))

    def load(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        n = cfg.per_class if split == "train" else max(1, cfg.per_class // 4)
        g = torch.Generator().manual_seed(ddcore.derive_seed(cfg.seed, "{name}", split))
        labels = torch.arange(cfg.classes).repeat_interleave(n)
        base = (labels.float() + 0.5) / cfg.classes * 255
        noise = torch.randn(len(labels), 1, cfg.size, cfg.size, generator=g) * 40
        images = (base.view(-1, 1, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
        return images, labels


@ddcore.hookimpl
def ddcore_register_data_sources(registry):
    registry.add("{name}", {cls}, config={cls}Config)
''',
}

KINDS_TEXT = {
    'objective': ('objective term', 'class-mean feature matching'),
    'parameterization': ('parameterization', 'images with a learnable per-image contrast'),
    'augmentation': ('augmentation', 'siamese horizontal flips'),
    'sampler': ('sampler', 'a random network reused for a few steps'),
    'evaluator': ('evaluator', 'nearest class centroid'),
    'backbone': ('backbone', 'a two-layer perceptron'),
    'data': ('data source', 'generated images, no download'),
}

RECIPE = '''\
# The {kind_text} {name} in a tiny run on scikit-learn's digits (bundled, no download), 2 images per class.
#   ddcore run recipes/{name}.toml
name = "{name}"
plugins = ["{dist}"]          # fail fast (exit 2) when the plugin is not installed
seed = 0
device = "auto"

{data}
[real]
batch = 32                    # real images per class and step

{backbone}
{synset}
{sampler}
{augment}{objective}
[optimizer]
name = "sgd"
lr = 1.0
momentum = 0.5

[run]
iterations = 100
log_every = 10
checkpoint_every = 0

{eval}'''

#: The recipe's sections: the default, and the one naming the scaffolded component of that kind.
SECTIONS = {
    "data": ('[data]\nname = "digits"\n', '[data]\nname = "{name}"\n'),
    "backbone": ('[backbone]\nname = "ConvNet"\nwidth = 32\ndepth = 2\n', '[backbone]\nname = "{name}"\nhidden = 64\n'),
    "synset": ('[synset]\nname = "pixels"\nipc = 2\ninit = "real"\n', '[synset]\nname = "{name}"\nipc = 2\ninit = "real"\n'),
    "sampler": ('[sampler]\nname = "random_init"          # a fresh random network every step\n',
                '[sampler]\nname = "{name}"\nreuse = 2\n'),
    "augment": ("", '[[augment]]\nname = "{name}"\nprobability = 0.5\n\n'),
    "objective": ('[[objective]]\nname = "moment_matching"\nweight = 1.0\n',
                  '[[objective]]\nname = "{name}"\nweight = 1.0\nfeatures = "embedding"\n'),
    "eval": ('[eval]\nname = "train_from_scratch"\nmodels = ["ConvNet"]\nnum_models = 2\nepochs = 100\n'
             'baselines = ["random"]\n',
             '[eval]\nname = "{name}"\nbaselines = ["random"]\n'),
}
#: recipe section of each kind
SECTION_OF = {"data": "data", "backbone": "backbone", "parameterization": "synset", "sampler": "sampler",
              "augmentation": "augment", "objective": "objective", "evaluator": "eval"}
#: a bad value of each kind's own option, and the key path the error must name
BAD_OPTION = {
    "objective": ("objective[0].features=pixels", r"objective\[0\]\.features"),
    "parameterization": ("synset.ipc=0", r"synset\.ipc"),
    "augmentation": ("augment[0].probability=2.0", r"augment\[0\]\.probability"),
    "sampler": ("sampler.reuse=0", r"sampler\.reuse"),
    "evaluator": ("eval.test_limit=-1", r"eval\.test_limit"),
    "backbone": ("backbone.hidden=0", r"backbone\.hidden"),
    "data": ("data.classes=0", r"data\.classes"),
}

TEST = '''\
\"\"\"Tests of {dist}: ddcore's plugin kit (the contract every component passes) and a tiny run.\"\"\"

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ddcore.errors import RecipeError
from ddcore.testing import contract_tests, run_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "{name}.toml"
# eager (no compilation) and tiny: the tests take seconds on a 2-core CPU
TINY = [
    {tiny},
]

# one test item per component (its smoke test) plus a check that the sources import only ddcore's public API
test_ddcore_contract = contract_tests("{dist}")


def test_recipe_runs_end_to_end(tmp_path):
    result = run_recipe(RECIPE, tmp_path, TINY)
    losses = [m["loss"] for m in result.metrics()]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert math.isfinite(result.results["synset"]["mean"])


def test_bad_option_names_its_key_path(tmp_path):
    with pytest.raises(RecipeError, match=r"{bad_key}"):
        run_recipe(RECIPE, tmp_path, [*TINY, "{bad_value}"])
'''


def tiny_overrides(kind: str) -> list[str]:
    out = ["run.iterations=2", "run.log_every=1", "run.compile=off", "eval.baselines=[]"]
    if kind != "backbone":
        out.append("backbone.width=8")
    if kind != "evaluator":
        out += ["eval.num_models=1", "eval.epochs=1", "eval.compile=off"]
    return out


FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "src/{package}/__init__.py": INIT,
    "src/{package}/plugin.py": None,  # PLUGINS[kind]
    "recipes/{name}.toml": RECIPE,
    "tests/test_{name}.py": TEST,
}
KINDS = tuple(PLUGINS)


def names_for(name: str, kind: str = "objective") -> dict[str, str]:
    """Template variables: ``name`` (component and entry point), ``dist``, ``package``, ``cls``, ``kind``, ...."""
    if kind not in PLUGINS:
        raise UserError(f"new-plugin: unknown --kind {kind!r}; expected one of {', '.join(PLUGINS)}")
    if not NAME_RE.match(name):
        raise UserError(f"new-plugin: invalid name {name!r}: use lower-case letters, digits and underscores, "
                        "starting with a letter (e.g. my_term)")
    return {
        "name": name,
        "dist": "ddcore-" + name.replace("_", "-"),
        "package": "ddcore_" + name,
        "cls": "".join(part.capitalize() for part in name.split("_")) + ("Term" if kind == "objective" else ""),
        "kind": kind,
        "kind_text": KINDS_TEXT[kind][0],
        "summary": KINDS_TEXT[kind][1],
    }


def render_files(name: str, kind: str = "objective") -> dict[str, str]:
    """``{relative path: content}`` of the package for ``name`` of ``kind`` (nothing written)."""
    v = names_for(name, kind)
    own = SECTION_OF[kind]
    for section, (default, mine) in SECTIONS.items():
        v[section] = (mine if section == own else default).format(**v)
    bad_value, bad_key = BAD_OPTION[kind]
    v.update(tiny=",\n    ".join(f'"{o}"' for o in tiny_overrides(kind)), bad_value=bad_value, bad_key=bad_key)
    out = {}
    for path, text in FILES.items():
        text = PLUGINS[kind] if text is None else text
        out[path.format(**v)] = text.format(**v)
    return out


def create_plugin(name: str, parent: Path | str = ".", kind: str = "objective") -> Path:
    """Write ``ddcore-NAME/`` under ``parent`` and return its path; refuses to overwrite anything."""
    v = names_for(name, kind)
    root = Path(parent) / v["dist"]
    if root.exists():
        raise UserError(f"new-plugin: {root} already exists")
    for rel, text in render_files(name, kind).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
