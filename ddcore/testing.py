"""Helpers for testing ddcore plugins (yours and ours), and the plugin contract kit.

The kit — the checks every component must pass, the same for built-ins, in-tree and third-party plugins:

* :func:`contract_tests` — one line in a plugin's tests (``test_contract = contract_tests("ddcore-mine")``) gives
  one test item per registered component (:func:`smoke_test`, driven by the tiny config the component declares
  with ``registry.add(..., smoke=...)``) plus ``public-api`` (:func:`check_public_imports`);
* :func:`check_plugin` — the same checks as one call;
* the ``ddcore`` pytest plugin (entry point ``pytest11``, active wherever ddcore is installed) provides the
  fixtures ``tiny_net``, ``stub_build``, ``stub_build_nets``, ``step_ctx``, ``pool_build`` and ``one_thread``.

Helpers:

* :func:`tiny_recipe` — a recipe mapping on the bundled digits data at test scale, to tweak per test;
* :func:`run_recipe` — run a recipe (file, TOML text or mapping) into a temporary directory and return its
  artefacts;
* :class:`HookRecorder` — a plugin object recording every lifecycle hook call, for assertions;
* :func:`tiny_dataset` — an in-memory :class:`~ddcore.data.store.ClassIndexedData` of random images;
* :func:`make_build_context` — a :class:`~ddcore.context.BuildContext` over such data, to unit-test a
  component without a recipe.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import attrs
import torch
from torch import nn

import ddcore
from ddcore.components import Backbone, BackboneOutput
from ddcore.context import BuildContext, StepContext, derive_seed
from ddcore.hotpath import HotPath
from ddcore.types import DatasetInfo, SynBatch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "HookRecorder", "RunResult", "StubBuild", "StubBuildWithNets", "StubTrainSplit", "TinyConvNet", "check_defaults",
    "check_plugin", "check_public_imports", "contract_tests", "distribution_entries", "local_install", "make_build_context",
    "make_step_context", "public_surface", "require_datasets", "run_recipe", "smoke_test", "tiny_dataset", "tiny_recipe",
    "write_fake_imagefolder", "write_fake_mnist",
]

TINY_RECIPE: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits"},
    "real": {"batch": 32},
    "backbone": {"name": "ConvNet", "width": 16, "depth": 2},
    "synset": {"name": "pixels", "ipc": 2},
    "sampler": "random_init",
    "objective": [{"name": "moment_matching", "weight": 1.0}],
    "optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.5},
    # eager: unit tests build many differently shaped nets; tests/test_compile.py covers the compiled paths
    "run": {"iterations": 4, "log_every": 2, "checkpoint_every": 2, "progress": False, "compile": "off"},
    "eval": {"name": "train_from_scratch", "models": ["ConvNet"], "num_models": 1, "epochs": 2,
             "baselines": ["random"], "compile": "off"},
}


def require_datasets(*names: str) -> Path:
    """``$DDCORE_DATA`` for a test that reads the offline dataset folders ``names`` (e.g. ``"cifar10-jpeg"``).

    When one is missing the test fails under ``CI=true`` (CI must run everything) and is skipped elsewhere, with
    one reason naming ``DDCORE_DATA``, so the suite passes on a fresh clone without the datasets.
    """
    import os

    import pytest

    root = os.environ.get("DDCORE_DATA")
    missing = [n for n in names if not root or not (Path(root) / n).is_dir()]
    if not missing:
        return Path(root)
    where = f"$DDCORE_DATA={root}" if root else "$DDCORE_DATA is not set"
    reason = (f"needs the offline datasets {', '.join(missing)} ({where}): set DDCORE_DATA to the folder holding "
              f"them for the full suite")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def tiny_recipe(**changes: Any) -> dict[str, Any]:
    """A copy of a tiny digits recipe with top-level keys replaced by ``changes``."""
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe.update(copy.deepcopy(changes))
    return recipe


@attrs.define
class RunResult:
    """What :func:`run_recipe` returns."""

    out_dir: Path
    results: Optional[dict[str, Any]]
    synset: SynBatch
    run: Any

    def metrics(self) -> list[dict[str, Any]]:
        import json

        path = self.out_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_recipe(
    recipe: str | Path | dict,
    tmp_path: Path,
    overrides: Iterable[str] = (),
    *,
    device: str = "cpu",
    resume: bool = False,
    out_name: str = "run",
    extra_plugins: Iterable[Any] = (),
    host: Any = None,
) -> RunResult:
    """Run a recipe end to end into ``tmp_path / out_name``.

    :param recipe: a path to a TOML file, TOML text, or a mapping (e.g. from :func:`tiny_recipe`).
    :param overrides: ``key.path=value`` strings, as ``--set``.
    :param extra_plugins: plugin objects registered in-process for this run (e.g. a :class:`HookRecorder`).
    :param host: the plugin host to run with (default: the process-wide one, or a new one with ``extra_plugins``).
    """
    from ddcore.engine import Run
    from ddcore.plugins import PluginHost, get_host
    from ddcore.recipe import load_recipe, parse_recipe

    if isinstance(recipe, dict):
        parsed = parse_recipe(recipe, list(overrides))
    elif isinstance(recipe, Path) or (isinstance(recipe, str) and "\n" not in recipe and recipe.endswith(".toml")):
        parsed = load_recipe(recipe, list(overrides))
    else:
        parsed = parse_recipe(tomllib.loads(recipe), list(overrides))
    extra = list(extra_plugins)
    if host is None:
        host = PluginHost(extra=extra) if extra else get_host()
    out_dir = Path(tmp_path) / out_name
    run = Run(parsed, host=host, out_dir=out_dir, device=device, resume=resume, progress=False, log=lambda *_: None)
    results = run.execute()
    with torch.no_grad():
        syn = run.parameterization.materialize().detach()
    return RunResult(out_dir=out_dir, results=results, synset=syn, run=run)


class HookRecorder:
    """Register with ``extra_plugins=[HookRecorder()]``; ``calls`` lists ``(hook name, kwargs)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    @ddcore.hookimpl
    def ddcore_run_started(self, run, build, start_step):
        self.calls.append(("ddcore_run_started", {"start_step": start_step}))

    @ddcore.hookimpl
    def ddcore_step_end(self, run, ctx, loss):
        self.calls.append(("ddcore_step_end", {"step": ctx.step}))

    @ddcore.hookimpl
    def ddcore_metrics(self, run, step, metrics):
        self.calls.append(("ddcore_metrics", {"step": step, "metrics": dict(metrics)}))

    @ddcore.hookimpl
    def ddcore_evaluated(self, run, step, results):
        self.calls.append(("ddcore_evaluated", {"step": step, "results": results}))

    @ddcore.hookimpl
    def ddcore_run_finished(self, run, results):
        self.calls.append(("ddcore_run_finished", {"results": results}))


