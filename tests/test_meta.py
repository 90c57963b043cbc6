"""Meta-tests (datasette/timm style): the hook surface stays honest and every registered component works.

* every hook spec of :mod:`ddcore.hookspecs` says when it is called, documents each parameter with ``:param``
  and has a ``test_hook_<name>`` test somewhere under ``tests/`` (the ones below);
* every component registered by *any* installed plugin passes a smoke test, parametrised over the registry, so
  a new plugin is covered as soon as it is installed. Components that cannot run from their defaults at tiny
  scale (required options, downloads, teacher/pool training) get an explicit tiny config in the override
  tables below; nothing is skipped.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import re
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ddcore
from ddcore import hookspecs
from ddcore.components import Augmentation, Backbone, BackboneOutput
from ddcore.config import ComponentRef
from ddcore.plugins import PluginHost, get_host
from ddcore.recipe import parse_recipe
from ddcore.registry import KINDS
from ddcore.testing import HookRecorder, make_build_context, run_recipe, tiny_dataset, tiny_recipe
from ddcore.types import SynBatch

TESTS = Path(__file__).resolve().parent
SPECS = sorted(n for n in vars(hookspecs) if n.startswith("ddcore_"))
REGISTRY = get_host().registry  # every installed plugin, as CI installs them

# -- tiny configs for components that cannot run from their defaults at test scale ----------------------------
#: A ddcore-krr teacher (Barlow Twins ResNet18) small enough to train in about a second on 2 CPU cores; used by
#: every parameterization with target representations (krr_pixels, pca, pca_augmented). It is cached in the test
#: session's $DDCORE_CACHE, so the tests on the same tiny data train it once.
TINY_TEACHER = {"base_width": 4, "epochs": 1, "batch_size": 8, "projector": [16, 16], "warmup_epochs": 0,
                "amp": False, "train_limit": 16, "optimizer": "sgd"}

#: (kind, name) -> options for the component smoke tests of kinds other than objectives.
OPTIONS: dict[tuple[str, str], dict] = {
    ("data", "npz"): {"path": "mnist", "classes": 3, "train_per_class": 5, "test_per_class": 2},  # $DDCORE_DATA
    ("data", "torchvision"): {"dataset": "MNIST", "root": "<tmp>", "download": False},  # fake idx files, no download
    ("data", "imagefolder"): {"root": "<tmp>"},  # a 3-class tree of PNGs written by the test
    ("parameterization", "pixels"): {"ipc": 2},
    ("parameterization", "krr_pixels"): {"num": 6, "teacher": TINY_TEACHER, "kmeans_iterations": 2},
    ("parameterization", "pca"): {"budget": 3, "teacher": TINY_TEACHER},
    ("parameterization", "pca_augmented"): {"m": 6, "num_bases_x": 2, "num_bases_y": 2, "teacher": TINY_TEACHER,
                                            "approx_epochs": 2},
    ("sampler", "model_queue"): {"initial_nets": 1, "fetch_net_num": 1, "model_train_steps": 1, "trained_bs": 8},
    ("sampler", "model_pool"): {"num_models": 1, "max_steps": 1},
    ("sampler", "inner_loop"): {"updates_per_net": 1, "train_epochs": 1, "batch_train": 8, "bn_per_class": 2},
    ("evaluator", "train_from_scratch"): {"num_models": 1, "epochs": 1, "batch_size": 8, "test_batch_size": 64},
    ("evaluator", "continual"): {"steps": 3, "num_models": 1, "epochs": 1, "batch_size": 8, "baselines": []},
    ("evaluator", "nas_proxy"): {"depth": [1], "width": [4, 8], "act": ["relu"], "norm": ["none"],
                                 "pooling": ["avgpooling"], "epochs": 1, "reference_epochs": 1, "batch_size": 8},
    ("evaluator", "ssl_transfer"): {"num_runs": 1, "pretrain_epochs": 1, "pretrain_batch_size": 8,
                                    "test_batch_size": 64,
                                    "targets": [{"name": "source", "protocol": "linear", "iterations": 2,
                                                 "batch_size": 8}]},
}

#: Samplers are built after the parameterization (as the engine does); name -> the synset they need.
SAMPLER_SYNSET: dict[str, dict] = {
    # the KRR pool trains its models online on the synthetic (image, target) pairs of krr_pixels
    "model_pool": {"name": "krr_pixels", **OPTIONS[("parameterization", "krr_pixels")]},
}

#: Objectives run one real engine step on digits through run_recipe; name -> changes to the tiny recipe
#: (top-level keys) plus "options" for the [[objective]] table. Each states why it needs them.
OBJECTIVE_RECIPES: dict[str, dict] = {
    # weighted by the sampled net's running accuracy, which only the IDM queue reports
    "class_aware_ce": {"sampler": {"name": "model_queue", "initial_nets": 1, "fetch_net_num": 1,
                                   "model_train_steps": 1, "trained_bs": 16}},
    # needs a pool of pretrained networks: one small ConvNet trained for one epoch
    "class_centralization": {"options": {"pool": {"size": 1, "epochs": 1, "batch": 64,
                                                  "arch": {"name": "ConvNet", "width": 8, "depth": 2}}}},
    # differentiates the loss w.r.t. the network weights: trainable networks from DC's inner loop
    "gradient_match": {"sampler": {"name": "inner_loop", "updates_per_net": 1, "train_epochs": 1,
                                   "batch_train": 16, "bn_per_class": 2}},
    # KRR-ST: target representations (krr_pixels with a tiny teacher), its pool sampler and uniform real batches;
    # digits as RGB because the teacher's SSL augmentations (colour jitter) need three channels
    "krr": {"data": {"name": "digits", "channels": 3, "train_per_class": 10, "test_per_class": 2},
            "synset": {"name": "krr_pixels", "num": 10, "teacher": TINY_TEACHER, "kmeans_iterations": 2},
            "sampler": {"name": "model_pool", "num_models": 1, "max_steps": 1},
            "backbone": {"name": "ConvNetKRR", "channels": [8, 16]},
            "real": {"sampling": "uniform", "batch": 32},
            "options": {"real_augment": "none"}},
}


# -- hook specs: documented and tested ------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPECS)
def test_hook_spec_is_documented_and_tested(name):
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec) or ""
    assert re.search(r"\bcalled\b", doc, re.IGNORECASE), f"{name}: the docstring must say when it is called"
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"{name}: parameter {param!r} needs a ':param {param}:' line"
    pattern = re.compile(rf"^\s*def test_hook_{name}\b", re.MULTILINE)
    assert any(pattern.search(p.read_text()) for p in TESTS.rglob("test_*.py")), (
        f"{name} has no test named test_hook_{name} under tests/")


# Registration hooks: one in-process plugin registering a component of every kind.
class Probe:
    """An in-process plugin using every registration hook (as a third party would)."""

    __name__ = "meta-probe"

    @ddcore.hookimpl
    def ddcore_register_data_sources(self, registry):
        registry.add("probe_data", object)

    @ddcore.hookimpl
    def ddcore_register_backbones(self, registry):
        registry.add("ProbeNet", object, doc="a probe")

    @ddcore.hookimpl
    def ddcore_register_parameterizations(self, registry):
        registry.add("probe_param", object)

    @ddcore.hookimpl
    def ddcore_register_inits(self, registry):
        registry.add("probe_init", object)

    @ddcore.hookimpl
    def ddcore_register_augmentations(self, registry):
        registry.add("probe_aug", object)

    @ddcore.hookimpl
    def ddcore_register_samplers(self, registry):
        registry.add("probe_sampler", object)

    @ddcore.hookimpl
    def ddcore_register_objectives(self, registry):
        registry.add("probe_term", object)

    @ddcore.hookimpl
    def ddcore_register_optimizers(self, registry):
        registry.add("probe_opt", object)

    @ddcore.hookimpl
    def ddcore_register_evaluators(self, registry):
        registry.add("probe_eval", object)


PROBE_NAMES = {"data": "probe_data", "backbone": "ProbeNet", "parameterization": "probe_param",
               "init": "probe_init", "augmentation": "probe_aug", "sampler": "probe_sampler",
               "objective": "probe_term", "optimizer": "probe_opt", "evaluator": "probe_eval"}


@pytest.fixture(scope="module")
def probe_host():
    return PluginHost(autoload=False, extra=[Probe()])


def _check_registered(host, kind):
    entry = host.registry.get(kind, PROBE_NAMES[kind])
    assert entry.kind == kind and entry.plugin == "meta-probe" and entry.distribution == "(registered in-process)"
    assert (kind, PROBE_NAMES[kind]) in {p.name: p for p in host.plugins()}["meta-probe"].components
    assert entry.config is ddcore.NoConfig


def test_hook_ddcore_register_data_sources(probe_host):
    _check_registered(probe_host, "data")


def test_hook_ddcore_register_backbones(probe_host):
    _check_registered(probe_host, "backbone")
    assert probe_host.registry.get("backbone", "ProbeNet").doc == "a probe"


def test_hook_ddcore_register_parameterizations(probe_host):
    _check_registered(probe_host, "parameterization")


def test_hook_ddcore_register_inits(probe_host):
    _check_registered(probe_host, "init")


def test_hook_ddcore_register_augmentations(probe_host):
    _check_registered(probe_host, "augmentation")


def test_hook_ddcore_register_samplers(probe_host):
    _check_registered(probe_host, "sampler")


def test_hook_ddcore_register_objectives(probe_host):
    _check_registered(probe_host, "objective")


def test_hook_ddcore_register_optimizers(probe_host):
    _check_registered(probe_host, "optimizer")


def test_hook_ddcore_register_evaluators(probe_host):
    _check_registered(probe_host, "evaluator")


def test_probe_covers_every_kind():
    assert set(PROBE_NAMES) == set(KINDS)


# Lifecycle hooks: one tiny run with a HookRecorder.
@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    recorder = HookRecorder()
    recipe = tiny_recipe(run={"iterations": 4, "log_every": 2, "eval_every": 2, "checkpoint_every": 0,
                              "progress": False, "compile": "off"})
    recipe["eval"].update(epochs=1)
    result = run_recipe(recipe, tmp_path_factory.mktemp("hooks"), extra_plugins=[recorder])
    return recorder, result


def test_hook_ddcore_run_started(recorded):
    recorder, _ = recorded
    assert recorder.names()[0] == "ddcore_run_started" and recorder.calls[0][1] == {"start_step": 0}
    assert recorder.names().count("ddcore_run_started") == 1


def test_hook_ddcore_step_end(recorded):
    recorder, _ = recorded
    assert [kw["step"] for n, kw in recorder.calls if n == "ddcore_step_end"] == [0, 1, 2, 3]


def test_hook_ddcore_metrics(recorded):
    recorder, result = recorded
    calls = [kw for n, kw in recorder.calls if n == "ddcore_metrics"]
    assert [kw["step"] for kw in calls] == [2, 4]
    assert all(math.isfinite(kw["metrics"]["loss"]) and "loss/moment_matching" in kw["metrics"] for kw in calls)
    assert [m["step"] for m in result.metrics()] == [2, 4]  # the same lines as metrics.jsonl


def test_hook_ddcore_evaluated(recorded):
    recorder, _ = recorded
    calls = [kw for n, kw in recorder.calls if n == "ddcore_evaluated"]
    assert [kw["step"] for kw in calls] == [2, 4]  # eval_every = 2 and the final evaluation
    assert set(calls[-1]["results"]) >= {"synset", "baselines"} and "random" in calls[-1]["results"]["baselines"]


def test_hook_ddcore_run_finished(recorded):
    recorder, result = recorded
    assert recorder.names()[-1] == "ddcore_run_finished"
    assert recorder.calls[-1][1]["results"] is result.results


# -- smoke tests of every registered component ----------------------------------------------------------------
def _ids(kind):
    return [pytest.param(e, id=f"{e.distribution}:{e.name}") for e in REGISTRY.entries(kind)]


def _options(kind, name, tmp_path=None):
    opts = copy.deepcopy(OPTIONS.get((kind, name), {}))
    return {k: (str(tmp_path) if v == "<tmp>" else v) for k, v in opts.items()}


def _build(shape=(3, 8, 8), per_class=10, **recipe_changes):
    recipe = tiny_recipe(**recipe_changes)
    data = tiny_dataset(num_classes=3, per_class=per_class, shape=shape)
    # the session cache (tests/conftest): teachers and pools trained by one smoke test are reused by the next
    return make_build_context(recipe, data=data, cache_dir=os.environ.get("DDCORE_CACHE"))


def test_every_kind_has_components():
    for kind in KINDS:
        assert REGISTRY.entries(kind), kind


def test_smoke_overrides_name_registered_components():
    # An override for a component that no longer exists would silently test nothing.
    for kind, name in OPTIONS:
        assert name in REGISTRY.names(kind), (kind, name)
    assert set(OBJECTIVE_RECIPES) <= set(REGISTRY.names("objective"))
    assert set(SAMPLER_SYNSET) <= set(REGISTRY.names("sampler"))


def _write_mnist_idx(root: Path) -> None:
    """The four MNIST idx files torchvision reads, 3 classes x 3 images of 28x28 (no download)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        labels = np.repeat(np.arange(3, dtype=np.uint8), 3)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, len(labels), 28, 28)
                                                         + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.tobytes())


