"""``ddcore report``: results beside the published numbers, as a markdown table and an accuracy-vs-step plot.

Inputs are run directories (a plain run or a ``repeats`` run) or *result files*: the small JSON summaries that
``--save DIR`` writes from run directories (no images, no weights), which is what ``docs/results/`` commits.
``docs/reproduction.md`` is generated from those files by ``ddcore report`` without arguments, and
``ddcore report --check`` exits 1 when the generated file is stale.

A result file (``"format": "ddcore-result/1"``) holds the recipe name and file, dataset, IPC, iterations, sets ×
networks, ours (pooled mean ± std and per-set means), the same-budget baselines, the paper's value, the wall
time and device, the settings that differ from the recipe file at the same IPC (e.g. a shortened schedule), and
the accuracy-vs-step curve of runs that evaluated periodically, and the seed and evaluation protocol that decide
which runs of different recipes compare network by network.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from ddcore.errors import UserError

__all__ = ["FORMAT", "collect", "load_result", "method_pairs", "precision_pairs", "render_markdown", "render_plot", "result_name", "summarize_run"]

FORMAT = "ddcore-result/1"
DEFAULT_RESULTS = Path("docs/results")
DEFAULT_OUT = Path("docs/reproduction.md")
DEFAULT_PLOT = Path("docs/reproduction-curves.png")
#: hand-written prose (how the rows were produced; no numbers) placed under the generated report's title
DEFAULT_PREAMBLE = DEFAULT_RESULTS / "preamble.md"
#: settings compared with the recipe file (at the run's IPC) to list deviations such as a shortened schedule
COMPARED_KEYS = ("run.iterations", "run.repeats", "real.batch", "eval.num_models", "eval.epochs", "eval.test_limit",
                 "run.precision", "data.train_per_class", "data.classes")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def _get(raw: dict, dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict) and "name" in node and len(node) == 1:
        return node["name"]
    return node


def _pool_curve(records_per_set: list[list[dict]]) -> list[dict[str, Any]]:
    """Per evaluated step: mean ± std over every network of every set that evaluated at that step."""
    by_step: dict[int, list[float]] = {}
    for records in records_per_set:
        for r in records:
            step = r.get("step")
            if not isinstance(step, int) or step < 0 or "synset" not in r:
                continue
            s = r["synset"]
            values = [v for arch in (s.get("per_model") or {}).values() for v in arch.get("values", [])]
            by_step.setdefault(step, []).extend(values or [s["mean"]])
    # the values stay in network order (set by set): same seeds give the same networks, so runs pair net by net
    return [{"step": k, "mean": float(np.mean(v)), "std": float(np.std(v)), "num_models": len(v),
             "values": [float(x) for x in v]} for k, v in sorted(by_step.items())]


def _recipe_deviations(recipe_file: Optional[str], raw: dict, ipc: Optional[int]) -> dict[str, list]:
    """``{key: [ours, recipe's]}`` for COMPARED_KEYS that differ from the recipe file loaded at the same IPC."""
    from ddcore.recipe import load_recipe

    if not recipe_file or not Path(recipe_file).exists():
        return {}
    try:
        ref = load_recipe(recipe_file, [f"synset.ipc={ipc}"] if ipc is not None else []).raw
    except UserError:
        return {}
    out = {}
    for key in COMPARED_KEYS:
        ours, theirs = _get(raw, key), _get(ref, key)
        if key == "run.repeats":
            ours, theirs = ours or 1, theirs or 1
        if ours != theirs:
            out[key] = [ours, theirs]
    # and every other setting, so no change made with --set goes unreported (eval.augment, an objective weight...)
    mine, recipe_values = _flatten(raw), _flatten(ref)
    for key in sorted(set(mine) | set(recipe_values)):
        if key not in out and key.split(".")[0] not in UNCOMPARED_TOP and mine.get(key) != recipe_values.get(key):
            out[key] = [mine.get(key), recipe_values.get(key)]
    return out


#: top-level keys that describe a run, not its result (the device is reported in its own column)
UNCOMPARED_TOP = frozenset({"paper", "device", "name"})


def _flatten(table: Any, prefix: str = "") -> dict[str, Any]:
    """``{"key.path": value}`` of a resolved recipe; arrays of tables become ``key[i].sub``."""
    out: dict[str, Any] = {}
    items = table.items() if isinstance(table, dict) else []
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, path))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(_flatten(item, f"{path}[{i}]"))
        else:
            out[path] = value
    return out


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """The result-file mapping of a finished run directory (plain or ``repeats``)."""
    from ddcore.recipe import load_recipe

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.toml").exists() or not (run_dir / "eval.json").exists():
        raise UserError(f"{run_dir}: not a finished run (needs recipe.toml and eval.json)")
    recipe = load_recipe(run_dir / "recipe.toml")
    evaluation = _load_json(run_dir / "eval.json")
    if isinstance(evaluation, dict) and "sets" in evaluation:
        set_dirs = [run_dir / s["dir"] for s in evaluation["sets"]]
        finals = [s["result"] for s in evaluation["sets"]]
        pooled = evaluation["pooled"]
        ours = {k: pooled["synset"][k] for k in ("mean", "std", "num_models")}
        per_set = pooled["synset"].get("set_means", [f["synset"]["mean"] for f in finals])
        baselines = {k: {x: v[x] for x in ("mean", "std", "num_models")} for k, v in pooled["baselines"].items()}
        paper = evaluation.get("paper")
    else:
        if not isinstance(evaluation, list) or not evaluation:
            raise UserError(f"{run_dir / 'eval.json'}: expected a list of evaluations or a repeats record")
        set_dirs = [run_dir]
        final = evaluation[-1]
        finals = [final]
        ours = {k: final["synset"].get(k) for k in ("mean", "std", "num_models")}
        per_set = [final["synset"]["mean"]]
        baselines = {k: {x: v.get(x) for x in ("mean", "std", "num_models")} for k, v in final["baselines"].items()}
        paper = final.get("paper")
    records = [_load_json(d / "eval.json") if (d / "eval.json").exists() else [] for d in set_dirs]
    manifest_path = set_dirs[0] / "manifest.json"
    manifest = _load_json(manifest_path) if manifest_path.exists() else {}
    wall = [f.get("wall_s") for f in finals]
    # a run stopped before its last step is reported at the last step it evaluated, never as the full schedule
    reached = min(int(f.get("step", recipe.run.iterations)) for f in finals)
    recipe_file = manifest.get("recipe") or recipe.file
    return {
        "format": FORMAT,
        "recipe": recipe.name or Path(str(recipe_file)).stem,
        "recipe_file": str(recipe_file) if recipe_file else None,
        "dataset": (manifest.get("dataset") or {}).get("name") or str(_get(recipe.raw, "data.path") or recipe.data.name),
        "ipc": recipe.ipc,
        "iterations": reached,
        "planned_iterations": recipe.run.iterations,
        "sets": len(finals),
        "planned_sets": recipe.run.repeats,
        "models_per_set": int(round((ours.get("num_models") or 0) / max(len(finals), 1))),
        "ours": ours,
        "per_set": per_set,
        "baselines": baselines,
        "paper": paper,
        "wall_s": float(sum(w for w in wall if w is not None)) if any(w is not None for w in wall) else None,
        "device": manifest.get("device"),
        "device_name": manifest.get("device_name"),
        # what [run] precision resolved to; manifests from before "auto" existed ran the recipe's value
        "precision": (manifest.get("hot_path") or {}).get("precision") or _get(recipe.raw, "run.precision") or "fp32",
        "torch": manifest.get("torch"),
        "command": manifest.get("command"),
        "deviations": _recipe_deviations(manifest.get("recipe"), recipe.raw, recipe.ipc),
        "curve": _pool_curve(records),
        # what makes two recipes' runs comparable network by network: the seed and the evaluation protocol
        "seed": recipe.seed,
        "evaluation": _evaluation_protocol(recipe),
    }