def tiny_dataset(
    num_classes: int = 3, per_class: int = 8, shape: tuple[int, int, int] = (3, 8, 8), *, seed: int = 0,
    device: str = "cpu",
):
    """Random uint8 images with class-dependent brightness (so classes are separable)."""
    from ddcore.data.store import ClassIndexedData

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    base = (labels.float() + 0.5) / num_classes * 200
    noise = torch.randint(0, 56, (len(labels), *shape), generator=g).float()
    images = (base.view(-1, 1, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
    info = DatasetInfo(name="tiny", num_classes=num_classes, channels=shape[0], height=shape[1], width=shape[2],
                       mean=(0.5,) * shape[0], std=(0.25,) * shape[0])
    return ClassIndexedData(images, labels, info, torch.device(device))


def make_build_context(
    recipe: Optional[dict] = None, *, data=None, seed: int = 0, cache_dir: Optional[Path] = None, host=None,
) -> BuildContext:
    """A BuildContext over :func:`tiny_dataset` (or ``data``) with the default plugin host's registry."""
    from ddcore.plugins import get_host
    from ddcore.recipe import parse_recipe

    data = data if data is not None else tiny_dataset()
    parsed = parse_recipe(recipe or tiny_recipe())
    host = host or get_host()
    import tempfile

    return BuildContext(
        recipe=parsed, registry=host.registry, info=data.info, device=data.images.device, seed=seed, train=data,
        test_loader=lambda: data, cache_dir=Path(cache_dir or tempfile.mkdtemp(prefix="ddcore-cache-")),
        log=lambda *_: None,
    )


class TinyConvNet(Backbone):
    """Two DC-style blocks (conv 3x3, instance norm as ``GroupNorm(C, C)`` or BatchNorm, ReLU, avg-pool 2) and a
    linear classifier: a backbone small enough for unit tests of objective terms and samplers."""

    def __init__(self, channels: int = 3, width: int = 8, num_classes: int = 3, size: int = 8, norm: str = "instance"):
        super().__init__()

        def norm_layer():
            return nn.GroupNorm(width, width) if norm == "instance" else nn.BatchNorm2d(width)

        self.has_running_stats = norm == "batch"
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), norm_layer(), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), norm_layer(), nn.ReLU(), nn.AvgPool2d(2),
        )
        self.classifier = nn.Linear(width * (size // 4) ** 2, num_classes)

    def forward_all(self, x):
        fmap = self.features(x)
        emb = fmap.flatten(1)
        return BackboneOutput(embedding=emb, feature_map=fmap, logits=self.classifier(emb))


class StubBuild:
    """The few BuildContext attributes that StepContext and most objective terms use (CPU, derived seeds).

    Enough to unit-test a term on hand-made batches; use :func:`make_build_context` when a component needs data.
    """

    def __init__(self, num_classes: int, seed: int = 0):
        self.num_classes = num_classes
        self.seed = seed
        self.device = torch.device("cpu")
        self.hot_path = HotPath()  # plain eager NCHW; set another to test a component on the hot path

    def generator(self, purpose, *keys, device=None):
        g = torch.Generator()
        g.manual_seed(derive_seed(self.seed, purpose, *keys))
        return g

    def prepare_net(self, net):
        return self.hot_path.prepare_net(net)


def make_step_context(build, real, syn, nets, step: int = 0, sampler_info: Optional[dict] = None,
                      real_chunk: int = 0) -> StepContext:
    """A StepContext over given (already augmented) real/syn batches, as the engine would hand to objectives."""
    return StepContext(step=step, build=build, real=real, real_raw=real, syn=syn, syn_raw=syn, nets=nets,
                       sampler_info=sampler_info or {}, aug_params=[], real_chunk=real_chunk)


class StubTrainSplit:
    """The ClassIndexedData methods samplers and pools call, on a small random labelled set (3x``size``x``size``).

    ``calls`` records every ``sample_uniform`` batch size and every ``iterate`` batch length, so tests can check how
    much real data a component consumed.
    """

    def __init__(self, num_classes: int, per_class: int = 16, size: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (num_classes * per_class, 3, size, size), generator=g, dtype=torch.uint8)
        self.labels = torch.arange(num_classes).repeat_interleave(per_class)
        self.num_classes = num_classes
        self.calls: list[int] = []

    def normalize(self, x):
        return (x.float() / 255.0 - 0.5) / 0.25

    def random_indices_per_class(self, counts, generator):
        out = []
        for c, n in enumerate(counts):  # a stub: clarity over speed
            idx = torch.nonzero(self.labels == c).flatten()
            out.append(idx[torch.randperm(len(idx), generator=generator)[:n]])
        return torch.cat(out)

    def sample_uniform(self, batch, generator):
        from ddcore.types import RealBatch

        self.calls.append(batch)
        idx = torch.randint(0, len(self.labels), (batch,), generator=generator)
        return RealBatch(images=self.normalize(self.images[idx]), labels=self.labels[idx], indices=idx)

    def iterate(self, batch_size, generator=None):
        from ddcore.types import RealBatch

        order = torch.randperm(len(self.labels), generator=generator)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            self.calls.append(len(idx))
            yield RealBatch(images=self.normalize(self.images[idx]), labels=self.labels[idx], indices=idx)

    @property
    def class_counts(self):
        return torch.bincount(self.labels).tolist()

    def __len__(self):
        return len(self.labels)


class StubBuildWithNets(StubBuild):
    """:class:`StubBuild` plus ``info``, a :class:`StubTrainSplit` ``train`` split and ``make_backbone`` (a
    :class:`TinyConvNet` seeded by ``seed_key``; ``built`` lists the keys asked for)."""

    def __init__(self, num_classes: int, seed: int = 0):
        super().__init__(num_classes, seed)
        self.info = DatasetInfo(name="stub", num_classes=num_classes, channels=3, height=8, width=8,
                                mean=(0.5,) * 3, std=(0.25,) * 3)
        self.train = StubTrainSplit(num_classes)
        self.built: list[Any] = []

    def make_backbone(self, ref=None, *, num_classes=None, seed_key=None):
        torch.manual_seed(derive_seed(self.seed, "backbone", seed_key))
        net = TinyConvNet(num_classes=num_classes or self.num_classes)
        self.built.append(seed_key)
        return net


# =============================================================================================================
# The plugin contract kit: the checks every component of every plugin must pass, and the public-API check.
# =============================================================================================================


def public_surface() -> dict[str, set[str]]:
    """``{module name: names in its __all__}`` of every public ddcore module (no ``_``-prefixed path part)."""
    import importlib
    import pkgutil

    out: dict[str, set[str]] = {"ddcore": set(ddcore.__all__)}
    for info in pkgutil.walk_packages(ddcore.__path__, "ddcore."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        out[info.name] = set(getattr(module, "__all__", ()))
    return out


def _python_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return files


def check_public_imports(paths: Iterable[str | Path]) -> list[str]:
    """Every use of a non-public ddcore name in the Python files under ``paths``, one line each (empty: clean).

    Checked: ``import ddcore.x``, ``from ddcore.x import name`` and ``ddcore.name`` attribute reads. Public means
    a module whose dotted path has no ``_``-prefixed part, and a name listed in that module's ``__all__``.
    """
    import ast

    surface = public_surface()
    problems: list[str] = []

    def module_ok(name: str) -> Optional[str]:
        if any(part.startswith("_") for part in name.split(".")):
            return f"{name} is a private module"
        if name not in surface:
            return f"{name} is not a ddcore module"
        return None

    for path in _python_files(paths):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as exc:
            problems.append(f"{path}:{exc.lineno}: cannot parse ({exc.msg})")
            continue
        aliases = set()  # local names bound to the ddcore package itself
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "ddcore" or a.name.startswith("ddcore."):
                        why = module_ok(a.name) if a.name != "ddcore" else None
                        if why:
                            problems.append(f"{where}: import {a.name}: {why}")
                        if a.name == "ddcore" or a.asname is None:
                            aliases.add(a.asname or "ddcore")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                    node.module == "ddcore" or node.module.startswith("ddcore.")):
                why = module_ok(node.module)
                if why:
                    problems.append(f"{where}: from {node.module} import ...: {why}")
                    continue
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    if sub in surface:
                        continue
                    if _is_module(sub):
                        problems.append(f"{where}: from {node.module} import {a.name}: {module_ok(sub)}")
                    elif a.name not in surface[node.module]:
                        problems.append(f"{where}: from {node.module} import {a.name}: '{a.name}' is not in "
                                        f"{node.module}.__all__ (not public API)")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                name = node.attr
                if name not in surface["ddcore"] and f"ddcore.{name}" not in surface and not name.startswith("__"):
                    problems.append(f"{path}:{node.lineno}: ddcore.{name}: not in ddcore.__all__ (not public API)")
    return problems


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _tmp(value: Any, tmp_path: Path) -> Any:
    """Replace the placeholder ``"<tmp>"`` (anywhere in a smoke config) by the test's temporary directory."""
    if value == "<tmp>":
        return str(tmp_path)
    if isinstance(value, dict):
        return {k: _tmp(v, tmp_path) for k, v in value.items()}
    if isinstance(value, list):
        return [_tmp(v, tmp_path) for v in value]
    return value


def _smoke(entry, tmp_path: Path) -> tuple[dict, dict]:
    smoke = copy.deepcopy(entry.smoke or {})
    return _tmp(smoke.get("options", {}), tmp_path), _tmp(smoke.get("recipe", {}), tmp_path)


def _smoke_build(recipe_changes: dict, shape=(3, 8, 8), per_class: int = 10, cache_dir: Optional[Path] = None,
                 host=None) -> BuildContext:
    import os

    data = tiny_dataset(num_classes=3, per_class=per_class, shape=shape)
    # $DDCORE_CACHE when set (a test session's cache): teachers and pools trained by one smoke test are reused
    cache = cache_dir or (Path(os.environ["DDCORE_CACHE"]) if os.environ.get("DDCORE_CACHE") else None)
    return make_build_context(tiny_recipe(**recipe_changes), data=data, cache_dir=cache, host=host)


def check_defaults(entry) -> None:
    """Every defaulted option of ``entry``'s config passes its own validators (an invalid default is a plugin bug)."""
    from ddcore.config import OptionValueError

    values = {}
    fields = attrs.fields(entry.config)
    for f in fields:
        if f.default is attrs.NOTHING:
            continue
        values[f.name] = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default  # type: ignore
    holder = type("Defaults", (), values)()
    for f in fields:
        if f.name in values and f.validator is not None:
            try:
                f.validator(holder, f, values[f.name])
            except (OptionValueError, ValueError, TypeError) as exc:
                raise AssertionError(f"{entry.kind} '{entry.name}' (plugin '{entry.plugin}', distribution "
                                     f"{entry.distribution}): the default of option '{f.name}' is invalid: {exc}")


def smoke_test(entry, tmp_path: Path, *, host=None) -> None:
    """Build ``entry``'s component at test scale from its declared ``smoke`` config and exercise its contract.

    Raises ``AssertionError`` (or the component's own error) naming what failed. ``host`` is the plugin host
    whose registry the build uses (default: the process-wide one).
    """
    import math

    from ddcore.components import Augmentation, Backbone, BackboneOutput, Evaluator, check_evaluation_result
    from ddcore.config import ComponentRef
    from ddcore.recipe import parse_recipe

    tmp_path = Path(tmp_path)
    check_defaults(entry)
    options, recipe_changes = _smoke(entry, tmp_path)
    setup = (entry.smoke or {}).get("setup")
    if setup is not None:
        if isinstance(setup, str):
            import importlib

            mod, _, fn = setup.partition(":")
            setup = getattr(importlib.import_module(mod), fn)
        setup(tmp_path)
    kind, name = entry.kind, entry.name
    label = f"{kind} '{name}' ({entry.distribution})"

    if kind == "data":
        from types import SimpleNamespace

        path = options.get("path")
        if isinstance(path, str) and path and not Path(path).expanduser().is_absolute():
            require_datasets(path)  # a dataset under $DDCORE_DATA: skipped without it locally, failed under CI
        config = entry.structure(options, key="data")
        source = entry.factory(config, SimpleNamespace(recipe=parse_recipe(tiny_recipe()), file=None))
        info = source.info()
        images, labels = source.load("train")
        assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == info.image_shape, label
        assert labels.dtype == torch.int64 and len(labels) == len(images) and int(labels.max()) < info.num_classes, label
        return
    if kind == "backbone":
        build = _smoke_build(recipe_changes, shape=(3, 16, 16), per_class=2, host=host)  # 16 px: DC nets' minimum
        net = build.make_backbone(ComponentRef(name, options), seed_key=0)
        assert isinstance(net, Backbone), f"{label}: not a ddcore.Backbone"
        x = build.train.normalize(build.train.images)
        out = net.forward_all(x)
        assert isinstance(out, BackboneOutput), f"{label}: forward_all must return a BackboneOutput"
        assert out.logits.shape == (len(x), 3) and out.embedding.shape[0] == len(x) and out.feature_map.ndim == 4, label
        out.logits.sum().backward()
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad), f"{label}: no gradient"
        return
    if kind == "parameterization":
        build = _smoke_build({"synset": {"name": name, **options}, **recipe_changes}, host=host)
        with build.seeded("parameterization"):
            param = entry.factory(entry.structure(options, key="synset"), build)
        syn = param.materialize()
        assert isinstance(syn, SynBatch) and tuple(syn.images.shape[1:]) == build.info.image_shape, label
        loss = syn.images.square().sum() + (0 if syn.targets is None else syn.targets.square().sum())
        loss.backward()
        assert any(p.grad is not None for g in param.param_groups() for p in g["params"]), \
            f"{label}: no gradient reached the parameters"
        assert param.storage_floats() > 0, f"{label}: storage_floats() must be > 0"
        assert set(param.baseline_kinds(param.config)), f"{label}: no baseline kinds"
        return
    if kind == "init":
        build = _smoke_build(recipe_changes, host=host)
        init = build.make_component("init", ComponentRef(name, options), key="synset.init")
        images = init([2, 2, 2], build.generator("init"))
        assert images.shape == (6, *build.info.image_shape) and torch.isfinite(images).all(), label
        return
    if kind == "augmentation":
        build = _smoke_build(recipe_changes, host=host)
        aug = build.make_component("augmentation", ComponentRef(name, options), key="augment[0]")
        assert isinstance(aug, Augmentation), f"{label}: not a ddcore.SiameseAugmentation or ddcore.Expansion"
        images = torch.randn(6, *build.info.image_shape, requires_grad=True)
        labels = torch.arange(3).repeat_interleave(2)
        if aug.kind == "siamese":
            params = aug.sample(3, build.generator("augment", 0, 0), build.device)
            out = aug.apply(images, params, labels)
            assert out.shape[0] == 6, label
            assert aug.random(images.detach(), build.generator("eval")).shape[0] == 6, label
        else:
            out = aug.expand(SynBatch(images, labels)).images
            assert out.shape[0] >= 6, label
        out.sum().backward()
        assert images.grad is not None, f"{label}: not differentiable"
        return
    if kind == "sampler":
        synset = recipe_changes.pop("synset", {"name": "pixels", "ipc": 2})
        build = _smoke_build({"synset": synset, **recipe_changes}, host=host)
        with build.seeded("parameterization"):
            build.parameterization = build.make_component("parameterization", ComponentRef.parse(synset), key="synset")
        sampler = build.make_component("sampler", ComponentRef(name, options), key="sampler")
        nets = sampler.nets(0)
        assert nets and all(isinstance(n, torch.nn.Module) for n in nets), f"{label}: nets() returned no modules"
        x = build.train.normalize(build.train.images[:4])
        out = nets[0](x)  # logits, or representations for self-supervised pools
        assert out.shape[0] == 4 and torch.isfinite(out).all(), label
        assert isinstance(sampler.info(), dict), f"{label}: info() must return a dict"
        return
    if kind == "optimizer":
        build = _smoke_build(recipe_changes, host=host)
        param = build.make_component("parameterization", ComponentRef("pixels", {"ipc": 2}), key="synset")
        before = param.images.detach().clone()
        config = entry.structure(options, key="optimizer")
        opt = entry.factory(config, build, param_groups=param.param_groups(), parameterization=param, total_steps=2)
        opt.prepare()
        opt.zero_grad()
        param.materialize().images.square().sum().backward()
        opt.step()
        assert not torch.equal(before, param.images.detach()) and math.isfinite(opt.lr), f"{label}: no update"
        return
    if kind == "evaluator":
        build = _smoke_build(recipe_changes, per_class=4, host=host)
        evaluator = entry.factory(entry.structure(options, key="eval"), build)
        assert isinstance(evaluator, Evaluator), f"{label}: not a ddcore.Evaluator"
        syn = SynBatch(torch.randn(6, 3, 8, 8), torch.arange(3).repeat_interleave(2))
        if (entry.smoke or {}).get("targets"):  # self-supervised sets carry target representations
            syn = SynBatch(syn.images, None, torch.randn(6, int(entry.smoke["targets"])))
        result = evaluator.evaluate(syn, seed=0)
        check_evaluation_result(result, label)
        if evaluator.sharded:  # the sharded path gives the same result as evaluate()
            units = list(evaluator.units())
            values = evaluator.evaluate_units(syn, seed=0, units=units)
            again = evaluator.summarize(syn, list(zip(units, values)))
            assert math.isclose(again["mean"], result["mean"], rel_tol=1e-4, abs_tol=1e-4), \
                f"{label}: evaluate_units + summarize disagree with evaluate ({again['mean']} vs {result['mean']})"
        return
    if kind == "table":
        # the plugin's own table in a short run that evaluates once: its lifecycle hooks see every phase
        recipe = tiny_recipe(**{name: options},
                             run={"iterations": 2, "log_every": 1, "eval_every": 2, "checkpoint_every": 0,
                                  "progress": False, "compile": "off"},
                             **recipe_changes)
        result = run_recipe(recipe, tmp_path, host=host)
        config = result.run.recipe_table(name)
        assert isinstance(config, entry.config), \
            f"{label}: Run.recipe_table({name!r}) gave {type(config).__name__}, not {entry.config.__name__}"
        return
    if kind == "objective":
        recipe = tiny_recipe(objective=[{"name": name, "weight": 1.0, **options}],
                             run={"iterations": 1, "log_every": 1, "checkpoint_every": 0, "progress": False,
                                  "compile": "off"},
                             **recipe_changes)
        recipe.pop("eval")
        result = run_recipe(recipe, tmp_path, host=host)
        (metrics,) = result.metrics()
        assert math.isfinite(metrics[f"loss/{name}"]), f"{label}: non-finite loss"
        grads = [p.grad for p in result.run.parameterization.parameters() if p.requires_grad]
        assert any(g is not None for g in grads), f"{label}: the term's loss did not reach the synthetic parameters"
        assert all(torch.isfinite(g).all() for g in grads if g is not None), f"{label}: non-finite gradient"
        return
    raise AssertionError(f"no smoke test for kind {kind!r}")


def distribution_entries(distribution: str, host=None) -> list:
    """The registry entries of ``distribution`` (normalised name), in kind order."""
    from ddcore.plugins import get_host

    host = host or get_host()
    want = distribution.lower().replace("_", "-")
    entries = [e for e in host.registry.entries() if e.distribution.lower().replace("_", "-") == want]
    return entries


def _source_dirs(distribution: str) -> list[Path]:
    """The import packages of an installed distribution (for the public-API check)."""
    import importlib.metadata as md
    import importlib.util

    dist = md.distribution(distribution)
    roots = set()
    for ep in dist.entry_points:
        if ep.group == "ddcore":
            spec = importlib.util.find_spec(ep.value.split(":")[0].split(".")[0])
            if spec is not None and spec.submodule_search_locations:
                roots.update(Path(p) for p in spec.submodule_search_locations)
    return sorted(roots)


def check_plugin(distribution: str, tmp_path: str | Path, *, src: Iterable[str | Path] = (), host=None) -> None:
    """The whole contract of an installed plugin distribution, in one call (raises ``AssertionError``).

    * it loads without faults (strict host: import errors, unknown hooks, name collisions);
    * it registers at least one component, each passing :func:`smoke_test` (its declared ``smoke`` config);
    * its sources (``src``; default: its import packages) import only ddcore's public API.
    """
    from ddcore.plugins import PluginHost

    host = host or PluginHost(autoload=True, strict=True)
    entries = distribution_entries(distribution, host)
    assert entries, f"{distribution}: registers no component (a forgotten @ddcore.hookimpl?)"
    failures = []
    for entry in entries:
        try:
            smoke_test(entry, Path(tmp_path) / f"{entry.kind}-{entry.name}", host=host)
        except Exception as exc:  # noqa: BLE001 - collect every failing component
            failures.append(f"{entry.kind} '{entry.name}': {type(exc).__name__}: {exc}")
    problems = check_public_imports(list(src) or _source_dirs(distribution))
    assert not failures and not problems, "\n".join(failures + problems)


def contract_tests(distribution: str, *, src: Iterable[str | Path] = (), public_api: bool = True):
    """A pytest test function running the contract of ``distribution``, one test item per check.

    In a plugin's tests, one line: ``test_ddcore_contract = ddcore.testing.contract_tests("ddcore-mine")``.
    Items: ``public-api`` (the sources import only public names) and ``<kind>:<name>`` (:func:`smoke_test`).
    """
    import pytest

    from ddcore.plugins import PluginHost

    src = list(src)
    host = PluginHost(autoload=True, strict=False)
    params = [pytest.param("public-api", id="public-api")] if public_api else []
    params += [pytest.param(e, id=f"{e.kind}:{e.name}") for e in distribution_entries(distribution, host)]
    if len(params) == int(public_api):
        params.append(pytest.param(None, id="no-components"))

    @pytest.mark.parametrize("check", params)
    def test_contract(check, tmp_path):
        if check == "public-api":
            problems = check_public_imports(src or _source_dirs(distribution))
            assert not problems, "\n".join(problems)
        elif check is None:
            broken = host.broken.get(distribution) or next(
                (b for b in host.broken.values() if b.distribution.lower() == distribution.lower()), None)
            if broken is None and _lifecycle_hooks(distribution, host):
                return  # a lifecycle-only plugin (a logger, a tracker): it implements hooks, registers nothing
            raise AssertionError(broken.line() if broken else
                                 f"{distribution}: registers no component and implements no hook "
                                 f"(a forgotten @ddcore.hookimpl?)")
        else:
            smoke_test(check, tmp_path, host=host)

    return test_contract


def _lifecycle_hooks(distribution: str, host) -> list[str]:
    """Names of the ``ddcore_*`` hooks the plugins of ``distribution`` implement (registration hooks included)."""
    want = distribution.lower().replace("_", "-")
    names = []
    for name, plugin in host.pm.list_name_plugin():
        dist = host.plugin_distribution(name)
        if dist is None or dist.lower().replace("_", "-") != want:
            continue
        names += [caller.name for caller in (host.pm.get_hookcallers(plugin) or [])]
    return sorted(set(names))


def write_fake_mnist(root: Path) -> None:
    """The four MNIST idx files torchvision reads under ``root/MNIST/raw``: 3 classes x 3 images (no download)."""
    import struct

    import numpy as np

    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        labels = np.repeat(np.arange(3, dtype=np.uint8), 3)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, len(labels), 28, 28)
                                                         + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.tobytes())