def _write_imagefolder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b", "c"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


@pytest.mark.parametrize("entry", _ids("data"))
def test_smoke_data(entry, tmp_path):
    if entry.name == "torchvision":
        _write_mnist_idx(tmp_path)
    if entry.name == "imagefolder":
        _write_imagefolder(tmp_path)
    config = entry.structure(_options("data", entry.name, tmp_path), key="data")
    # data sources are built before the BuildContext exists: the engine hands them the recipe only
    source = entry.factory(config, SimpleNamespace(recipe=parse_recipe(tiny_recipe()), file=None))
    info = source.info()
    images, labels = source.load("train")
    assert images.dtype == torch.uint8 and images.shape[1:] == info.image_shape
    assert labels.dtype == torch.int64 and len(labels) == len(images) and int(labels.max()) < info.num_classes


@pytest.mark.parametrize("entry", _ids("backbone"))
def test_smoke_backbone(entry):
    build = _build(shape=(3, 16, 16), per_class=2)  # 16 px: the smallest input every DC-family net accepts
    net = build.make_backbone(ComponentRef(entry.name, _options("backbone", entry.name)), seed_key=0)
    assert isinstance(net, Backbone)
    x = build.train.normalize(build.train.images)
    out = net.forward_all(x)
    assert isinstance(out, BackboneOutput)
    assert out.logits.shape == (len(x), 3) and out.embedding.shape[0] == len(x) and out.feature_map.ndim == 4
    out.logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("entry", _ids("parameterization"))