#: evaluator options that are not the protocol: the network count has its own column; the rest say how the same
#: networks are trained (batched or one by one, compiled or not), not which ones or on what
_NOT_PROTOCOL = frozenset({"num_models", "baselines", "compile", "parallel", "max_parallel", "test_batch_size"})


def _evaluation_protocol(recipe) -> dict[str, Any]:
    """The evaluator and its options, less the network count (a report column of its own) and the baselines."""
    def resolved(kind: str, ref) -> dict[str, Any]:
        # defaults filled in, so a recipe that spells a default out compares equal to one that leaves it implied
        options = dict(ref.options or {})
        try:
            import attrs

            from ddcore.plugins import get_host

            options = attrs.asdict(get_host().registry.get(kind, ref.name).structure(options), recurse=True)
        except Exception:  # noqa: BLE001 - a plugin missing here: the recipe's own spelling still compares
            pass
        return {"name": ref.name, **json.loads(json.dumps(dict(sorted(options.items())), default=str))}

    if recipe.eval is None:
        return {}
    protocol = {k: v for k, v in resolved("evaluator", recipe.eval).items() if k not in _NOT_PROTOCOL}
    protocol["backbone"] = resolved("backbone", recipe.backbone)  # what the evaluated networks are built from
    if protocol.get("augment", True) and not protocol.get("augment_strategy"):
        # the evaluator then trains with the run's own siamese augmentations: they are part of the protocol
        protocol["siamese"] = [resolved("augmentation", a) for a in recipe.augment]
    return protocol


