"""A newcomer's first error names the install command, and the README's one command installs every plugin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ddcore.errors import PluginError
from ddcore.plugins import PluginHost

ROOT = Path(__file__).resolve().parents[1]


def test_missing_plugin_error_suggests_the_in_tree_folder(monkeypatch):
    monkeypatch.chdir(ROOT)
    host = PluginHost(autoload=False)
    with pytest.raises(PluginError) as err:
        host.require(["ddcore-idm", "ddcore_iid", "someone-elses-plugin"], file="r.toml")
    message = str(err.value)
    assert "not installed: ddcore-idm, ddcore_iid, someone-elses-plugin" in message
    assert message.endswith("install with: pip install -e plugins/ddcore-idm -e plugins/ddcore-iid "
                            "someone-elses-plugin")


def test_missing_plugin_hint_is_absolute_outside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PluginError) as err:
        PluginHost(autoload=False).require(["ddcore-dm"])
    assert f"pip install -e {ROOT / 'plugins' / 'ddcore-dm'}" in str(err.value)


def test_readme_install_command_covers_every_in_tree_plugin():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- install-plugins -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README lost its plugin install command"
    command = block.group(1).strip()
    assert len(command.splitlines()) == 1 and command.startswith("pip install -e . ")
    listed = set(re.findall(r"-e (plugins/[\w-]+)", command))
    on_disk = {f"plugins/{p.name}" for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file()}
    assert listed == on_disk
