"""Helpers for testing ddcore plugins (yours and ours).

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
    "HookRecorder", "RunResult", "StubBuild", "StubBuildWithNets", "StubTrainSplit", "TinyConvNet", "make_build_context", "make_step_context", "require_datasets", "run_recipe",
    "tiny_dataset", "tiny_recipe",
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
) -> RunResult:
    """Run a recipe end to end into ``tmp_path / out_name``.

    :param recipe: a path to a TOML file, TOML text, or a mapping (e.g. from :func:`tiny_recipe`).
    :param overrides: ``key.path=value`` strings, as ``--set``.
    :param extra_plugins: plugin objects registered in-process for this run (e.g. a :class:`HookRecorder`).
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


def make_step_context(build, real, syn, nets, step: int = 0, info: Optional[dict] = None,
                      real_chunk: int = 0) -> StepContext:
    """A StepContext over given (already augmented) real/syn batches, as the engine would hand to objectives."""
    return StepContext(step=step, build=build, real=real, real_raw=real, syn=syn, syn_raw=syn, nets=nets,
                       info=info or {}, aug_params=[], real_chunk=real_chunk)


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