#: deviations the result name already spells (sets x nets, iterations)
NAMED_DEVIATIONS = frozenset({"run.repeats", "eval.num_models", "run.iterations"})


def result_name(result: dict[str, Any]) -> str:
    """File name of a result: ``<recipe>-ipc<N>-<sets>x<nets>.json``, with ``-<iterations>it`` when shortened and
    every other deviation from the recipe spelled out (``-eval.epochs-300``), so two differently configured runs
    of one recipe never share a file (a digest stands in when the list would make the name too long)."""
    name = f"{result['recipe']}-ipc{result['ipc']}" if result.get("ipc") is not None else result["recipe"]
    name += f"-{result['sets']}x{result['models_per_set']}"
    deviations = result.get("deviations") or {}
    if "run.iterations" in deviations or result.get("planned_iterations") != result["iterations"]:
        name += f"-{result['iterations']}it"
    if "run.precision" not in deviations and _precision(result) != "fp32":
        name += f"-{_precision(result)}"  # "auto" resolved to it: a bf16 row never shares a file with an fp32 one
    other = {key: value[0] for key, value in sorted(deviations.items()) if key not in NAMED_DEVIATIONS}
    if other:
        spelled = "-".join(f"{key}-{value if isinstance(value, str) else json.dumps(value)}"
                           for key, value in other.items())
        spelled = re.sub(r"[^A-Za-z0-9._=-]+", "_", spelled).strip("_")
        if len(spelled) > 60:
            spelled = hashlib.sha256(json.dumps(other, sort_keys=True).encode()).hexdigest()[:10]
        name += f"-{spelled}"
    return name + ".json"


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two result records describe the same run (a re-save may refresh its file, nothing else may)."""
    keys = ("recipe", "ipc", "deviations", "command", "device_name", "ours", "per_set", "wall_s")
    return all(a.get(k) == b.get(k) for k in keys)


def load_result(path: Path) -> dict[str, Any]:
    data = _load_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path}: not a ddcore result file (expected \"format\": \"{FORMAT}\")")
    return data


def collect(inputs: Iterable[Path]) -> list[dict[str, Any]]:
    """Result mappings from run directories and result files, in the order given."""
    out = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            out.append(summarize_run(p))
        elif p.exists():
            out.append(load_result(p))
        else:
            raise UserError(f"{p}: no such run directory or result file")
    return out


def _pm(mean: Optional[float], std: Optional[float], num_models: Optional[int] = None) -> str:
    if mean is None or not math.isfinite(mean):
        return "—"
    if num_models == 1:
        # the std of one network is 0 by construction: "± 0.00" would read as a precise result
        return f"{mean:.2f} (1 net, no ±)"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    minutes = seconds / 60
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min" if minutes >= 1.5 else f"{seconds:.0f} s"


def _precision(r: dict[str, Any]) -> str:
    """The step's arithmetic; result files written before it was recorded ran the recipe's (fp32 unless set)."""
    return r.get("precision") or ((r.get("deviations") or {}).get("run.precision") or ["fp32"])[0]


def _device(r: dict[str, Any]) -> str:
    dev = r.get("device") or "?"
    dev = f"{dev} ({r['device_name']})" if r.get("device_name") else dev
    return f"{dev}, {_precision(r)}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 24 else text[:21] + "..."


def render_markdown(results: list[dict[str, Any]], *, title: str = "Results", plot: Optional[str] = None,
                    preamble: str = "") -> str:
    """The markdown report: one table row per result, deviations and curves below."""
    lines = [f"# {title}", "",
             "Generated by `ddcore report` from the result files listed at the end; do not edit by hand.", ""]
    if preamble.strip():
        lines += [preamble.strip(), ""]
    lines += [
             "| recipe | dataset | IPC | iterations | sets × nets | other changes | ours | paper | difference | wall time "
             "| device |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ours, paper = r["ours"], r.get("paper")
        diff = f"{ours['mean'] - paper['mean']:+.2f}" if paper else "—"
        its = str(r["iterations"])
        dev = (r.get("deviations") or {}).get("run.iterations")
        if r.get("planned_iterations", r["iterations"]) != r["iterations"]:
            its += f" (stopped; planned {r['planned_iterations']})"
        if dev:
            its += f" (recipe: {dev[1]})"
        sets = f"{r['sets']} × {r['models_per_set']}"
        if r.get("planned_sets", r["sets"]) > r["sets"]:
            sets += f" (stopped; {r['planned_sets']} sets planned)"
        # settings the other columns do not show: a row run under another protocol must not pass for the recipe's
        changed = [f"`{k}` = {_short(v[0])}" for k, v in (r.get("deviations") or {}).items()
                   if k not in NAMED_DEVIATIONS]
        ours_text = _pm(ours["mean"], ours["std"], ours.get("num_models"))
        paper_text = _pm(paper["mean"], paper["std"]) if paper else "—"
        lines.append(
            f"| {r['recipe']} | {r['dataset']} | {r.get('ipc', '—')} | {its} | {sets} | {', '.join(changed) or '—'} | "
            f"{ours_text} | {paper_text} | {diff} | {_duration(r.get('wall_s'))} | {_device(r)} |")
    notes = []
    for r in results:
        items = []
        devs = r.get("deviations") or {}
        if devs:
            items.append("differs from the recipe: " + ", ".join(f"`{k}` = {v[0]} (recipe: {v[1]})"
                                                                for k, v in devs.items()))
        items += [f"{k} baseline {_pm(v['mean'], v['std'], v.get('num_models'))}"
                  for k, v in (r.get("baselines") or {}).items()]
        if len(r.get("per_set") or []) > 1:
            items.append("per-set means " + ", ".join(f"{m:.2f}" for m in r["per_set"]))
        if r.get("command"):
            items.append(f"command: `{r['command']}`")
        if items:
            notes.append(f"- **{r['recipe']}, IPC {r.get('ipc')}**: " + "; ".join(items))
    if notes:
        lines += ["", "## Notes per row", "", *notes]
    curves = [r for r in results if len(r.get("curve") or []) > 1]
    if curves:
        lines += ["", "## Accuracy against distillation step", ""]
        if plot:
            lines += [f"![accuracy against step]({plot})", ""]
        for r in curves:
            lines.append(f"**{r['recipe']}, IPC {r.get('ipc')}**: " + ", ".join(
                f"{c['step']}: {_pm(c['mean'], c['std'], c.get('num_models'))}" for c in r["curve"]))
            lines.append("")
    pairs = precision_pairs(results)
    if pairs:
        lines += ["", "## bf16 against fp32, same seeds", "",
                  "Runs that differ only in `[run] precision` (and their length), compared at each step both "
                  "evaluated, with the same evaluation networks. \"Paired\" is the mean ± std of the per-network "
                  "differences where the result files hold them; \"spread\" is the larger of the two runs' own std.",
                  "", "| recipe | dataset | IPC | step | nets | fp32 | bf16 | bf16 − fp32 | paired | spread "
                  "| inside the spread |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in pairs:
            paired = _pm(p["paired_mean"], p["paired_std"]) if p["paired_mean"] is not None else "—"
            lines.append(
                f"| {p['recipe']} | {p['dataset']} | {p['ipc']} | {p['step']} | {p['nets']} | "
                f"{_pm(p['fp32'][0], p['fp32'][1])} | {_pm(p['bf16'][0], p['bf16'][1])} | {p['difference']:+.2f} | "
                f"{paired} | {p['spread']:.2f} | {'yes' if p['inside'] else '**no**'} |")
    methods = method_pairs(results)
    if methods:
        lines += ["", "## Methods against each other, same seeds", "",
                  "Runs of two recipes with the same dataset, IPC, seed, sets × nets, arithmetic and evaluation "
                  "protocol, compared at each step both evaluated: the evaluation networks are the same ones, so "
                  "\"paired\" (the mean ± std of the per-network differences B − A) and \"B better\" (networks "
                  "where B scored higher) measure the methods rather than the draw.",
                  "", "| dataset | IPC | step | nets | A | B | A acc. | B acc. | B − A | paired | B better |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in methods:
            paired = _pm(p["paired_mean"], p["paired_std"]) if p["paired_mean"] is not None else "—"
            wins = f"{p['wins']} of {p['nets']}" if p["wins"] is not None else "—"
            lines.append(
                f"| {p['dataset']} | {p['ipc']} | {p['step']} | {p['nets']} | {p['a']} | {p['b']} | "
                f"{_pm(*p['a_acc'])} | {_pm(*p['b_acc'])} | {p['difference']:+.2f} | {paired} | {wins} |")
    sources = sorted({r["paper"]["source"] for r in results if r.get("paper")})
    if sources:
        lines += ["", "Paper values: " + "; ".join(sources) + "."]
    return "\n".join(lines).rstrip() + "\n"


#: settings that do not change a run's synthetic set at a given step: runs differing only in these pair up
_PAIRING_FREE = frozenset({"run.precision", "run.iterations", "run.eval_every", "run.log_every",
                           "run.checkpoint_every", "run.progress"})


def _common_steps(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``b`` against run ``a`` at every step both evaluated with as many networks: the two curve points and a
    summary (accuracies, B − A, and where both hold per-network values, the paired differences and B's wins)."""
    a_curve = {c["step"]: c for c in a.get("curve") or []}
    out = []
    for cb in b.get("curve") or []:
        ca = a_curve.get(cb["step"])
        if ca is None or ca["num_models"] != cb["num_models"]:
            continue
        va, vb = ca.get("values"), cb.get("values")
        diffs = [y - x for x, y in zip(va, vb)] if va and vb and len(va) == len(vb) else None
        out.append({"a": ca, "b": cb, "summary": {
            "step": cb["step"], "nets": cb["num_models"], "a_acc": (ca["mean"], ca["std"]),
            "b_acc": (cb["mean"], cb["std"]), "difference": cb["mean"] - ca["mean"],
            "paired_mean": float(np.mean(diffs)) if diffs else None,
            "paired_std": float(np.std(diffs)) if diffs else None,
            "wins": sum(d > 0 for d in diffs) if diffs else None}})
    return out


