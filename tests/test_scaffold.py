"""`ddcore new-plugin`: the scaffold installs, is discovered, passes its own generated test; the guide quotes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ddcore.cli import main
from ddcore._scaffold import render_files

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-plugins.md"
GUIDE_NAME = "class_mean"  # the objective example of docs/writing-plugins.md


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_scaffold_installs_is_discovered_and_passes_its_own_test(tmp_path):
    assert main(["new-plugin", "scaffold_probe", "--dir", str(tmp_path)]) == 0
    pkg = tmp_path / "ddcore-scaffold-probe"
    assert (pkg / "src" / "ddcore_scaffold_probe" / "plugin.py").is_file()
    try:
        res = _run("-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(pkg), cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        res = _run("-m", "ddcore", "plugins", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "scaffold_probe  [ddcore-scaffold-probe 0.1.0]  objective:scaffold_probe" in res.stdout
        res = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=pkg)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        assert "3 passed" in res.stdout
    finally:
        _run("-m", "pip", "uninstall", "-q", "-y", "ddcore-scaffold-probe", cwd=tmp_path)
    assert "scaffold_probe" not in _run("-m", "ddcore", "plugins", cwd=tmp_path).stdout


def test_new_plugin_refuses_bad_names_and_existing_directories(tmp_path, capsys):
    assert main(["new-plugin", "Bad-Name", "--dir", str(tmp_path)]) == 2
    assert "invalid name 'Bad-Name'" in capsys.readouterr().err
    assert main(["new-plugin", "ok_name", "--dir", str(tmp_path)]) == 0
    assert main(["new-plugin", "ok_name", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_guide_quotes_the_scaffold_verbatim():
    guide = GUIDE.read_text()
    for path, text in render_files(GUIDE_NAME).items():
        if path.endswith("README.md"):
            continue
        assert text in guide, f"docs/writing-plugins.md no longer shows the scaffold's {path}: update the guide"
