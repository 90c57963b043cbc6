"""Repeated experiments: the papers' ``num_exp`` sets × ``num_eval`` networks protocol.

``[run] repeats = N`` distils N synthetic sets from derived seeds, each a complete run in ``OUT/set-k`` (with its
own checkpoint, so ``--resume`` continues the unfinished set and skips finished ones), evaluates each with the
recipe's evaluator (and its same-budget baselines, drawn anew per set), and writes ``OUT/eval.json``::

    {"repeats": N, "sets": [{"set": k, "seed": s, "dir": "set-k", "result": <final evaluation>}, ...],
     "pooled": {"synset": {...}, "baselines": {kind: {...}}}, "paper": {...}}

``pooled`` is mean ± std over every network of every set (the papers' ± over num_exp × num_eval models), taken
from the evaluator's per-model values; an evaluator without them is pooled over the sets' means.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

import attrs
import numpy as np

from ddcore.context import derive_seed
from ddcore.errors import UserError
from ddcore.recipe import Recipe

__all__ = ["pool_results", "repeat_seed", "run_repeats", "set_recipe"]

EVAL_FILE = "eval.json"


def repeat_seed(seed: int, k: int) -> int:
    """Seed of set ``k``: the recipe's seed for set 0 (so ``repeats = 1`` is the plain run), derived after."""
    return seed if k == 0 else derive_seed(seed, "repeat", k) % (2**31)


def set_recipe(recipe: Recipe, k: int) -> Recipe:
    """The recipe of set ``k``: derived seed, ``run.repeats = 1``."""
    seed = repeat_seed(recipe.seed, k)
    raw = dict(recipe.raw)
    raw["seed"] = seed
    raw["run"] = {**raw.get("run", {}), "repeats": 1}
    return attrs.evolve(recipe, seed=seed, raw=raw, run=attrs.evolve(recipe.run, repeats=1))


def _values(result: dict[str, Any]) -> list[float]:
    per_model = result.get("per_model")
    if isinstance(per_model, dict):
        values = [v for arch in per_model.values() for v in (arch.get("values") or [])]
        if values:
            return [float(v) for v in values]
    return [float(result["mean"])]


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "num_models": len(values),
            "values": values}


def pool_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool final evaluations of several sets: mean ± std over all their models, synset and each baseline."""
    synset = [v for r in results for v in _values(r["synset"])]
    pooled = {"synset": _stats(synset), "sets": len(results), "baselines": {}}
    kinds = sorted({k for r in results for k in r.get("baselines", {})})
    for kind in kinds:
        pooled["baselines"][kind] = _stats(
            [v for r in results if kind in r.get("baselines", {}) for v in _values(r["baselines"][kind])])
    per_set = [float(r["synset"]["mean"]) for r in results]
    pooled["synset"]["set_means"] = per_set
    pooled["synset"]["std_of_set_means"] = float(np.std(per_set))
    if not all(math.isfinite(v) for v in synset):
        raise UserError("repeats: a set's evaluation is not finite; refusing to pool it")
    return pooled


def _finished(set_dir: Path, iterations: int) -> Optional[dict[str, Any]]:
    """The final evaluation of a finished set, or None if the set has not finished."""
    path = set_dir / EVAL_FILE
    if not (set_dir / "synset.safetensors").exists() or not path.exists():
        return None
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    finals = [r for r in records if isinstance(r, dict) and r.get("step") == iterations]
    return finals[-1] if finals else None


def run_repeats(recipe: Recipe, out_dir: Path, *, make_run: Callable[..., Any], resume: bool,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Distil and evaluate ``recipe.run.repeats`` sets under ``out_dir``; returns the ``eval.json`` mapping.

    :param make_run: ``make_run(recipe, out_dir=..., resume=...) -> Run`` (the CLI's constructor, so device and
        progress options apply to every set).
    """
    from ddcore.artifacts import LOCK_NAME, RunLock, atomic_write_text
    from ddcore.engine import _dump_recipe, _recipe_identity

    if recipe.eval is None:
        raise UserError("run.repeats > 1 needs an [eval] section: the sets are compared by their evaluation")
    out_dir = Path(out_dir)
    if str(out_dir) in ("", "."):
        raise UserError("--out: expected a folder for the repeated run, got the current directory")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: is a file, expected a directory")
    saved = out_dir / "recipe.toml"
    if resume:
        if not saved.is_file():
            raise UserError(f"--resume: {out_dir} holds no repeated run (no recipe.toml)")
    else:
        entries = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_NAME) if out_dir.exists() else []
        if entries:
            raise UserError(f"--out {out_dir} is not empty ({len(entries)} entries, e.g. {entries[0]!r}); pass "
                            f"--resume to continue a repeated run or choose another --out")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out {out_dir}: cannot create the folder ({exc.strerror or exc})") from exc
    # the top-level folder is held for the whole repeated run, as every set's folder is for its run
    with RunLock(out_dir):
        if resume:
            try:
                same = _recipe_identity(saved.read_text()) == _recipe_identity(_dump_recipe(recipe.raw))
            except (OSError, ValueError) as exc:
                raise UserError(f"--resume: {saved} is not a ddcore run's recipe ({str(exc).splitlines()[0]})") from exc
            if not same:
                raise UserError(f"--resume: the recipe differs from the one in {saved} (only run.* may change)")
        atomic_write_text(saved, _dump_recipe(recipe.raw))  # run.* (e.g. more repeats) as now resumed
        return _run_sets(recipe, out_dir, make_run=make_run, resume=resume, log=log)


def _run_sets(recipe: Recipe, out_dir: Path, *, make_run, resume: bool, log) -> dict[str, Any]:
    from ddcore.artifacts import atomic_write_text

    n = recipe.run.repeats
    results: list[dict[str, Any]] = []
    sets: list[dict[str, Any]] = []
    for k in range(n):
        sub = set_recipe(recipe, k)
        set_dir = out_dir / f"set-{k}"
        result = _finished(set_dir, sub.run.iterations)
        if result is None:
            log(f"repeats: set {k + 1}/{n} (seed {sub.seed}) -> {set_dir}")
            run = make_run(sub, out_dir=set_dir, resume=resume and (set_dir / "recipe.toml").is_file())
            result = run.execute()
        else:
            log(f"repeats: set {k + 1}/{n} already finished ({set_dir})")
        if result is None:
            raise UserError(f"repeats: set {k} produced no evaluation (is run.eval_at_end false?)")
        results.append(result)
        sets.append({"set": k, "seed": sub.seed, "dir": set_dir.name, "result": result})
        record = {"repeats": n, "sets": sets, "pooled": pool_results(results)}
        if "paper" in result:
            record["paper"] = result["paper"]
        atomic_write_text(out_dir / EVAL_FILE, json.dumps(record, indent=2))
    return record