def precision_pairs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """bf16 and fp32 runs of one setting (same recipe, dataset, IPC, sets × nets and other changes; the length may
    differ), compared at every step both evaluated: the evidence behind ``precision = "auto"``."""
    def setting(r: dict[str, Any]) -> str:
        other = {k: v for k, v in (r.get("deviations") or {}).items() if k not in _PAIRING_FREE}
        return json.dumps([r["recipe"], r["dataset"], r.get("ipc"), r["sets"], r["models_per_set"], other],
                          sort_keys=True)

    fp32 = [r for r in results if _precision(r) == "fp32"]
    out = []
    for b in (r for r in results if _precision(r) == "bf16"):
        for f in (r for r in fp32 if setting(r) == setting(b)):
            for step in _common_steps(f, b):
                spread = max(step["a"]["std"], step["b"]["std"])
                out.append({
                    "recipe": b["recipe"], "dataset": b["dataset"], "ipc": b.get("ipc"), **step["summary"],
                    "fp32": step["summary"]["a_acc"], "bf16": step["summary"]["b_acc"],
                    "spread": spread, "inside": abs(step["summary"]["difference"]) <= spread,
                })
    return sorted(out, key=lambda p: (p["recipe"], str(p["dataset"]), p["ipc"] or 0, p["step"]))


