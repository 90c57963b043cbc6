"""Command line: ``ddcore run | eval | export | plugins | recipe check | docs | new-plugin``.

Exit codes: 0 success, 2 user error (one line on stderr; ``--debug`` adds the traceback), 1 bug.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from ddcore.errors import Interrupted, UserError

__all__ = ["main"]


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set synset.ipc=50 --set 'objective[0].weight=0.5' (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddcore", description="Plugin-extensible dataset distillation.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="distil a synthetic set from a recipe", description="Run a TOML recipe.")
    p.add_argument("recipe", help="path to a TOML recipe")
    _add_set(p)
    p.add_argument("--out", help="output directory: new or empty, or the run to --resume (default: "
                                 "runs/<recipe>-<time>-<pid><random>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--device", help="cpu, cuda or cuda:N (overrides the recipe's device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--repeats", type=int, metavar="N",
                   help="distil and evaluate N sets with derived seeds (sets run.repeats; the papers' num_exp)")

    p = sub.add_parser("eval", help="re-evaluate a saved synthetic set", description="Evaluate RUN_DIR's synset.")
    p.add_argument("run_dir", type=Path)
    _add_set(p)
    p.add_argument("--device", help="cpu, cuda or cuda:N")

    p = sub.add_parser("export", help="write a run's synthetic set for tools outside ddcore",
                       description="Write RUN_DIR's synthetic set as the evaluator trains on it (expanded, "
                                   "normalised): PNGs in class folders (torchvision ImageFolder), an .npz or a .pt.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", dest="fmt", required=True, choices=("imagefolder", "npz", "pt"))
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--no-expand", action="store_true",
                   help="the parameterization's raw output, before expansion augmentations (IDM partition)")
    p.add_argument("--pixels", action="store_true",
                   help="npz/pt: [0, 1]-scale pixels (x * std + mean, unclipped) instead of normalised images")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")

    p = sub.add_parser("report", help="results beside the papers' numbers (markdown table + accuracy plot)",
                       description="Summarise run directories or result files (JSON) as a markdown table beside the "
                                   "papers' values, and plot accuracy against step. Without inputs: regenerate "
                                   "docs/reproduction.md from docs/results/*.json.")
    p.add_argument("inputs", nargs="*", type=Path, metavar="RUN_DIR_OR_RESULT",
                   help="run directories (plain or repeats) or result files written by --save")
    p.add_argument("--out", type=Path, help="write the markdown here (default: stdout; no inputs: docs/reproduction.md)")
    p.add_argument("--plot", type=Path, help="write the accuracy-vs-step PNG here (no inputs: "
                                              "docs/reproduction-curves.png)")
    p.add_argument("--save", type=Path, metavar="DIR", help="also write each input's result file (JSON) into DIR")
    p.add_argument("--title", default="Reproduction", help="the report's title")
    p.add_argument("--preamble", type=Path, help="markdown placed under the title (no inputs: "
                                                  "docs/results/preamble.md when it exists)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out is stale")

    sub.add_parser("plugins", help="list plugins, distributions, versions and their components")

    p = sub.add_parser("recipe", help="recipe tools")
    rsub = p.add_subparsers(dest="recipe_command", metavar="SUBCOMMAND")
    c = rsub.add_parser("check", help="validate a recipe without running it")
    c.add_argument("recipe")
    _add_set(c)

    p = sub.add_parser("docs", help="generate docs/hooks.md and docs/recipes.md from the code",
                       description="Write the hook and recipe references generated from the hook specs and the "
                                   "registry (ddcore and ddcore-* plugins).")
    p.add_argument("--out", type=Path, default=Path("docs"), help="output directory (default: docs)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files in --out are stale")

    p = sub.add_parser("new-plugin", help="scaffold a plugin package (ddcore-NAME/)",
                       description="Create ddcore-NAME/: pyproject with the ddcore entry point, a hookimpl module "
                                   "registering one component of --kind, a recipe and its tests.")
    p.add_argument("name", help="plugin name: lower-case letters, digits and underscores, e.g. my_term")
    p.add_argument("--kind", default="objective",
                   choices=("objective", "parameterization", "augmentation", "sampler", "evaluator", "backbone", "data"),
                   help="the kind of component the package registers (default: objective)")
    p.add_argument("--dir", type=Path, default=Path("."), help="parent directory (default: .)")
    return parser


def cmd_run(args) -> int:
    from ddcore.distributed import shutdown
    from ddcore.engine import Run
    from ddcore.recipe import load_recipe

    if args.out is not None and not args.out.strip():
        raise UserError("--out: empty path (it would write into the current directory); name a folder")
    out = Path(args.out) if args.out is not None else None
    if out is None:
        # unique even for the jobs of a sweep started in the same second (and on several hosts)
        out = Path("runs") / (f"{Path(args.recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
                              f"{secrets.token_hex(2)}")
    if args.resume and args.out is None:
        raise UserError("--resume needs --out DIR (the run to continue)")
    overrides = list(args.overrides)
    if args.repeats is not None:
        if args.repeats < 1:
            raise UserError(f"--repeats: expected a positive integer, got {args.repeats}")
        overrides.append(f"run.repeats={args.repeats}")
    recipe = load_recipe(args.recipe, overrides)

    def make_run(r, *, out_dir, resume):
        return Run(r, out_dir=out_dir, device=args.device, resume=resume,
                   progress=False if args.no_progress else None)

    if recipe.run.repeats > 1:
        from ddcore._repeats import run_repeats

        print(f"ddcore: run -> {out} ({recipe.run.repeats} sets)")
        record = run_repeats(recipe, out, make_run=make_run, resume=args.resume)
        pooled = record["pooled"]
        print(json.dumps({"synset": _summary(pooled["synset"]), "sets": pooled["sets"],
                          **{f"baseline_{k}": _summary(v) for k, v in pooled["baselines"].items()}}))
        _print_paper(record.get("paper"), pooled["synset"])
        shutdown()
        return 0
    run = make_run(recipe, out_dir=out, resume=args.resume)
    if run.dist.is_main:
        print(f"ddcore: run -> {out}")
    results = run.execute()
    if results is not None and run.dist.is_main:
        print(json.dumps({"synset": _summary(results["synset"]),
                          **{f"baseline_{k}": _summary(v) for k, v in results["baselines"].items()}}))
        _print_paper(results.get("paper"), results["synset"])
    shutdown()
    return 0


def _print_paper(paper: Optional[dict], ours: dict) -> None:
    """One line: the published value beside ours, and the difference."""
    if not paper:
        return
    where = ", ".join(p for p in (paper.get("source"), paper.get("table")) if p)
    print(f"paper ({where}; ipc {paper.get('ipc')}): {paper['mean']:.2f} ± {paper['std']:.2f} | ours: "
          f"{ours['mean']:.2f} ± {ours['std']:.2f} ({ours.get('num_models')} models) | "
          f"difference {ours['mean'] - paper['mean']:+.2f}")


def _summary(r: dict) -> dict:
    return {"mean": round(r["mean"], 3), "std": round(r["std"], 3), "num_models": r.get("num_models")}


def cmd_eval(args) -> int:
    from ddcore.artifacts import RunLock, atomic_write_text, dumps_strict
    from ddcore.engine import Run, load_synset_into
    from ddcore.recipe import load_recipe

    run_dir = args.run_dir
    synset = run_dir / "synset.safetensors"
    if (run_dir / "set-0").is_dir() and not synset.exists():
        raise UserError(f"{run_dir}: a repeated run (run.repeats); evaluate one of its sets, e.g. "
                        f"ddcore eval {run_dir / 'set-0'}")
    if not (run_dir / "recipe.toml").is_file() or not synset.is_file():
        raise UserError(f"{run_dir}: not a finished run (needs recipe.toml and synset.safetensors)")
    history = run_dir / "eval.json"
    records = _read_eval_history(history)
    recipe = load_recipe(run_dir / "recipe.toml", args.overrides)
    with RunLock(run_dir, what="ddcore eval"):  # not while a run (or another eval) writes this folder
        run = Run(recipe, out_dir=None, device=args.device).build()
        load_synset_into(run, synset)
        # synset.safetensors is written when a run finishes: it is the set of the recipe's last step
        result = run.evaluate(step=recipe.run.iterations)
        result["reevaluated"] = True
        result["overrides"] = args.overrides
        records = _read_eval_history(history)
        records.append(result)
        atomic_write_text(history, dumps_strict(records, indent=2))
    print(json.dumps({"synset": _summary(result["synset"]),
                      **{f"baseline_{k}": _summary(v) for k, v in result["baselines"].items()}}))
    return 0


def _read_eval_history(path: Path) -> list:
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the evaluation history ({exc}); move it away to start a new one") from exc
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a JSON list of evaluations, got {type(records).__name__}")
    return records


def cmd_export(args) -> int:
    from ddcore.synset_io import export_synset

    written = export_synset(args.run_dir, args.out, args.fmt, expand=not args.no_expand, normalized=not args.pixels,
                            device=args.device)
    print(f"ddcore export: wrote {len(written)} file(s) to {args.out}")
    return 0


def cmd_plugins(args) -> int:
    from ddcore.plugins import get_host

    host = get_host()
    for p in host.plugins():
        comps = ", ".join(f"{k}:{n}" for k, n in p.components) or "(no components)"
        print(f"{p.name}  [{p.distribution} {p.version}]  {comps}")
    for b in host.broken.values():
        print(f"{b.name}  [{b.distribution} {b.version}]  {'DISABLED' if b.disabled else 'BROKEN'}: {b.reason}")
    return 0


def cmd_recipe(args) -> int:
    if args.recipe_command != "check":
        raise UserError("ddcore recipe: expected a subcommand: check")
    from ddcore.plugins import get_host
    from ddcore.recipe import load_recipe, validate

    recipe = load_recipe(args.recipe, args.overrides)
    host = get_host()
    host.require(recipe.plugins, file=recipe.file)
    configs = validate(recipe, host.registry)
    warning = _data_path_warning(recipe, configs["data"])
    if warning:
        print(f"ddcore: warning: {warning}", file=sys.stderr)
    print(f"{args.recipe}: ok ({len(recipe.objective)} objective term(s), {len(recipe.augment)} augmentation(s))")
    return 0


def _data_path_warning(recipe, data_config) -> Optional[str]:
    """A line when the data source reads a local folder that is not there (the run would stop at load time)."""
    from types import SimpleNamespace

    from ddcore.data.source import resolve_existing

    for option_name in ("path", "root"):
        value = getattr(data_config, option_name, None)
        if isinstance(value, str) and value:
            try:
                resolve_existing(value, SimpleNamespace(recipe=recipe, file=recipe.file), option_name=option_name,
                                 source=recipe.data.name)
            except UserError as exc:
                return f"{recipe.file}: data.{option_name}: {exc}"
    return None


def cmd_docs(args) -> int:
    from ddcore._docs import stale_files, write_docs

    if args.check:
        stale = stale_files(args.out)
        if stale:
            print(f"ddcore docs: stale: {', '.join(str(args.out / n) for n in stale)} (regenerate with `ddcore docs`)",
                  file=sys.stderr)
            return 1
        print(f"ddcore docs: {args.out} is up to date")
        return 0
    for path in write_docs(args.out):
        print(f"ddcore docs: wrote {path}")
    return 0


def cmd_new_plugin(args) -> int:
    from ddcore._scaffold import create_plugin

    root = create_plugin(args.name, args.dir, args.kind)
    print(f"ddcore new-plugin: created {root}")
    print(f"  pip install -e {root} && python -m pytest {root / 'tests'} && ddcore plugins")
    return 0


def cmd_report(args) -> int:
    from ddcore._report import main_report

    return main_report(list(args.inputs), out=args.out, plot=args.plot, save=args.save, check=args.check,
                       title=args.title, preamble=args.preamble)


COMMANDS = {"report": cmd_report, "run": cmd_run, "eval": cmd_eval, "export": cmd_export, "plugins": cmd_plugins,
            "recipe": cmd_recipe, "docs": cmd_docs, "new-plugin": cmd_new_plugin}


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ddcore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:  # a run stopped by Ctrl-C or SIGTERM: the message says what it saved
        if args.debug:
            traceback.print_exc()
        print(f"ddcore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # outside a run
        print("ddcore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