def test_smoke_parameterization(entry):
    options = _options("parameterization", entry.name)
    build = _build(synset={"name": entry.name, **options})
    with build.seeded("parameterization"):
        param = entry.factory(entry.structure(options, key="synset"), build)
    syn = param.materialize()
    assert isinstance(syn, SynBatch) and syn.images.shape[1:] == build.info.image_shape
    loss = syn.images.square().sum() + (0 if syn.targets is None else syn.targets.square().sum())
    loss.backward()
    groups = param.param_groups()
    assert any(p.grad is not None for g in groups for p in g["params"]), "no gradient reached the parameters"
    assert param.storage_floats() > 0


@pytest.mark.parametrize("entry", _ids("init"))
def test_smoke_init(entry):
    build = _build()
    init = build.make_component("init", ComponentRef(entry.name, _options("init", entry.name)), key="synset.init")
    images = init([2, 2, 2], build.generator("init"))
    assert images.shape == (6, *build.info.image_shape) and torch.isfinite(images).all()


@pytest.mark.parametrize("entry", _ids("augmentation"))
def test_smoke_augmentation(entry):
    build = _build()
    aug = build.make_component("augmentation", ComponentRef(entry.name, _options("augmentation", entry.name)),
                               key="augment[0]")
    assert isinstance(aug, Augmentation)
    images = torch.randn(6, *build.info.image_shape, requires_grad=True)
    labels = torch.arange(3).repeat_interleave(2)
    if aug.kind == "siamese":
        params = aug.sample(3, build.generator("augment", 0, 0), build.device)
        out = aug.apply(images, params, labels)
        assert out.shape[0] == 6
        assert aug.random(images.detach(), build.generator("eval")).shape[0] == 6
    else:
        out = aug.expand(SynBatch(images, labels)).images
        assert out.shape[0] >= 6
    out.sum().backward()
    assert images.grad is not None


