"""Discovery through real entry points, duplicate names, autoload switch, `ddcore plugins`."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ddcore
from ddcore.cli import main
from ddcore.errors import PluginError
from ddcore.plugins import PluginHost
from ddcore.registry import KINDS


def test_builtins_register_every_kind():
    host = PluginHost(autoload=False)
    for kind in KINDS:
        assert host.registry.names(kind), f"no built-in {kind}"
    assert {"pixels"} <= set(host.registry.names("parameterization"))
    assert "random_init" in host.registry.names("sampler")


def test_entry_point_plugin_is_discovered():
    # tests/fixtures/ddcore-testplugin is pip-installed by the test setup (requirements-dev.txt).
    host = PluginHost(autoload=True)
    entry = host.registry.get("objective", "testplugin_pixel_norm")
    assert entry.distribution == "ddcore-testplugin" and entry.plugin == "testplugin"
    info = {p.name: p for p in host.plugins()}["testplugin"]
    assert info.version == "0.0.1"
    assert ("objective", "testplugin_pixel_norm") in info.components and ("init", "testplugin_zeros") in info.components


def test_autoload_can_be_disabled(monkeypatch):
    monkeypatch.setenv("DDCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    host = PluginHost()
    assert "testplugin_pixel_norm" not in host.registry.names("objective")
    with pytest.raises(PluginError, match="ddcore-testplugin.*DDCORE_DISABLE_PLUGIN_AUTOLOAD"):
        host.require(["ddcore-testplugin"])


class Duplicate:
    __name__ = "duplicate-plugin"

    @ddcore.hookimpl
    def ddcore_register_samplers(self, registry):
        registry.add("random_init", object)


def test_duplicate_names_name_both_distributions():
    with pytest.raises(PluginError) as info:
        PluginHost(autoload=False, extra=[Duplicate()])
    msg = str(info.value)
    assert "sampler 'random_init' is registered twice" in msg
    assert "distribution ddcore" in msg and "duplicate-plugin" in msg


def test_config_must_be_attrs():
    class Bad:
        __name__ = "bad-plugin"

        @ddcore.hookimpl
        def ddcore_register_objectives(self, registry):
            registry.add("bad", object, config=dict)

    with pytest.raises(PluginError, match="must be an attrs class"):
        PluginHost(autoload=False, extra=[Bad()])


def test_unknown_hook_is_an_error():
    class Typo:
        __name__ = "typo-plugin"

        @ddcore.hookimpl
        def ddcore_register_objectivez(self, registry):
            pass

    with pytest.raises(PluginError, match="typo-plugin"):
        PluginHost(autoload=False, extra=[Typo()])


def test_cli_plugins_lists_distributions_and_components(capsys):
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
