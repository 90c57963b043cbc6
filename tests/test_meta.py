"""Meta-tests (datasette/timm style): the hook surface stays honest and the plugin contract is enforced.

* every hook spec of :mod:`ddcore.hookspecs` says when it is called, documents each parameter with ``:param``
  and has a ``test_hook_<name>`` test somewhere under ``tests/`` (the ones below);
* the built-in components pass the plugin kit's contract (``ddcore.testing.contract_tests``), the same checks
  every plugin runs on its own components from the tiny configs they declare at registration;
* in-tree plugins import only ddcore's public API and use the kit; the core has no import cycle; the per-class
  helpers exist once.
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import pytest

import ddcore
from ddcore import hookspecs
from ddcore.plugins import PluginHost, get_host
from ddcore.registry import KINDS
from ddcore.testing import HookRecorder, check_public_imports, contract_tests, run_recipe, tiny_recipe

TESTS = Path(__file__).resolve().parent
SPECS = sorted(n for n in vars(hookspecs) if n.startswith("ddcore_"))
REGISTRY = get_host().registry  # every installed plugin, as CI installs them

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

    @ddcore.hookimpl
    def ddcore_register_recipe_tables(self, registry):
        registry.add("probe_table", object)


PROBE_NAMES = {"data": "probe_data", "backbone": "ProbeNet", "parameterization": "probe_param",
               "init": "probe_init", "augmentation": "probe_aug", "sampler": "probe_sampler",
               "objective": "probe_term", "optimizer": "probe_opt", "evaluator": "probe_eval",
               "table": "probe_table"}


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


def test_hook_ddcore_register_recipe_tables(probe_host):
    _check_registered(probe_host, "table")  # structuring and validation: tests/test_plugins.py


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


# -- the plugin contract: the kit's checks, the public surface, the import graph ----------------------------------
ROOT = TESTS.parent
PLUGIN_DIRS = sorted(p for p in (ROOT / "plugins").glob("ddcore-*") if p.is_dir())

# The built-in components pass exactly the checks every plugin's components pass (ddcore.testing.contract_tests;
# each in-tree plugin runs the same line in its own tests, with its components' declared smoke configs).
test_builtin_contract = contract_tests("ddcore", public_api=False)


def test_every_kind_has_components():
    for kind in KINDS:
        assert REGISTRY.entries(kind), kind


def test_smoke_configs_come_from_the_registry_not_from_core_tables():
    # no per-plugin table of test configs in the core's tests (a third party could not extend one): the plugins
    # declare them when they register
    assert not {"OPTIONS", "OBJECTIVE_RECIPES", "SAMPLER_SYNSET", "TINY_TEACHER"} & set(globals())
    for kind, name in (("sampler", "model_queue"), ("parameterization", "krr_pixels"), ("objective", "krr")):
        if name in REGISTRY.names(kind):
            assert REGISTRY.get(kind, name).smoke is not None, (kind, name)


@pytest.mark.parametrize("plugin", [pytest.param(p, id=p.name) for p in PLUGIN_DIRS])
def test_in_tree_plugin_imports_only_public_api(plugin):
    problems = check_public_imports([d for d in (plugin / "src", plugin / "tests", plugin / "scripts",
                                                 plugin / "bench") if d.exists()])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("plugin", [pytest.param(p, id=p.name) for p in PLUGIN_DIRS])
def test_in_tree_plugin_uses_the_kit(plugin):
    # its tests run ddcore's contract (one line), and it pins the compatible core range
    tests = "".join(p.read_text() for p in (plugin / "tests").glob("test_*.py"))
    assert re.search(rf'contract_tests\("{plugin.name}"\)', tests), f"{plugin.name}: no contract_tests(...) line"
    assert '"ddcore>=0.1,<0.2"' in (plugin / "pyproject.toml").read_text()


def test_public_import_check_catches_private_and_unexported_names(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import ddcore\nfrom ddcore.context import derive_seed\nfrom ddcore.engine import cache_dir\n"
                   "from ddcore.data import _cache\nimport ddcore._docs\nx = ddcore.hookimpl\ny = ddcore.engine_thing\n")
    problems = check_public_imports([bad])
    assert len(problems) == 4, problems
    assert any("'cache_dir' is not in ddcore.engine.__all__" in p for p in problems)
    assert any("ddcore.data._cache is a private module" in p for p in problems)
    assert any("ddcore._docs is a private module" in p for p in problems)
    assert any("ddcore.engine_thing" in p for p in problems)


def test_every_public_module_declares_all():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(ddcore.__path__, "ddcore."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        assert isinstance(getattr(module, "__all__", None), list), f"{info.name} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.__all__ lists {name!r}, which does not exist"


def _core_import_graph() -> dict[str, set[str]]:
    """Module -> core modules it imports at import time (not inside functions, not under TYPE_CHECKING)."""
    import ast

    graph: dict[str, set[str]] = {}
    core = ROOT / "ddcore"
    for path in core.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:  # top level only
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for sub in ast.walk(node) if isinstance(node, (ast.Import, ast.ImportFrom, ast.If, ast.Try)) else ():
                if isinstance(sub, ast.Import):
                    deps.update(a.name for a in sub.names if a.name.startswith("ddcore"))
                elif isinstance(sub, ast.ImportFrom) and sub.level == 0 and (sub.module or "").startswith("ddcore"):
                    for a in sub.names:
                        full = f"{sub.module}.{a.name}"
                        deps.add(full if (core / Path(*full.split(".")[1:])).with_suffix(".py").exists()
                                 or (core / Path(*full.split(".")[1:]) / "__init__.py").exists() else sub.module)
        # importing a package's submodule runs the package first; that is not a dependency of the package's own
        deps.discard(name)
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def test_core_has_no_import_cycle():
    graph = _core_import_graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep] if dep in stack else [node, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep in graph and not state.get(dep):
                visit(dep, stack + [dep])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])
    assert "ddcore.components" in graph and graph["ddcore.context"] >= {"ddcore.components"}


def test_per_class_helpers_exist_once():
    import ast

    found: dict[str, list[str]] = {}
    files = list((ROOT / "ddcore").rglob("*.py")) + [p for d in PLUGIN_DIRS for p in (d / "src").rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in ("class_ids", "class_means", "class_sums",
                                                                      "class_blocks"):
                found.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert found == {name: ["ddcore/perclass.py"] for name in ("class_ids", "class_means", "class_sums", "class_blocks")}
    from ddcore._scaffold import PLUGINS

    assert all("def class_means" not in text for text in PLUGINS.values())


def test_dependencies_are_declared_where_they_are_imported():
    # the core declares no kornia and imports none; every plugin that imports it declares it
    import ast
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    def imports_kornia(root: Path) -> bool:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n == "kornia" or n.startswith("kornia.") for n in names):
                    return True
        return False

    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in core if d.startswith("kornia")] and not imports_kornia(ROOT / "ddcore")
    for plugin in PLUGIN_DIRS:
        deps = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]["dependencies"]
        if imports_kornia(plugin / "src"):
            assert any(d.startswith("kornia") for d in deps), f"{plugin.name} imports kornia but does not declare it"


def test_files_cache_dir_and_atomic_writes(tmp_path, monkeypatch):
    from ddcore.files import atomic_write_text, cache_dir, cache_root

    monkeypatch.setenv("DDCORE_CACHE", str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache"
    folder = cache_dir("ddcore-mine", "teachers")
    assert folder.is_dir() and folder == tmp_path / "cache" / "ddcore-mine" / "teachers"
    atomic_write_text(folder / "a.json", "{}")
    assert (folder / "a.json").read_text() == "{}" and [p.name for p in folder.iterdir()] == ["a.json"]
