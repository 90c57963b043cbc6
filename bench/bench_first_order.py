"""The gradient-matching step's real side, two ways, interleaved: eager against compiled, or whole against sliced.

    DDCORE_DATA=../shared/datasets python bench/bench_first_order.py [--recipe recipes/mnist_dc.toml] [--ipc 1]
        [--steps 3] [--threads 0] [--device cpu] [--sides compile|real_chunk] [--set KEY=VALUE ...]

``--sides compile`` (default) builds the recipe twice on one device, as ``--set run.compile=off`` (every pass
eager) and as the recipe says (``compile = "auto"``: the synthetic side's double backward stays eager, the real
side's first-order pass runs compiled code). Gradient matching needs double backward, so before ``first_order`` the
whole step ran eagerly; the real side (``real.batch`` images per class against a few synthetic ones) is most of its
cost. ``--sides real_chunk`` compares the class-collective real gradient (DCC/DSAC after the warm-up; e.g.
``--recipe recipes/mnist_dcc.toml --set objective[0].warmup_outer=0``) over the whole batch of every class
(``run.real_chunk=0``) against slices of ``real_chunk`` images (the CPU default). Both sides are warmed up with one
step, then their steps alternate; it prints each step's seconds and loss, and the median per side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ddcore.engine import Run
from ddcore.plugins import PluginHost
from ddcore.recipe import load_recipe


#: the two sides of each comparison (baseline first): their recipe overrides
SIDES = {"compile": {"eager": ["run.compile=off"], "first_order": []},
         "real_chunk": {"whole": ["run.real_chunk=0"], "chunked": []}}


def build(recipe: str, ipc: int, device: str, extra: list[str]) -> Run:
    rec = load_recipe(recipe, [f"synset.ipc={ipc}", "run.repeats=1", *extra])
    return Run(rec, host=PluginHost(), out_dir=None, device=device, progress=False, log=lambda *_: None).build()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="recipes/mnist_dc.toml")
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sides", choices=sorted(SIDES), default="compile")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for both sides (repeatable)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sides = {name: build(args.recipe, args.ipc, args.device, [*args.overrides, *extra])
             for name, extra in SIDES[args.sides].items()}
    for name, run in sides.items():
        hp = run.hot_path
        print(f"{name}: compile={hp.compile} compile_first_order={hp.compile_first_order} "
              f"channels_last={hp.channels_last} precision={hp.precision}")
        run.step(0)  # warm-up (compilation)
    times: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(1, args.steps + 1):
        for name, run in sides.items():
            t0 = time.perf_counter()
            loss, _ = run.step(i)
            loss = float(loss)  # the host sync ends the step's work
            times[name].append(time.perf_counter() - t0)
            print(f"step {i} {name}: {times[name][-1]:.2f} s, loss {loss:.4f}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    (old, t_old), (new, t_new) = med.items()
    print(f"median s/step: {old} {t_old:.2f}, {new} {t_new:.2f} ({t_old / t_new:.2f}x) on {args.device}, "
          f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
