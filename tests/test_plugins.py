"""Discovery through real entry points, fault isolation and blame, `ddcore plugins`, the hook deprecation path."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pluggy
import pytest
import torch

import attrs

import ddcore
from ddcore.cli import main
from ddcore.config import option, positive
from ddcore.errors import PluginError, RecipeError
from ddcore.plugins import PluginHost
from ddcore.recipe import parse_recipe, validate
from ddcore.registry import KINDS
from ddcore.testing import check_plugin, local_install, run_recipe, tiny_recipe

ROOT = Path(__file__).resolve().parents[1]


def _project(root: Path, name: str, plugin_source: str) -> Path:
    """A plugin project ``ddcore-<name>`` (entry point ``<name>``) whose hookimpl module is ``plugin_source``."""
    pkg = root / f"ddcore-{name}"
    (pkg / "src" / f"ddcore_{name}").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "ddcore-{name}"
        version = "1.2.3"
        [project.entry-points.ddcore]
        {name} = "ddcore_{name}.plugin"
        """))
    (pkg / "src" / f"ddcore_{name}" / "__init__.py").write_text("")
    (pkg / "src" / f"ddcore_{name}" / "plugin.py").write_text(textwrap.dedent(plugin_source))
    return pkg


BROKEN_IMPORT = """
    import ddcore
    import ddcore_no_such_dependency  # the plugin's own bug
"""


def test_builtins_register_every_kind():
    host = PluginHost(autoload=False)
    for kind in KINDS:
        if kind == "table":
            continue  # recipe tables are for plugins: the core's own tables are TOP_KEYS
        assert host.registry.names(kind), f"no built-in {kind}"
    assert {"pixels"} <= set(host.registry.names("parameterization"))
    assert "random_init" in host.registry.names("sampler")


def test_entry_point_plugin_is_discovered(testplugin):
    host = PluginHost(autoload=True)
    entry = host.registry.get("objective", "testplugin_pixel_norm")
    assert entry.distribution == "ddcore-testplugin" and entry.plugin == "testplugin"
    info = {p.name: p for p in host.plugins()}["testplugin"]
    assert info.version == "0.0.1"
    assert ("objective", "testplugin_pixel_norm") in info.components and ("init", "testplugin_zeros") in info.components


def test_fixture_plugins_stay_out_of_users_environments():
    # the test-fixture packages are made discoverable by the tests themselves, never installed by the dev setup
    lines = [ln for ln in (ROOT / "requirements-dev.txt").read_text().splitlines() if not ln.startswith("#")]
    assert not [ln for ln in lines if "tests/fixtures" in ln]