@pytest.mark.parametrize("entry", _ids("sampler"))
def test_smoke_sampler(entry):
    synset = SAMPLER_SYNSET.get(entry.name, {"name": "pixels", "ipc": 2})
    build = _build(synset=synset)
    with build.seeded("parameterization"):
        build.make_component("parameterization", ComponentRef.parse(synset), key="synset")
    sampler = build.make_component("sampler", ComponentRef(entry.name, _options("sampler", entry.name)),
                                   key="sampler")
    nets = sampler.nets(0)
    assert nets and all(isinstance(n, torch.nn.Module) for n in nets)
    x = build.train.normalize(build.train.images[:4])
    out = nets[0](x)  # logits, or representations for self-supervised pools
    assert out.shape[0] == 4 and torch.isfinite(out).all()
    assert isinstance(sampler.info(), dict)


@pytest.mark.parametrize("entry", _ids("optimizer"))
def test_smoke_optimizer(entry):
    build = _build()
    param = build.make_component("parameterization", ComponentRef("pixels", {"ipc": 2}), key="synset")
    before = param.images.detach().clone()
    config = entry.structure(_options("optimizer", entry.name), key="optimizer")
    opt = entry.factory(config, build, param_groups=param.param_groups(), parameterization=param, total_steps=2)
    opt.prepare()
    opt.zero_grad()
    param.materialize().images.square().sum().backward()
    opt.step()
    assert not torch.equal(before, param.images.detach()) and math.isfinite(opt.lr)


