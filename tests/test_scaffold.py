"""`ddcore new-plugin`: the scaffold of every kind installs, is discovered, passes its own generated tests; the guide
quotes the objective and evaluator packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddcore._scaffold import KINDS, render_files
from ddcore.cli import main

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
        assert "4 passed" in res.stdout  # the kit's public-api and smoke items, the run, the recipe error
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
    evaluator = render_files("centroid", "evaluator")["src/ddcore_centroid/plugin.py"]
    assert evaluator in guide, "docs/writing-plugins.md no longer shows the evaluator scaffold: update the guide"


def test_scaffold_of_every_kind_passes_its_generated_tests(tmp_path):
    # every kind at once, made discoverable without installing (as tests/fixtures are), in one pytest process;
    # bench/bench_scaffold.py times each kind's tests on their own
    from ddcore.testing import local_install

    paths, dirs = [], []
    for kind in KINDS:
        assert main(["new-plugin", f"probe_{kind}", "--kind", kind, "--dir", str(tmp_path)]) == 0
        pkg = tmp_path / f"ddcore-probe-{kind}"
        with local_install(pkg, tmp_path / "site"):
            pass  # writes the entry points; the subprocess finds them through PYTHONPATH
        paths.append(str(pkg / "src"))
        dirs.append(str(pkg / "tests"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *paths])}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *dirs], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert f"{4 * len(KINDS)} passed" in res.stdout, res.stdout[-2000:]


def test_unknown_kind_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["new-plugin", "x", "--kind", "loss", "--dir", str(tmp_path)])
    assert info.value.code == 2 and "invalid choice: 'loss'" in capsys.readouterr().err
