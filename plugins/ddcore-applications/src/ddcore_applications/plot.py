"""Plots of the applications' results (matplotlib, no display needed).

``python -m ddcore_applications.plot RUN_DIR`` redraws ``continual.png`` from the run's ``eval.json`` (the
plugin writes it after every continual evaluation of a run with an output directory).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Optional


def continual_series(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{memory name: continual result}`` from one evaluation record (``synset`` + ``baselines``)."""
    series = {}
    synset = results.get("synset")
    if isinstance(synset, dict) and synset.get("application") == "continual":
        series["distilled"] = synset
    for kind, result in (results.get("baselines") or {}).items():
        if isinstance(result, dict) and result.get("application") == "continual":
            series[kind] = result
    return series


def continual_figure_png(series: dict[str, dict[str, Any]], title: str = "") -> bytes:
    """PNG bytes: accuracy on all seen classes (mean ± std over models) after every step, one line per memory."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4), dpi=120)
    ax = fig.add_subplot()
    for name, result in series.items():
        steps = result["steps"]
        x = [len(s["classes"]) for s in steps]
        y = [s["mean"] for s in steps]
        err = [s["std"] for s in steps]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{name} (last {y[-1]:.1f})")
    ax.set_xlabel("classes seen")
    ax.set_ylabel("test accuracy on seen classes (%)")
    if series:
        first = next(iter(series.values()))
        ax.set_xticks([len(s["classes"]) for s in first["steps"]])
        ax.set_title(title or f"class-incremental, GDumb memory ({first['num_models']} models / step)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _records(data: Any) -> Iterable[dict[str, Any]]:
    """Evaluation records of an eval.json, read defensively (a list of records, or a mapping holding lists)."""
    if isinstance(data, dict):
        if "synset" in data:
            yield data
            return
        for value in data.values():
            yield from _records(value)
    elif isinstance(data, list):
        for item in data:
            yield from _records(item)


def last_continual(eval_json: Path) -> Optional[dict[str, dict[str, Any]]]:
    found = None
    for record in _records(json.loads(Path(eval_json).read_text())):
        series = continual_series(record)
        if series:
            found = series
    return found


def main(argv: Optional[list[str]] = None) -> int:
    from ddcore.artifacts import atomic_write_bytes

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ddcore_applications.plot RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    path = run_dir / "eval.json"
    series = last_continual(path) if path.is_file() else None
    if not series:
        print(f"ddcore_applications.plot: error: {path}: no continual evaluation found", file=sys.stderr)
        return 2
    atomic_write_bytes(run_dir / "continual.png", continual_figure_png(series))
    print(f"wrote {run_dir / 'continual.png'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