@pytest.mark.parametrize("entry", _ids("evaluator"))
def test_smoke_evaluator(entry):
    build = _build(shape=(3, 8, 8), per_class=4)
    config = entry.structure(_options("evaluator", entry.name), key="eval")
    evaluator = entry.factory(config, build)
    syn = SynBatch(torch.randn(6, 3, 8, 8), torch.arange(3).repeat_interleave(2))
    if entry.name == "ssl_transfer":  # self-supervised sets carry target representations
        syn = SynBatch(syn.images, None, torch.randn(6, 16))
    result = evaluator.evaluate(syn, seed=0)
    assert math.isfinite(result["mean"])


@pytest.mark.parametrize("entry", _ids("objective"))
def test_smoke_objective(entry, tmp_path):
    changes = copy.deepcopy(OBJECTIVE_RECIPES.get(entry.name, {}))
    options = changes.pop("options", {})
    recipe = tiny_recipe(objective=[{"name": entry.name, "weight": 1.0, **options}],
                         run={"iterations": 1, "log_every": 1, "checkpoint_every": 0, "progress": False},
                         **changes)
    recipe.pop("eval")
    result = run_recipe(recipe, tmp_path)
    (metrics,) = result.metrics()
    assert math.isfinite(metrics[f"loss/{entry.name}"])
    grads = [p.grad for p in result.run.parameterization.parameters() if p.requires_grad]
    assert any(g is not None for g in grads), "the term's loss did not reach the synthetic parameters"
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
