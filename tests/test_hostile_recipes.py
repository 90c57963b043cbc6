"""Hostile recipes (issue 15): mutations of every recipe in recipes/ — unknown keys at every level, wrong types,
non-finite and negative numbers, unknown components, empty and binary files. Every one must get exit status 2 and
exactly one line on stderr from ``ddcore recipe check``. The bulk runs in-process through :func:`ddcore.cli.main`;
a handful run as real subprocesses (the installed entry point, a fresh interpreter)."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import tomli_w

from ddcore.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
#: options that are sizes, counts or rates: a negative value is invalid wherever they appear
MUST_BE_POSITIVE = {("synset", "ipc"), ("run", "iterations"), ("run", "log_every"), ("run", "checkpoint_every"),
                    ("run", "eval_every"), ("real", "batch"), ("optimizer", "lr"), ("optimizer", "momentum"),
                    ("optimizer", "weight_decay"), ("eval", "num_models"), ("eval", "epochs"), ("eval", "batch_size")}
Path_ = tuple  # a key path: strings (table keys) and ints (array indices)


def _walk(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, i))


def _set(data: dict, path: Path_, value: Any) -> dict:
    out = copy.deepcopy(data)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def _wrong_type(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return "a string"
    if isinstance(value, str):
        return 12345
    if isinstance(value, list):
        return 7.5 if all(isinstance(v, str) for v in value) else "a string"
    return None


def mutations(data: dict) -> list[tuple[str, dict]]:
    """``(description, mutated recipe)`` pairs, each invalid for a reason ``recipe check`` must report."""
    out = []
    for path, node in list(_walk(data)):
        where = ".".join(map(str, path)) or "<top>"
        if isinstance(node, dict):
            out.append((f"unknown key in {where}", _set(data, (*path, "no_such_key"), 1) if path else
                        {**copy.deepcopy(data), "no_such_key": 1}))
            continue
        if not path:
            continue
        last = path[-1]
        # 'name' names a component, except the recipe's own name and a transfer target's label (free text)
        is_label = len(path) == 1 or (len(path) >= 3 and path[-3] == "targets")
        if (last == "name" and not is_label) or (isinstance(node, str) and len(path) == 1
                                                 and last in ("backbone", "sampler")):
            out.append((f"unknown component at {where}", _set(data, path, "no_such_component")))
        if isinstance(last, int) and isinstance(node, (dict, list)):
            continue
        wrong = _wrong_type(node)
        if wrong is not None and not (isinstance(node, list) and any(isinstance(v, dict) for v in node)):
            out.append((f"wrong type at {where}", _set(data, path, wrong)))
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            for bad in (math.nan, math.inf, -math.inf):
                out.append((f"{bad} at {where}", _set(data, path, bad)))
            if (path[0], last) in MUST_BE_POSITIVE and len(path) == 2:
                out.append((f"negative at {where}", _set(data, path, -abs(node) - 1)))
        if isinstance(node, list) and node and all(isinstance(v, float) for v in node):
            out.append((f"nan inside {where}", _set(data, path, [math.nan, *node[1:]])))
    return out


def _check(path: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["recipe", "check", str(path)])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_mutations_of_every_recipe_are_one_line_exit_2(recipe, tmp_path, capsys):
    data = tomllib.loads(recipe.read_text())
    cases = mutations(data)
    assert len(cases) >= 50, f"{recipe.name}: only {len(cases)} mutations"
    target = tmp_path / recipe.name
    failures = []
    for what, mutated in cases:
        target.write_text(tomli_w.dumps(mutated))
        rc, err = _check(target, capsys)
        lines = err.strip().splitlines()
        if rc != 2 or len(lines) != 1 or not lines[0].startswith("ddcore: error: ") or "Traceback" in err:
            failures.append(f"{what}: exit {rc}: {err.strip()[:300]}")
    assert not failures, f"{recipe.name}: {len(failures)}/{len(cases)} mutations not refused in one line:\n" + \
        "\n".join(failures[:20])


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe binary \x89PNG\r\n", b"[run\niterations = ",
                                     b"name = 'x'\n[[objective]]\nname = 'dm'\n[[objective]]\n"])
def test_empty_binary_and_broken_files(content, tmp_path, capsys):
    target = tmp_path / "bad.toml"
    target.write_bytes(content)
    rc, err = _check(target, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(target) in err and "Traceback" not in err, err


def test_a_handful_as_real_subprocesses(tmp_path):
    recipe = RECIPES[0]
    cases = mutations(tomllib.loads(recipe.read_text()))
    picked = [cases[0], cases[len(cases) // 3], cases[2 * len(cases) // 3], cases[-1]]
    files = []
    for i, (_, mutated) in enumerate(picked):
        files.append(tmp_path / f"m{i}.toml")
        files[-1].write_text(tomli_w.dumps(mutated))
    files.append(tmp_path / "binary.toml")
    files[-1].write_bytes(b"\x00\x01\x02\xff")
    for path in files:
        proc = subprocess.run([sys.executable, "-m", "ddcore", "recipe", "check", str(path)],
                              capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, (path, proc.stderr)
        assert str(path) in lines[0]