def write_fake_imagefolder(root: Path) -> None:
    """``root/{train,test}/{a,b,c}/*.png``: a 3-class folder tree of 8x8 RGB images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b", "c"):
            (Path(root) / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(Path(root) / split / c / f"{i}.png")


class local_install:
    """Context manager: make a plugin project (``pyproject.toml`` + ``src/``) importable and its entry points
    discoverable in this process, as an editable ``pip install`` would, without touching the environment.

    It writes ``<name>-<version>.dist-info`` (``METADATA``, ``entry_points.txt``) under ``site_dir`` and puts
    ``site_dir`` and the project's ``src`` on ``sys.path``; on exit both are removed and the process-wide plugin host
    is reset. Use it for fixture packages that must never reach users' environments.
    """

    def __init__(self, project_dir: str | Path, site_dir: str | Path):
        self.project = Path(project_dir)
        self.site = Path(site_dir)

    def __enter__(self) -> "local_install":
        import importlib

        meta = tomllib.loads((self.project / "pyproject.toml").read_text())["project"]
        self.name, self.version = meta["name"], meta["version"]
        info = self.site / f"{self.name.replace('-', '_')}-{self.version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {self.name}\nVersion: {self.version}\n")
        lines = []
        for group, eps in meta.get("entry-points", {}).items():
            lines.append(f"[{group}]")
            lines += [f"{k} = {v}" for k, v in eps.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        self._paths = [str(self.site), str(self.project / "src")]
        sys.path[:0] = self._paths
        importlib.invalidate_caches()
        _reset_default_host()
        return self

    def __exit__(self, *exc) -> None:
        import importlib

        for p in self._paths:
            if p in sys.path:
                sys.path.remove(p)
        package = self.name.replace("-", "_")
        for mod in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[mod]
        importlib.invalidate_caches()
        _reset_default_host()


def _reset_default_host() -> None:
    import ddcore.plugins

    ddcore.plugins._default_host = None