def test_autoload_can_be_disabled(monkeypatch, testplugin):
    monkeypatch.setenv("DDCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    host = PluginHost()
    assert "testplugin_pixel_norm" not in host.registry.names("objective")
    with pytest.raises(PluginError, match="ddcore-testplugin.*DDCORE_DISABLE_PLUGIN_AUTOLOAD"):
        host.require(["ddcore-testplugin"])


# -- faults: a broken plugin is reported once, on one line, and left out; the rest works ---------------------------
def test_plugin_that_fails_to_import_is_left_out_and_listed_as_broken(tmp_path, capsys, testplugin):
    reports = []
    with local_install(_project(tmp_path, "crashy", BROKEN_IMPORT), tmp_path / "site"):
        host = PluginHost(autoload=True, report=reports.append)
        assert len(reports) == 1 and "\n" not in reports[0]
        assert reports[0].startswith("plugin 'crashy' (distribution ddcore-crashy 1.2.3) broken: failed to load: "
                                     "ModuleNotFoundError: No module named 'ddcore_no_such_dependency'")
        assert "DDCORE_DISABLE_PLUGINS=crashy" in reports[0]
        assert "testplugin_pixel_norm" in host.registry.names("objective")  # the other plugins work
        # a recipe that needs it fails naming it (exit 2, one line)
        with pytest.raises(PluginError, match=r"r.toml: plugins: the recipe needs plugin 'crashy' "
                                              r"\(distribution ddcore-crashy 1.2.3\) broken: failed to load"):
            host.require(["ddcore-crashy"], file="r.toml")
        # ddcore plugins lists it with the reason; the warning went to stderr once
        assert main(["plugins"]) == 0
        captured = capsys.readouterr()
        assert "crashy  [ddcore-crashy 1.2.3]  BROKEN: failed to load: ModuleNotFoundError" in captured.out
        assert captured.err.count("plugin 'crashy'") == 1
        # a recipe that does not need it runs
        assert main(["recipe", "check", str(ROOT / "recipes" / "quickstart.toml")]) == 0


def test_unknown_component_error_mentions_left_out_plugins(tmp_path):
    with local_install(_project(tmp_path, "crashy", BROKEN_IMPORT), tmp_path / "site"):
        host = PluginHost(autoload=True, report=lambda line: None)
        with pytest.raises(RecipeError, match=r"unknown objective 'crashy_term'; available: .*left out: plugin "
                                              r"'crashy' \(distribution ddcore-crashy 1.2.3\) broken"):
            host.registry.get("objective", "crashy_term", key="objective[0].name")


def test_disable_plugins_switches_plugins_off(monkeypatch, testplugin, capsys):
    monkeypatch.setenv("DDCORE_DISABLE_PLUGINS", "testplugin, other")
    host = PluginHost(autoload=True)
    assert "testplugin_pixel_norm" not in host.registry.names("objective")
    assert host.broken["testplugin"].disabled
    with pytest.raises(PluginError, match="needs plugin 'testplugin' .* disabled: switched off by "
                                          "DDCORE_DISABLE_PLUGINS"):
        host.require(["ddcore-testplugin"])
    assert capsys.readouterr().err == ""  # switched off on purpose: nothing to warn about
    monkeypatch.setenv("DDCORE_DISABLE_PLUGINS", "ddcore-testplugin")  # the distribution name works too
    assert "testplugin_pixel_norm" not in PluginHost(autoload=True).registry.names("objective")


class Duplicate:
    __name__ = "duplicate-plugin"

    @ddcore.hookimpl
    def ddcore_register_samplers(self, registry):
        registry.add("random_init", object)

    @ddcore.hookimpl
    def ddcore_register_objectives(self, registry):
        registry.add("duplicate_term", object)


def test_colliding_plugin_is_left_out_whole_naming_both_distributions():
    reports = []
    host = PluginHost(autoload=False, extra=[Duplicate()], report=reports.append)
    (line,) = reports
    assert "plugin 'duplicate-plugin' (distribution (registered in-process)) broken: sampler 'random_init' is " \
           "registered twice: by plugin 'ddcore.builtin.samplers' (distribution ddcore)" in line
    assert "duplicate_term" not in host.registry.names("objective")  # nothing of it stays
    assert host.registry.get("sampler", "random_init").distribution == "ddcore"
    with pytest.raises(PluginError, match="registered twice"):
        PluginHost(autoload=False, extra=[Duplicate()], strict=True)


def test_config_must_be_attrs():
    class Bad:
        __name__ = "bad-plugin"

        @ddcore.hookimpl
        def ddcore_register_objectives(self, registry):
            registry.add("bad", object, config=dict)

    with pytest.raises(PluginError, match="must be an attrs class"):
        PluginHost(autoload=False, extra=[Bad()], strict=True)
    host = PluginHost(autoload=False, extra=[Bad()], report=lambda line: None)
    assert "must be an attrs class" in host.broken["bad-plugin"].reason


def test_registration_that_raises_is_the_plugins_fault():
    class Raises:
        __name__ = "raising-plugin"

        @ddcore.hookimpl
        def ddcore_register_objectives(self, registry):
            raise KeyError("oops")

    reports = []
    PluginHost(autoload=False, extra=[Raises()], report=reports.append)
    assert reports == ["plugin 'raising-plugin' (distribution (registered in-process)) broken: "
                       "ddcore_register_objectives raised KeyError: 'oops' (left out; switch it off with "
                       "DDCORE_DISABLE_PLUGINS=raising-plugin)"]


def test_unknown_hook_is_reported():
    class Typo:
        __name__ = "typo-plugin"

        @ddcore.hookimpl
        def ddcore_register_objectivez(self, registry):
            pass

    host = PluginHost(autoload=False, extra=[Typo()], report=lambda line: None)
    assert "ddcore_register_objectivez, which is no hook spec" in host.broken["typo-plugin"].reason
    with pytest.raises(PluginError, match="typo-plugin"):
        PluginHost(autoload=False, extra=[Typo()], strict=True)


def test_hook_named_function_without_marker_warns():
    class Forgot:
        __name__ = "forgetful-plugin"

        def ddcore_register_objectives(self, registry):  # no @ddcore.hookimpl
            registry.add("forgotten", object)

    reports = []
    host = PluginHost(autoload=False, extra=[Forgot()], report=reports.append)
    assert reports == ["plugin 'forgetful-plugin' (distribution (registered in-process)): ddcore_register_objectives "
                       "is named like a hook but has no @ddcore.hookimpl marker, so ddcore never calls it"]
    assert "forgotten" not in host.registry.names("objective")


def test_plugins_own_invalid_default_is_reported_as_its_bug(tmp_path):
    import attrs

    from ddcore.config import positive

    @attrs.define(frozen=True, kw_only=True)
    class BadDefault:
        steps: int = ddcore.option(0, "Steps.", validator=positive)  # the plugin's own bug

    class Term(ddcore.Objective):
        def __call__(self, ctx):
            return ctx.syn.images.mean()

    class Plugin:
        __name__ = "bad-default-plugin"

        @ddcore.hookimpl
        def ddcore_register_objectives(self, registry):
            registry.add("bad_default", Term, config=BadDefault)

    host = PluginHost(autoload=False, extra=[Plugin()])
    recipe = tiny_recipe(objective=[{"name": "bad_default"}])
    with pytest.raises(PluginError, match=r"plugin 'bad-default-plugin' .*: the default of objective 'bad_default' "
                                          r"option 'steps' is invalid .*; this is a bug in the plugin, not in your "
                                          r"recipe \(set objective\[0\]\.steps explicitly"):
        run_recipe(recipe, tmp_path, host=host)
    # a bad value the recipe gives is still the recipe's error
    recipe = tiny_recipe(objective=[{"name": "bad_default", "steps": -1}])
    with pytest.raises(RecipeError, match=r"objective\[0\]\.steps"):
        run_recipe(recipe, tmp_path, host=host, out_name="second")


# -- a term's wrong return: one line naming objective[i], the component and its distribution ------------------------
class WrongReturns:
    __name__ = "wrong-returns"

    @ddcore.hookimpl
    def ddcore_register_objectives(self, registry):
        registry.add("vector_term", VectorTerm)
        registry.add("int_term", IntTerm)
        registry.add("meta_term", MetaTerm)


class VectorTerm(ddcore.Objective):
    def __call__(self, ctx):
        return ctx.syn.images.mean(dim=(1, 2, 3))  # forgot the sum over images


class IntTerm(ddcore.Objective):
    def __call__(self, ctx):
        return torch.tensor(3)


class MetaTerm(ddcore.Objective):
    def __call__(self, ctx):
        return torch.zeros((), device="meta")


@pytest.mark.parametrize("name, got", [
    ("vector_term", r"a tensor of shape \[20\], dtype float32, on cpu"),
    ("int_term", r"a tensor of shape \[\], dtype int64, on cpu"),
    ("meta_term", r"a tensor of shape \[\], dtype float32, on meta"),
])
def test_wrong_term_return_names_the_recipe_entry_component_and_distribution(tmp_path, name, got):
    host = PluginHost(autoload=False, extra=[WrongReturns()])
    recipe = tiny_recipe(objective=[{"name": "moment_matching"}, {"name": name}])
    recipe.pop("eval")
    with pytest.raises(PluginError) as info:
        run_recipe(recipe, tmp_path, host=host)
    msg = str(info.value)
    assert "\n" not in msg
    assert re.fullmatch(
        rf"objective\[1\] '{name}' \(plugin 'wrong-returns', distribution \(registered in-process\)\) returned {got}; "
        r"expected a 0-d floating-point tensor on cpu \(a bug in the plugin\)", msg), msg


def test_wrong_term_return_is_one_line_at_the_cli(tmp_path, capsys, thirdparty, monkeypatch):
    # the same through `ddcore run` and an entry-point plugin: exit 2, one line, no traceback
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""\
        [data]
        name = "digits"
        [backbone]
        name = "ConvNet"
        width = 8
        depth = 2
        [synset]
        name = "thirdparty_dct"
        [[objective]]
        name = "thirdparty_mmd"
        bandwidth = 1.0
        [run]
        iterations = 1
        progress = false
        compile = "off"
        """))
    import ddcore_thirdparty.plugin as tp

    monkeypatch.setattr(tp.ClassMMD, "__call__", lambda self, ctx: ctx.syn.images.sum(dim=0))
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "objective[0] 'thirdparty_mmd' (plugin 'thirdparty', distribution ddcore-thirdparty " \
                             "0.3.0) returned a tensor of shape [1, 8, 8]" in err[0], err


# -- the third-party package: public API only, passes the kit, mixes with in-tree terms ----------------------------
def test_third_party_package_passes_the_kit(thirdparty, tmp_path):
    check_plugin("ddcore-thirdparty", tmp_path)


def test_third_party_components_mix_with_in_tree_terms(thirdparty, tmp_path):
    recipe = tiny_recipe(
        plugins=["ddcore-thirdparty", "ddcore-dm"],
        synset={"name": "thirdparty_dct", "ipc": 2, "frequencies": 4},
        objective=[{"name": "dm", "weight": 1.0}, {"name": "thirdparty_mmd", "weight": 0.5},
                   {"name": "moment_matching", "weight": 0.1}],
        eval={"name": "thirdparty_centroid", "baselines": ["random"]},
    )
    result = run_recipe(recipe, tmp_path)
    metrics = result.metrics()[-1]
    assert {"loss/dm", "loss/thirdparty_mmd", "loss/moment_matching"} <= set(metrics)
    synset = result.results["synset"]
    assert synset["metric"] == "accuracy" and synset["num_models"] == 1 and 0 <= synset["mean"] <= 100
    assert "random" in result.results["baselines"]


def test_recipe_check_validates_eval_baselines(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text((ROOT / "recipes" / "quickstart.toml").read_text())
    assert main(["recipe", "check", str(recipe), "--set", 'eval.baselines=["random", "hearding"]']) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"ddcore: error: {recipe}: eval.baselines[1]: unknown baseline 'hearding' for "
                           "parameterization 'pixels'; allowed: herding, random")
    assert main(["recipe", "check", str(recipe), "--set", 'eval.baselines=["herding"]']) == 0


def test_cli_plugins_lists_distributions_and_components(capsys, testplugin):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "testplugin  [ddcore-testplugin 0.0.1]" in out
    assert "objective:testplugin_pixel_norm" in out
    assert "ddcore.builtin.samplers  [ddcore " in out


def test_console_script_help():
    res = subprocess.run([sys.executable, "-m", "ddcore", "run", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--resume" in res.stdout and "--set" in res.stdout


def test_hook_docs_are_complete():
    from ddcore import hookspecs

    for name in dir(hookspecs):
        if name.startswith("ddcore_"):
            doc = getattr(hookspecs, name).__doc__ or ""
            assert "alled" in doc, f"{name}: the docstring must say when it is called"
            assert ":param" in doc, f"{name}: the docstring must document its parameters"


def test_deprecated_hook_spec_warns_plugins_that_implement_it():
    # the deprecation path of docs/writing-plugins.md ("Versioning"): a spec marked with hookspecs.deprecated
    from ddcore.hookspecs import PluginDeprecationWarning, deprecated

    class Specs:
        @deprecated("use ddcore_new_thing", removal="0.3")
        def ddcore_old_thing(self, run):
            """Called never."""

        @deprecated("", removal="0.3", args={"legacy": "read run.recipe instead"})
        def ddcore_kept_thing(self, run, legacy):
            """Called never."""

    class Plugin:
        @ddcore.hookimpl
        def ddcore_old_thing(self, run):
            pass

        @ddcore.hookimpl
        def ddcore_kept_thing(self, legacy):
            pass

    pm = pluggy.PluginManager("ddcore")
    pm.add_hookspecs(Specs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm.register(Plugin())
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, PluginDeprecationWarning))
    assert messages == ["hook parameter 'legacy' is deprecated and goes in ddcore 0.3: read run.recipe instead",
                        "this hook is deprecated and goes in ddcore 0.3: use ddcore_new_thing"]


# -- plugin-owned recipe tables (kind "table") ------------------------------------------------------------------
@attrs.define(frozen=True, kw_only=True)
class _LevelConfig:
    level: int = option(1, "A positive level.", validator=positive)


class _TablePlugin:
    @ddcore.hookimpl
    def ddcore_register_recipe_tables(self, registry):
        registry.add("mytable", _LevelConfig, config=_LevelConfig)


def test_plugin_table_is_structured_and_validated_with_the_recipe(tmp_path):
    host = PluginHost(autoload=False, extra=[_TablePlugin()])
    recipe = parse_recipe({**tiny_recipe(), "mytable": {"level": 3}})
    assert recipe.tables == ("mytable",)
    assert validate(recipe, host.registry)["mytable"] == _LevelConfig(level=3)
    result = run_recipe({**tiny_recipe(), "mytable": {"level": 3}}, tmp_path, host=host)
    assert result.run.recipe_table("mytable") == _LevelConfig(level=3)
    assert run_recipe(tiny_recipe(), tmp_path, out_name="plain", host=host).run.recipe_table("mytable") is None
    for table, match in (({"lvl": 1}, r"mytable\.lvl"), ({"level": 0}, r"mytable\.level: expected a positive")):
        with pytest.raises(RecipeError, match=match):
            validate(parse_recipe({**tiny_recipe(), "mytable": table}), host.registry)
    with pytest.raises(RecipeError, match=r"mytabel: unknown key; .*tables registered by plugins: mytable"):
        validate(parse_recipe({**tiny_recipe(), "mytabel": {"level": 3}}), host.registry)
    with pytest.raises(RecipeError, match=r"mytable: unknown key"):  # not a table: never a plugin's
        parse_recipe({**tiny_recipe(), "mytable": 3})


def test_plugin_table_may_not_take_a_core_key():
    from ddcore.registry import Registry

    with pytest.raises(PluginError, match="recipe table 'run' must be a new identifier"):
        Registry().bind("table", "p", "ddcore-p").add("run", _LevelConfig, config=_LevelConfig)