def method_pairs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of two different recipes that share the dataset, IPC, seed, sets × nets, arithmetic and evaluation
    protocol, compared at every step both evaluated: the evaluation networks are then the same ones, so the
    per-network differences measure the methods, not the draw (e.g. DM + IID against DM, DCC against DC)."""
    def setting(r: dict[str, Any]) -> Optional[str]:
        if r.get("evaluation") is None or r.get("seed") is None or not r.get("iterations"):
            return None  # result files from before the protocol was recorded, and baselines-only runs
        return json.dumps([r["dataset"], r.get("ipc"), r["seed"], r["sets"], r["models_per_set"], _precision(r),
                           r["evaluation"]], sort_keys=True)

    out = []
    ordered = sorted(results, key=lambda r: r["recipe"])
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if a["recipe"] == b["recipe"] or setting(a) is None or setting(a) != setting(b):
                continue
            for step in _common_steps(a, b):
                out.append({"a": a["recipe"], "b": b["recipe"], "dataset": a["dataset"], "ipc": a.get("ipc"),
                            "precision": _precision(a), **step["summary"]})
    return sorted(out, key=lambda p: (str(p["dataset"]), p["ipc"] or 0, p["a"], p["b"], p["step"]))


def render_plot(results: list[dict[str, Any]], path: Path) -> bool:
    """Write the accuracy-vs-step PNG for results with a curve; returns False when there is none."""
    curves = [r for r in results if len(r.get("curve") or []) > 1]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ddcore.artifacts import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in curves:
        steps = [c["step"] for c in r["curve"]]
        mean = np.array([c["mean"] for c in r["curve"]])
        std = np.array([c["std"] for c in r["curve"]])
        line, = ax.plot(steps, mean, marker="o", label=f"{r['recipe']} IPC {r.get('ipc')}")
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        if r.get("paper"):
            ax.axhline(r["paper"]["mean"], color=line.get_color(), linestyle="--", linewidth=1)
    ax.set_xlabel("distillation step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy against step (dashed: paper)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return True


def main_report(inputs: list[Path], *, out: Optional[Path], plot: Optional[Path], save: Optional[Path],
                check: bool, title: str, preamble: Optional[Path] = None) -> int:
    """The ``ddcore report`` command (see :mod:`ddcore.cli`)."""
    from ddcore.artifacts import atomic_write_text

    default_mode = not inputs
    if default_mode:
        inputs = sorted(DEFAULT_RESULTS.glob("*.json"))
        if not inputs:
            raise UserError(f"ddcore report: no result files in {DEFAULT_RESULTS} (pass run directories or files)")
        out = out or DEFAULT_OUT
        plot = plot or DEFAULT_PLOT
        if preamble is None and DEFAULT_PREAMBLE.exists():
            preamble = DEFAULT_PREAMBLE
    results = collect(inputs)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        targets = [save / result_name(r) for r in results]
        for r, target in zip(results, targets):
            # a different run with the same name: refuse before writing anything, never overwrite its numbers
            if target.exists():
                try:
                    old = json.loads(target.read_text())
                except (OSError, ValueError):
                    old = None
                if not isinstance(old, dict) or not _same_run(old, r):
                    raise UserError(f"--save: {target} already holds another run's result ({(old or {}).get('command')!r}"
                                    f"); move it away or save into another folder")
            if targets.count(target) > 1:
                raise UserError(f"--save: two inputs would both be saved as {target}")
        for r, target in zip(results, targets):
            atomic_write_text(target, json.dumps(r, indent=2, sort_keys=True) + "\n")
            print(f"ddcore report: wrote {target}")
    rel_plot = None
    if plot is not None and out is not None:
        try:
            rel_plot = str(Path(plot).resolve().relative_to(Path(out).resolve().parent))
        except ValueError:
            rel_plot = str(plot)
    try:
        intro = Path(preamble).read_text() if preamble is not None else ""
    except OSError as exc:
        raise UserError(f"{preamble}: cannot read the preamble ({exc.strerror or exc})") from None
    text = render_markdown(results, title=title, preamble=intro, plot=rel_plot if plot and any(
        len(r.get("curve") or []) > 1 for r in results) else None)
    sources = "\n".join(f"- `{p}`" for p in inputs)
    text += f"\nResult files:\n\n{sources}\n"
    if check:
        if out is None:
            raise UserError("ddcore report --check needs --out FILE (or no inputs: docs/reproduction.md)")
        current = Path(out).read_text() if Path(out).exists() else None
        if current != text:
            print(f"ddcore report: {out} is stale (regenerate with `ddcore report`)", file=sys.stderr)
            return 1
        print(f"ddcore report: {out} is up to date")
        return 0
    if out is None:
        print(text, end="")
    else:
        atomic_write_text(Path(out), text)
        print(f"ddcore report: wrote {out}")
    if plot is not None and render_plot(results, Path(plot)):
        print(f"ddcore report: wrote {plot}")
    return 0
