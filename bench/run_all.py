"""Run every distillation-step benchmark side by side with its naive reference; write bench/results/<device>.json.

    python bench/run_all.py [--device cpu|cuda] [--quick] [--methods dm,idm,...] [--steps N]

For each method (DM, IDM, IDM+IID, DSA, DCC, KRR-ST) the ddcore side is the engine's own step (``Run.step``: sampler,
real draw, expansion, siamese DSA, objective terms, optimiser, ``after_step``) built from the method's recipe in
``recipes/`` at paper settings (batch_real 256 per class, ConvNet-3 width 128, ipc 10, CIFAR-10 shape); the naive
side is the official-structure loop in ``bench/naive.py``. Both run in this one process on the same data, their
steps interleaved (step i of every side, then step i + 1), so a shared machine's drifts hit both alike: steps/s is
1 / median step time over ``--steps`` timed steps after one warm-up step, and the per-round ratios are printed too.
Peak memory on CUDA is per side: what the side keeps allocated plus the most its step allocates above that
(``torch.cuda.max_memory_allocated``). On CPU it is the process's RSS high-water mark (``resource.getrusage``),
which cannot separate the sides.

Data: CIFAR-10-shaped random uint8 images (500 per class; only speed matters) unless ``$DDCORE_DATA/cifar10-jpeg``
exists, in which case the recipe's real data are used. A method whose plugin (or recipe) is not installed is skipped
with a printed note. ``--quick`` uses batch_real 64 and 2 timed steps (a smoke run, not the table).

Also measured (``SWITCHES``): for DM the recipe switches ``[run] precision = "bf16" | "tf32"``, ``compile = "on" |
"off"``, ``channels_last = "on" | "off"`` and ``real_chunk = 0``, for IDM(+IID) ``compile = "off"`` (ddcore side
only, ratio to the default ddcore step), and the evaluation benchmark of
``bench/bench_eval.py`` (imported) when ``--eval`` is given. ``--run KEY=VALUE`` sets a ``[run]`` option on the
ddcore side of every method.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import attrs
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import ddcore  # noqa: E402
from ddcore.components import DataSource  # noqa: E402
from ddcore.config import option, positive  # noqa: E402
from ddcore.types import DatasetInfo  # noqa: E402

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


# -- data: a registered data source of CIFAR-shaped random images -------------------------------------------
@attrs.define(frozen=True, kw_only=True)
class RandomCifarConfig:
    num_classes: int = option(10, "Classes.", validator=positive)
    per_class: int = option(500, "Training images per class.", validator=positive)


class RandomCifar(DataSource):
    """CIFAR-10-shaped uniform random uint8 images (3x32x32), ``per_class`` per class; a fixed seed."""

    def info(self):
        return DatasetInfo("random-cifar", self.config.num_classes, 3, 32, 32, CIFAR_MEAN, CIFAR_STD)

    def load(self, split):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        n = self.config.per_class * self.config.num_classes if split == "train" else 200
        labels = torch.arange(n) % self.config.num_classes
        return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), labels


class BenchPlugin:
    @ddcore.hookimpl
    def ddcore_register_data_sources(self, registry):
        registry.add("bench_random_cifar", RandomCifar, config=RandomCifarConfig)


# -- methods -------------------------------------------------------------------------------------------------
@attrs.define
class Method:
    key: str
    title: str
    recipe: str
    plugins: tuple[str, ...]
    naive: Optional[Callable] = None  # (data, info, image_syn, ipc, batch_real, device) -> object with .step(it)
    changes: Callable[[dict], None] = lambda r: None
    note: str = ""
    naive_from_run: Optional[Callable] = None  # (ddcore run, device) -> object with .step(it); wins over `naive`


def _drop_objective(name: str):
    def change(r: dict) -> None:
        r["objective"] = [o for o in r["objective"] if o.get("name") != name]
    return change


#: IDM queue training per step (sampler.model_train_steps; paper C10 ipc 10: 10); --queue-train-steps changes it.
QUEUE_STEPS = 10


def _queue_steps(r: dict) -> None:
    r["sampler"]["model_train_steps"] = QUEUE_STEPS


def _krr_bench(r: dict) -> None:
    """KRR-ST at the code's step shape, with a teacher and pool that are cheap to build (speed only).

    The real batch is uniform (not per class): 4 x batch_real, i.e. the code's 1024 at paper settings. The teacher is
    one Barlow Twins epoch on 256 images (its quality does not change the step's cost), and the pool holds 2 models
    that start after one step (``sampler.init_steps_max = 1``; the paper's U{1..1000} full-batch steps on m = 1000
    images for each of l = 10 models would take hours on a CPU; l does not change a step's cost). T stays 1000, so no
    model is re-created inside the timed window and every timed step on both sides includes its online step.
    """
    if r["data"].get("name") != "bench_random_cifar":  # CIFAR-100 is not offline: the CIFAR-10 copy has its shape
        r["data"] = {"name": "npz", "path": "cifar10-jpeg"}
    r["real"]["batch"] = 4 * r["real"]["batch"]
    r["synset"]["teacher"].update(epochs=1, train_limit=256, warmup_epochs=0, batch_size=128, cache=False)
    r["sampler"].update(init_steps_max=1, num_models=2)


#: ddcore-side variants timed against the default step (``--no-switches`` skips them)
SWITCHES: dict[str, dict[str, dict]] = {
    "dm": {"bf16": {"precision": "bf16"}, "tf32": {"precision": "tf32"},
           "compile=on": {"compile": "on"}, "compile=off": {"compile": "off"},
           "channels_last=on": {"channels_last": "on"}, "channels_last=off": {"channels_last": "off"},
           "real_chunk=0": {"real_chunk": 0},
           "all off": {"channels_last": "off", "real_chunk": 0, "compile": "off"}},
    "idm": {"compile=off": {"compile": "off"}},
    "idm_iid": {"compile=off": {"compile": "off"}},
}


def methods() -> list[Method]:
    import naive

    return [
        Method("dm", "DM", "dm.toml", ("ddcore_dm",), lambda *a: naive.NaiveDM(*a)),
        Method("idm", "IDM", "idm.toml", ("ddcore_dm", "ddcore_idm"),
               lambda *a: naive.NaiveIDM(*a, train_steps=QUEUE_STEPS), _queue_steps),
        Method("idm_iid", "IDM+IID", "idm_iid.toml", ("ddcore_dm", "ddcore_idm", "ddcore_iid"),
               lambda *a: naive.NaiveIDM(*a, cov_weight=0.03, train_steps=QUEUE_STEPS),
               lambda r: (_drop_objective("class_centralization")(r), _queue_steps(r)),
               "class_centralization left out on both sides (its pretrained ResNet18 pool takes hours to train "
               "on CPU); covariance_matching included"),
        Method("dsa", "DSA", "dsa.toml", ("ddcore_dcc",), lambda *a: naive.NaiveDSA(*a)),
        Method("dcc", "DCC", "dcc.toml", ("ddcore_dcc",), lambda *a: naive.NaiveDSA(*a, collective=True,
                                                                                     augment=False)),
        Method("krr_st", "KRR-ST", "krr_st.toml", ("ddcore_krr",), None, _krr_bench,
               "m = 1000, ConvNet 128-256-512 BN, real batch 4 x batch_real uniform (1024 at paper settings), "
               "crop+flip + teacher forward + one online pool step per step; teacher 1 epoch on 256 images and "
               "pool of 2 models initialised with 1 step on both sides (set-up cost, not step cost)",
               naive_from_run=lambda run, device: __import__("naive").NaiveKRR(run, device)),
    ]


# -- helpers -------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class Side:
    """One thing being timed: a ``step(i)`` callable plus its memory bookkeeping."""

    def __init__(self, name: str, step: Callable[[int], Any], device: torch.device, resident_bytes: int = 0):
        self.name, self.step, self.device = name, step, device
        self.times: list[float] = []
        self.resident = resident_bytes  # CUDA: bytes this side keeps allocated between steps
        self.step_extra = 0  # CUDA: most bytes above the resident level during one of its steps

    def result(self) -> dict[str, Any]:
        out = {"steps_per_s": 1.0 / statistics.median(self.times), "step_s": self.times}
        if self.device.type == "cuda":
            out["peak_mb"] = (self.resident + self.step_extra) / 2**20
        else:  # the process high-water mark: cannot separate the sides on a CPU
            out["peak_mb"] = process_peak_rss_mb()
        return out


def cuda_allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def time_interleaved(sides: list[Side], n: int, device: torch.device, warmup: int = 1) -> None:
    """Time ``n`` steps of every side after ``warmup``, round-robin (step i of each side, then step i + 1 ...).

    Interleaving makes slow drifts of a shared machine (other jobs, thermal state) hit every side alike, where
    timing one side after the other would fold the drift into the ratio.
    """
    for i in range(warmup + n):
        for side in sides:
            sync(device)
            before = cuda_allocated(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            side.step(i)
            sync(device)
            dt = time.perf_counter() - t0
            if device.type == "cuda":
                side.step_extra = max(side.step_extra, torch.cuda.max_memory_allocated(device) - before)
            if i >= warmup:
                side.times.append(dt)


def load_recipe_dict(method: Method, batch_real: int, use_real_data: bool, run_changes: dict) -> dict:
    import tomllib

    r = tomllib.loads((ROOT / "recipes" / method.recipe).read_text())
    if not use_real_data:
        r["data"] = {"name": "bench_random_cifar"}
    r.pop("eval", None)
    r["real"] = {**r.get("real", {}), "batch": batch_real}
    r["run"] = {**r.get("run", {}), "iterations": 10**6, "progress": False, "checkpoint_every": 0, **run_changes}
    method.changes(r)
    return r


def build_run(recipe: dict, device: torch.device, scope: str = "step"):
    """The engine's ``Run`` for ``recipe``, built. ``scope`` names its compiled-code cache: sides that share one
    process get one each, as separate runs (separate processes) would, so that one side's compiled variants do
    not use up another's recompile budget (``ddcore.hotpath.compile_backbone``)."""
    import attrs

    from ddcore.engine import Run
    from ddcore.plugins import PluginHost
    from ddcore.recipe import parse_recipe

    run = Run(parse_recipe(recipe), host=PluginHost(extra=[BenchPlugin()]), out_dir=None, device=str(device),
              progress=False, log=lambda *_: None)
    run.hot_path = attrs.evolve(run.hot_path, scope=scope)
    return run.build()


def ddcore_side(name: str, recipe: dict, device: torch.device) -> tuple[Side, Any, list]:
    """A side stepping the engine's ``Run.step``; also returns the run and its (device) losses."""
    before = cuda_allocated(device)
    run = build_run(recipe, device, scope=f"bench:{recipe.get('name')}:{name}")
    losses: list[torch.Tensor] = []

    def one(i):
        loss, _ = run.step(i)
        losses.append(loss)

    return Side(name, one, device, cuda_allocated(device) - before), run, losses


def naive_side(method: Method, run, device: torch.device, batch_real: int) -> Side:
    import naive

    before = cuda_allocated(device)
    if method.naive_from_run is not None:
        ref = method.naive_from_run(run, device)
    else:
        data = naive.OfficialData(run.build_ctx.train, device)
        info = run.build_ctx.info
        ipc = run.recipe.synset.options.get("ipc", 10)
        g = torch.Generator().manual_seed(0)
        image_syn = torch.randn(info.num_classes * ipc, *info.image_shape, generator=g).to(device)
        ref = method.naive(data, info, image_syn, ipc, batch_real, device)
    return Side("naive", ref.step, device, cuda_allocated(device) - before)


def installed(modules: tuple[str, ...]) -> Optional[str]:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return ", ".join(missing) if missing else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model or platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def run_eval_bench(device: torch.device, quick: bool) -> dict[str, Any]:
    """bench/bench_eval.py (imported): sequential vs vectorised-ensemble vs threaded vs compiled evaluation of 10
    ConvNets."""
    spec = importlib.util.spec_from_file_location("bench_eval", HERE / "bench_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["bench_eval.py", "--device", str(device), "--epochs", "1" if quick else "4",
            "--repeats", "1" if quick else "3"]
    buf = io.StringIO()
    saved = sys.argv
    try:
        sys.argv = argv
        with contextlib.redirect_stdout(buf):
            mod.main()
    finally:
        sys.argv = saved
    text = buf.getvalue()
    print(text, end="")
    out: dict[str, Any] = {"command": " ".join(["python bench/bench_eval.py", *argv[1:]]), "output": text}
    for line in text.splitlines():
        for path in ("sequential", "vmap", "threads", "compiled"):
            if line.startswith(path + ":"):
                out[f"{path}_s"] = float(line.split()[1])
    for path in ("vmap", "threads", "compiled"):
        if "sequential_s" in out and f"{path}_s" in out:
            out[f"{path}_ratio"] = out["sequential_s"] / out[f"{path}_s"]
    return out


# -- main ----------------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="batch_real 64, 2 timed steps (smoke run)")
    p.add_argument("--methods", default="dm,idm,idm_iid,dsa,dcc,krr_st")
    p.add_argument("--steps", type=int, default=0, help="timed steps per side (default 3; quick 2)")
    p.add_argument("--batch-real", type=int, default=0, help="real images per class (default 256; quick 64)")
    p.add_argument("--no-switches", action="store_true", help="skip the switch variants (SWITCHES)")
    p.add_argument("--queue-train-steps", type=int, default=10,
                   help="IDM queue SGD steps per iteration on both sides (paper: 10; fewer keeps CPU runs short)")
    p.add_argument("--eval", action="store_true", help="also run bench/bench_eval.py (imported)")
    p.add_argument("--run", action="append", default=[], metavar="KEY=VALUE",
                   help="a [run] recipe option for the ddcore side of every method (TOML value), e.g. "
                        "channels_last='\"off\"' or real_chunk=0; repeatable")
    p.add_argument("--out", type=Path, default=None, help="results file (default bench/results/<device>.json)")
    args = p.parse_args()

    global QUEUE_STEPS
    QUEUE_STEPS = args.queue_train_steps
    device = torch.device(args.device)
    steps = args.steps or (2 if args.quick else 3)
    batch_real = args.batch_real or (64 if args.quick else 256)
    data_root = os.environ.get("DDCORE_DATA")
    use_real = bool(data_root) and (Path(data_root) / "cifar10-jpeg").exists()
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    import tomllib

    run_changes: dict[str, Any] = {}
    for item in args.run:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            p.error(f"--run: expected KEY=VALUE, got {item!r}")
        run_changes[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
    print(f"device: {device} = {device_name(device)}; torch {torch.__version__}; batch_real {batch_real}/class; "
          f"{steps} timed steps after 1 warm-up; data: {'cifar10-jpeg' if use_real else 'random CIFAR-10-shaped'}")
    results: dict[str, Any] = {
        "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
        "batch_real": batch_real, "timed_steps": steps, "quick": args.quick, "idm_queue_train_steps": QUEUE_STEPS,
        "data": "cifar10-jpeg" if use_real else "random-cifar10-shaped", "methods": {}, "switches": {},
        "command": " ".join(["python", "bench/run_all.py", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    out = args.out or HERE / "results" / f"{device.type}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every method, so an interrupted run keeps what it measured
        out.write_text(json.dumps(results, indent=2))

    for method in methods():
        save()
        if method.key not in wanted:
            continue
        missing = installed(method.plugins)
        if missing or not (ROOT / "recipes" / method.recipe).exists():
            why = f"plugin module(s) not installed: {missing}" if missing else f"recipes/{method.recipe} not found"
            print(f"[skip] {method.title}: {why}")
            results["methods"][method.key] = {"title": method.title, "skipped": why}
            continue
        recipe = load_recipe_dict(method, batch_real, use_real, run_changes)
        try:
            ours, run, losses = ddcore_side("ddcore", recipe, device)
            sides = [ours]
            if method.naive is not None or method.naive_from_run is not None:
                sides.append(naive_side(method, run, device, batch_real))
        except Exception as exc:  # a plugin still being written must not stop the others
            why = f"ddcore step failed: {type(exc).__name__}: {exc}"
            print(f"[skip] {method.title}: {why}")
            results["methods"][method.key] = {"title": method.title, "skipped": why}
            continue
        variant_losses = {}
        if method.key in SWITCHES and not args.no_switches:
            # each relative to the default step (on a CPU: channels_last, real_chunk 256 and compile already on)
            for name, change in SWITCHES[method.key].items():
                try:
                    side, _, variant_losses[name] = ddcore_side(
                        name, load_recipe_dict(method, batch_real, use_real, {**run_changes, **change}), device)
                    sides.append(side)
                except Exception as exc:
                    failed = {"failed": f"{type(exc).__name__}: {exc}"}
                    results["switches"].setdefault(method.key, {})[name] = failed
                    print(f"  {method.title} switch {name}: failed ({type(exc).__name__}: {exc})")
        time_interleaved(sides, steps, device)
        res = {side.name: side.result() for side in sides}
        first_loss = float(losses[0])
        entry = {"title": method.title, "ddcore": {**res["ddcore"], "first_loss": first_loss}, "note": method.note}
        line = (f"{method.title:8s} ddcore {res['ddcore']['steps_per_s']:8.3f} steps/s  "
                f"peak {res['ddcore']['peak_mb']:8.0f} MB")
        if "naive" in res:
            entry["naive"] = res["naive"]
            entry["ratio"] = res["ddcore"]["steps_per_s"] / res["naive"]["steps_per_s"]
            paired = [n / d for d, n in zip(res["ddcore"]["step_s"], res["naive"]["step_s"])]
            entry["paired_ratios"] = paired
            line += (f" | naive {res['naive']['steps_per_s']:8.3f} steps/s  peak {res['naive']['peak_mb']:8.0f} MB"
                     f" | ratio {entry['ratio']:.2f}x (per round: {', '.join(f'{r:.2f}' for r in paired)})")
        print(line + (f"  ({method.note})" if method.note else ""))
        results["methods"][method.key] = entry
        base = res["ddcore"]["steps_per_s"]
        for name, var_losses in variant_losses.items():
            var = res[name]
            rel_loss = abs(float(var_losses[0]) - first_loss) / max(abs(first_loss), 1e-12)
            results["switches"].setdefault(method.key, {})[name] = {
                "steps_per_s": var["steps_per_s"], "ratio_vs_default": var["steps_per_s"] / base,
                "step_s": var["step_s"], "first_step_loss_rel_diff": rel_loss}
            print(f"  {method.title} switch {name:17s} {var['steps_per_s']:8.3f} steps/s  "
                  f"{var['steps_per_s'] / base:.2f}x of the default step  (first-step loss rel. diff {rel_loss:.1e})")
        del sides, ours, run
        save()
    if args.eval:
        results["eval"] = run_eval_bench(device, args.quick)
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
