"""The distillation engine: builds a recipe's components and runs the one loop every method shares.

See ``docs/architecture.md`` for the loop. The engine knows no method: everything method-specific lives in
components resolved through the registry.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import attrs
import torch

from ddcore.artifacts import (
    LOCK_NAME,
    RunLock,
    atomic_write_text,
    clean_stale_temporaries,
    dumps_strict,
    load_checkpoint,
    save_checkpoint,
    save_grid,
    save_synset,
)
from ddcore.context import BuildContext, StepContext, derive_seed
from ddcore.distributed import init_from_env
from ddcore.errors import Interrupted, PluginError, RecipeError, RunDiverged, UserError
from ddcore.files import cache_root
from ddcore.hotpath import HotPath
from ddcore.plugins import PluginHost, get_host
from ddcore.recipe import Recipe, load_recipe, validate
from ddcore.types import RealBatch, SynBatch

__all__ = ["Run", "load_synset_into", "resolve_device"]

CHECKPOINT = "checkpoint/state.pt"
#: files a run writes into its directory (each must be creatable as a file: checked before the first step)
ARTEFACTS = ("recipe.toml", "manifest.json", "metrics.jsonl", "eval.json", "synset.safetensors", "synset.png",
             CHECKPOINT)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise RecipeError(f"expected auto, cpu, cuda or cuda:N, got {name!r}", key="device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} requested but CUDA is not available on this machine (use --device cpu)")
    return device


def cache_dir() -> Path:
    return cache_root()


class Run:
    """One distillation run: recipe + plugin host + output directory.

    :param recipe: a structured :class:`~ddcore.recipe.Recipe`.
    :param out_dir: where artefacts go (created); ``None`` keeps everything in memory.
    :param device: overrides the recipe's ``device``.
    :param resume: continue from ``out_dir``'s checkpoint.
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        host: Optional[PluginHost] = None,
        out_dir: Optional[Path] = None,
        device: Optional[str] = None,
        resume: bool = False,
        progress: Optional[bool] = None,
        log=print,
    ):
        self.recipe = recipe
        self.host = host or get_host()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        # Under torchrun (WORLD_SIZE > 1) join the process group; cuda becomes cuda:LOCAL_RANK (ddcore.distributed).
        self.dist, self.device = init_from_env(resolve_device(device or recipe.device))
        self.resume = resume
        # device-dependent defaults of the hot-path switches ("auto"/-1), measured in docs/benchmarks.md
        self.hot_path = HotPath.resolve(recipe.run, self.device)
        self.show_progress = (recipe.run.progress if progress is None else progress) and self.dist.is_main
        self.log = log if self.dist.is_main else (lambda *_: None)
        self.host.require(recipe.plugins, file=recipe.file)
        self.configs = validate(recipe, self.host.registry)
        self.built = False
        self.start_step = 0
        self.evaluations: list[dict[str, Any]] = []
        self._baseline_results: dict[str, Any] = {}
        self._lock: Optional[RunLock] = None
        self.last_checkpoint: Optional[tuple[Path, int]] = None  # (file, step) of the last good checkpoint
        self._first_nonfinite: Optional[torch.Tensor] = None  # per objective term: first bad step (1-based) or -1
        # wall-clock seconds of this run before this process (restored on resume) and this process's start
        self._wall_before = 0.0
        self._t_start = time.perf_counter()

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] = (), **kwargs) -> "Run":
        return cls(load_recipe(path, list(overrides)), **kwargs)

    def recipe_table(self, name: str) -> Any:
        """The structured config of the plugin-owned top-level table ``[name]`` (registered with
        ``ddcore_register_recipe_tables``), or ``None`` when the recipe has no such table."""
        return self.configs.get(name) if name in self.recipe.tables else None

    # -- build ----------------------------------------------------------------------------------------
    def build(self) -> "Run":
        """Load data onto the device and build every component (idempotent)."""
        if self.built:
            return self
        from ddcore.data.placement import open_split

        reg, recipe, cfg = self.host.registry, self.recipe, self.configs
        # Data sources are built before the BuildContext exists; they see the recipe (to resolve relative paths)
        # and whether to show progress (a long decode).
        source = reg.get("data", recipe.data.name).factory(
            cfg["data"], SimpleNamespace(recipe=recipe, file=recipe.file, progress=self.show_progress, log=self.log))
        info = source.info()
        _preflight_synset_memory(cfg["synset"], info, self.device, file=recipe.file)
        store = getattr(cfg["data"], "store", "auto")  # [data] store: built-in sources have it
        train = open_split(source, "train", info, self.device, store, log=self.log)

        def load_test():
            return open_split(source, "test", info, self.device, store, log=self.log)

        self.source = source
        self.build_ctx = b = BuildContext(
            recipe=recipe, registry=reg, info=info, device=self.device, seed=recipe.seed, train=train,
            test_loader=load_test, cache_dir=cache_dir(), out_dir=self.out_dir, log=self.log,
            rank=self.dist.rank, world_size=self.dist.world_size, hot_path=self.hot_path,
            progress=self.show_progress,
        )
        b.augmentations = [
            reg.get("augmentation", a.name).factory(cfg[f"augment[{i}]"], b) for i, a in enumerate(recipe.augment)
        ]
        with b.seeded("parameterization"):
            self.parameterization = reg.get("parameterization", recipe.synset.name).factory(cfg["synset"], b)
        self.parameterization.to(self.device)
        b.parameterization = self.parameterization
        self.sampler = reg.get("sampler", recipe.sampler.name).factory(cfg["sampler"], b)
        self.objectives = [
            (o.ref.name, o.weight, reg.get("objective", o.ref.name).factory(cfg[f"objective[{i}]"], b))
            for i, o in enumerate(recipe.objective)
        ]
        self._check_compile()
        self.optimizer = reg.get("optimizer", recipe.optimizer.name).factory(
            cfg["optimizer"], b, param_groups=self.parameterization.param_groups(),
            parameterization=self.parameterization, total_steps=recipe.run.iterations,
        )
        self.evaluator = (
            reg.get("evaluator", recipe.eval.name).factory(cfg["eval"], b) if recipe.eval is not None else None
        )
        self.dist.configure(self)
        self.built = True
        return self

    def _check_compile(self) -> None:
        """``[run] compile`` against objectives that need double backward: 'auto' runs the step networks eagerly
        (``HotPath.first_order`` passes stay compiled), 'on' is an error.

        ``precision = "auto"`` resolves to bf16 only if every objective is ``bf16_safe`` (measured to keep its
        accuracy under bf16 autocast); otherwise it stays fp32."""
        if self.recipe.run.precision == "auto" and self.hot_path.precision == "bf16" and not all(
                getattr(obj, "bf16_safe", False) for _, _, obj in self.objectives):
            self.hot_path = attrs.evolve(self.hot_path, precision="fp32")
            self.build_ctx.hot_path = self.hot_path
        needs = [name for name, _, obj in self.objectives if getattr(obj, "double_backward", False)]
        if not (self.hot_path.compile and needs):
            return
        if self.recipe.run.compile == "on":
            raise RecipeError(
                f"'on' cannot run objective {needs[0]!r}: it differentiates through the network's gradients "
                "(double backward), which torch.compile does not support; expected 'off' or 'auto'",
                file=self.recipe.file, key="run.compile")
        # eager for the passes that are differentiated twice; the first-order ones keep compiled code
        self.hot_path = attrs.evolve(self.hot_path, compile=False)
        self.build_ctx.hot_path = self.hot_path

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self, step: int) -> dict[str, Any]:
        state = {
            "step": step,
            "parameterization": self.parameterization.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "objectives": [obj.state_dict() for _, _, obj in self.objectives],
            "augmentations": [a.state_dict() for a in self.build_ctx.augmentations],
            "rng_cpu": torch.get_rng_state(),
            "evaluations": dumps_strict(self.evaluations),
            "wall_s": self.wall_s(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.parameterization.load_state_dict(state["parameterization"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        for (_, _, obj), s in zip(self.objectives, state["objectives"]):
            obj.load_state_dict(s)
        for aug, s in zip(self.build_ctx.augmentations, state["augmentations"]):
            aug.load_state_dict(s)
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.evaluations = json.loads(state["evaluations"])
        self.start_step = int(state["step"])
        self._wall_before = float(state.get("wall_s", 0.0))

    # -- the loop -------------------------------------------------------------------------------------
    def _real_batch(self, step: int) -> Optional[RealBatch]:
        real_cfg = self.recipe.real
        g = self.build_ctx.generator("real", step)
        if real_cfg.sampling == "per_class":
            return self.build_ctx.train.sample_per_class(real_cfg.batch, g, classes=self.dist.real_classes)
        if real_cfg.sampling == "uniform":
            return self.build_ctx.train.sample_uniform(real_cfg.batch, g)
        return None

    def step(self, step: int) -> tuple[torch.Tensor, StepContext]:
        """One synthetic update; returns the (device) loss and the step context."""
        b = self.build_ctx
        self.optimizer.prepare()
        nets = self.sampler.nets(step)
        self.dist.check_nets(nets)
        real_raw = self._real_batch(step)
        syn_raw = self.parameterization.materialize()
        syn = self.dist.restrict(b.expand(syn_raw))  # class-split modes: this rank's classes only
        real = real_raw
        aug_params = []
        for i, aug in enumerate(b.siamese_augmentations):
            params = aug.sample(b.num_classes, b.generator("augment", step, i), self.device)
            aug_params.append(params)
            syn = SynBatch(aug.apply(syn.images, params, syn.groups), syn.labels, syn.targets, syn.groups)
            if real is not None:
                real = RealBatch(aug.apply(real.images, params, real.labels), real.labels, real.indices, real.per_class)
        ctx = StepContext(
            step=step, build=b, real=real, real_raw=real_raw, syn=syn, syn_raw=syn_raw, nets=nets,
            sampler_info=self.sampler.info(), aug_params=aug_params, real_chunk=self.hot_path.real_chunk,
        )
        ctx._materialize = self.parameterization.materialize
        _apply_hot_path(ctx, self.hot_path)
        total = None
        precision = self.hot_path.precision
        tf32 = precision == "tf32"
        with _Tf32(tf32), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            for i, (name, weight, objective) in enumerate(self.objectives):
                term = self._checked_term(i, objective(ctx)).float()
                ctx.log(f"loss/{name}", term)
                self._track_nonfinite(i, step, term)
                total = weight * term if total is None else total + weight * term
        self.optimizer.zero_grad()
        with _Tf32(tf32):
            total.backward()
        if self.dist.active:
            params = [p for p in self.parameterization.parameters() if p.requires_grad]
            self.dist.after_backward(params, [self.parameterization.class_index(p) is not None for p in params])
        self.optimizer.step()
        self.sampler.after_step(ctx)
        return total.detach(), ctx

    def _track_nonfinite(self, index: int, step: int, term: torch.Tensor) -> None:
        """Remember on the device the first step at which each term went non-finite (no host sync per step)."""
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.full((len(self.objectives),), -1, dtype=torch.int64, device=term.device)
        first = self._first_nonfinite[index]
        newly = ~torch.isfinite(term.detach()).all() & (first < 0)
        self._first_nonfinite[index] = torch.where(newly, torch.full_like(first, step + 1), first)

    def _checked_term(self, index: int, term: Any) -> torch.Tensor:
        """A term's return value, or one line blaming ``objective[index]``, its component and distribution.

        Metadata checks only (no host sync): a 0-d floating-point tensor on the run's device.
        """
        if isinstance(term, torch.Tensor) and term.dim() == 0 and term.is_floating_point() and \
                term.device.type == self.device.type:
            return term
        got = (f"a {type(term).__name__}" if not isinstance(term, torch.Tensor) else
               f"a tensor of shape {list(term.shape)}, dtype {str(term.dtype).replace('torch.', '')}, on {term.device}")
        raise PluginError(f"{self.recipe.file + ': ' if self.recipe.file else ''}{_term_label(self, index)} returned "
                          f"{got}; expected a 0-d floating-point tensor on {self.device} (a bug in the plugin)")

    def execute(self) -> Optional[dict[str, Any]]:
        """Run (or resume) the loop, evaluate, write artefacts; returns the final evaluation.

        The output directory is held (``run.lock``) from before the data loads until this returns or raises.
        """
        self._claim_out_dir()
        stop = _StopSignals(enabled=not self.dist.active)
        try:
            with stop:
                return self._execute(stop)
        except Interrupted:
            raise
        except KeyboardInterrupt:
            # outside the step loop (data loading, evaluation): no consistent state to save now
            saved = self._last_good() if self.last_checkpoint is not None or self.out_dir is None else \
                "no checkpoint was written (--resume starts from step 0)"
            hint = "; continue with --resume" if self.last_checkpoint is not None else ""
            raise Interrupted(f"interrupted by {stop.name}: {saved}{hint}", exit_code=128 + stop.signum) from None
        finally:
            if self._lock is not None:
                self._lock.release()

    def _execute(self, stop: "_StopSignals") -> Optional[dict[str, Any]]:
        self.build()
        cfg = self.recipe.run
        total_steps = cfg.iterations
        if self.resume:
            self._restore()
            if self.start_step > total_steps:
                raise UserError(
                    f"--resume: run.iterations = {total_steps} is below the checkpoint's step {self.start_step} "
                    f"({self.out_dir / CHECKPOINT}); a run cannot go back: pass run.iterations >= {self.start_step}")
            self._trim_metrics(self.start_step)
        self._t_start = time.perf_counter()
        self._write_manifest()
        hook = self.host.hook
        hook.ddcore_run_started(run=self, build=self.build_ctx, start_step=self.start_step)
        if self.dist.active:
            self.log(f"distributed: {self.dist.describe()}")
        t0 = time.perf_counter()
        last_log = (self.start_step, t0)
        progress = self._progress(total_steps)
        done = self.start_step
        try:
            stop.in_loop = True
            for step in range(self.start_step, total_steps):
                loss, ctx = self.step(step)
                hook.ddcore_step_end(run=self, ctx=ctx, loss=loss)
                done = step + 1
                if done % cfg.log_every == 0 or done == total_steps:
                    names = ["loss", *ctx.logs]
                    values = self.dist.reduce_logged(
                        torch.stack([loss.float(), *[v.float().reshape(()) for v in ctx.logs.values()]])).tolist()
                    now = time.perf_counter()
                    metrics = dict(zip(names, values))
                    metrics.update(step=done, lr=self.optimizer.lr, steps_per_s=(done - last_log[0]) / max(now - last_log[1], 1e-9),
                                   elapsed_s=now - t0)
                    last_log = (done, now)
                    self._append_metrics(metrics)
                    self._check_finite_loss(done, metrics)
                    hook.ddcore_metrics(run=self, step=done, metrics=metrics)
                    progress.update(done, metrics["loss"])
                else:
                    progress.update(done, None)
                if cfg.eval_every and done % cfg.eval_every == 0 and done != total_steps:
                    self.evaluate(done)
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != total_steps:
                    self._checkpoint(done)
                if stop.requested:
                    self._stop_at(done, stop)
            stop.in_loop = False
            # The checkpoint comes before the final evaluation (the longest phase): an interrupt there loses no step.
            self._checkpoint(total_steps)
            if stop.requested:
                self._stop_at(total_steps, stop, saved=True)
        finally:
            stop.in_loop = False
            progress.close()
        results = None
        if self.evaluator is not None and cfg.eval_at_end and (
            not self.evaluations or self.evaluations[-1]["step"] != total_steps
        ):
            results = self.evaluate(total_steps)
            self._checkpoint(total_steps)  # records the evaluation, so a resumed finished run does not repeat it
        elif self.evaluations:
            results = self.evaluations[-1]
        self.save_artifacts()
        hook.ddcore_run_finished(run=self, results=results)
        return results

    def _stop_at(self, done: int, stop: "_StopSignals", saved: bool = False) -> None:
        """A requested stop (Ctrl-C, SIGTERM) between steps: checkpoint the finished steps, then raise."""
        if not saved:
            self._checkpoint(done)
        where = f"checkpoint at step {done} written to {self.out_dir / CHECKPOINT}; continue with --resume" \
            if self.out_dir is not None else f"stopped at step {done} (no output directory: nothing saved)"
        raise Interrupted(f"interrupted by {stop.name}: {where}", exit_code=128 + stop.requested)

    def _check_finite_loss(self, step: int, metrics: dict[str, Any]) -> None:
        """Stop a diverged run at the logging point (host values: no extra sync), naming the non-finite term."""
        if all(not isinstance(v, float) or math.isfinite(v) for v in metrics.values()):
            return
        # the term that went non-finite first (the others usually follow it through the synthetic set)
        firsts = self._first_nonfinite.tolist() if self._first_nonfinite is not None else []
        bad_terms = [(first, i) for i, first in enumerate(firsts) if first > 0]
        if bad_terms:
            first, i = min(bad_terms)
            name = self.objectives[i][0]
            value = metrics.get(f"loss/{name}")
            value = value if isinstance(value, float) and not math.isfinite(value) else "non-finite"
            culprit = f"objective[{i}] {name!r} is {value} from step {first}"
        else:
            bad = next(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
            culprit = (f"the weighted total loss is {metrics['loss']}" if bad == "loss" else
                       f"{bad!r} is {metrics[bad]}") + f" at step {step}"
        raise RunDiverged(f"run diverged: {culprit} (seen at the log point of step {step}); {self._last_good()}")

    def _last_good(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written" if self.out_dir is not None else "nothing was saved (no output directory)"
        path, step = self.last_checkpoint
        return f"last good checkpoint: {path} (step {step})"

    def _restore(self) -> None:
        """``--resume``: load and validate the checkpoint; without one the run starts from step 0."""
        if self.out_dir is None:
            raise UserError("--resume needs an output directory")
        path = self.out_dir / CHECKPOINT
        if not path.exists():
            self.log(f"--resume: no checkpoint in {self.out_dir}: starting from step 0")
            return
        state = load_checkpoint(path, self.device)
        self._validate_checkpoint(state, path)
        with torch.no_grad():
            labels = self.parameterization.materialize().labels
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"{path}: does not match the recipe ({str(exc).splitlines()[0]})") from exc
        with torch.no_grad():
            loaded = self.parameterization.materialize().labels
        if labels is not None and (loaded is None or loaded.shape != labels.shape or not torch.equal(loaded, labels)):
            raise UserError(f"{path}: the checkpoint's synthetic set has other labels than the recipe builds")
        self.last_checkpoint = (path, self.start_step)

    def _validate_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        """Shapes, labels and finiteness of the checkpoint's synthetic set against the built one."""
        mine = self.parameterization.state_dict()
        theirs = state["parameterization"]
        if not isinstance(theirs, dict) or set(theirs) != set(mine):
            names = sorted(theirs) if isinstance(theirs, dict) else type(theirs).__name__
            raise UserError(f"{path}: parameterization holds {names}, the recipe builds {sorted(mine)}")
        for name, want in mine.items():
            got = theirs[name]
            if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
                desc = f"{got.dtype} {list(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
                raise UserError(f"{path}: parameterization.{name} is {desc}, the recipe builds "
                                f"{want.dtype} {list(want.shape)}")
            # integer/bool state (flags, counters) legitimately differs from a fresh build; labels are compared
            # on the materialised set after loading (_restore)
            if got.is_floating_point() and not bool(torch.isfinite(got).all()):
                raise UserError(f"{path}: parameterization.{name} holds non-finite values")
            if "label" in name and not torch.equal(got.to(want.device), want):
                raise UserError(f"{path}: parameterization.{name} differs from the recipe's labels")
        for key, have in (("objectives", self.objectives), ("augmentations", self.build_ctx.augmentations)):
            if not isinstance(state[key], list) or len(state[key]) != len(have):
                raise UserError(f"{path}: holds state for {len(state[key]) if isinstance(state[key], list) else '?'} "
                                f"{key}, the recipe has {len(have)}")

    def wall_s(self) -> float:
        """Wall-clock seconds this run has taken so far (across resumes)."""
        return self._wall_before + time.perf_counter() - self._t_start

    # -- evaluation -----------------------------------------------------------------------------------
    def budget_images(self) -> int:
        return max(1, round(self.parameterization.storage_floats() / self.build_ctx.info.floats_per_image))

    def evaluate(self, step: int) -> dict[str, Any]:
        """Evaluate the current synthetic set and (once) the same-budget baselines."""
        self.build()
        if self.evaluator is None:
            raise UserError("eval: the recipe has no [eval] section")
        seed = derive_seed(self.recipe.seed, "eval")
        t_eval = time.perf_counter()
        self.dist.merge(self)  # class-sharded: every rank gets the merged synthetic set
        with torch.no_grad():
            syn = self.build_ctx.expand(self.parameterization.materialize()).detach()
        result = {"step": step, "synset": self.dist.evaluate(self.evaluator, syn, seed=seed), "baselines": {}}
        budget = self.budget_images()
        for kind in self.recipe.baselines:
            if kind not in self._baseline_results:
                base = self.parameterization.baseline(kind, budget, self.build_ctx.generator("baseline", kind))
                self._baseline_results[kind] = self.dist.evaluate(self.evaluator, base.detach(), seed=seed)
            result["baselines"][kind] = self._baseline_results[kind]
        result["budget_images"] = budget
        paper = self.recipe.paper_value()
        if paper is not None:
            p = self.recipe.paper
            result["paper"] = {"mean": paper.mean, "std": paper.std, "source": p.source, "table": p.table,
                               "ipc": self.recipe.ipc}
        result["eval_s"] = time.perf_counter() - t_eval
        result["wall_s"] = self.wall_s()
        self.evaluations.append(result)
        self._write_eval()
        self.host.hook.ddcore_evaluated(run=self, step=step, results=result)
        self.log(_eval_line(result))
        return result

    # -- artefacts --------------------------------------------------------------------------------------
    def _claim_out_dir(self) -> None:
        """Hold the output directory for this run and find every output-path problem before any compute.

        A new run needs a new or empty folder; ``--resume`` needs a folder holding a run (``recipe.toml``). The
        folder is held through ``run.lock`` (exclusive create) until :meth:`execute` ends.
        """
        out = self.out_dir
        if out is None or not self.dist.is_main:
            return  # only rank 0 writes (and checks) the output directory
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: is a file, expected a directory")
        if self.resume:
            if not (out / "recipe.toml").is_file():
                raise UserError(f"--resume: {out} holds no ddcore run (no recipe.toml)")
        elif out.exists():
            entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
            if entries:
                if (out / "recipe.toml").is_file() and (out / "checkpoint").exists():
                    raise UserError(f"--out {out} already holds a run; pass --resume to continue it or choose "
                                    f"another --out")
                raise UserError(f"--out {out}: the folder is not empty and holds no ddcore run ({len(entries)} "
                                f"entries, e.g. {entries[0]!r}); choose a new or empty folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from exc
        self._lock = RunLock(out).acquire()
        try:
            if not self.resume and sorted(p.name for p in out.iterdir()) != [LOCK_NAME]:  # pragma: no cover - race
                raise UserError(f"--out {out}: another process wrote into the folder meanwhile; choose another --out")
            if self.resume:
                try:
                    saved = _recipe_identity((out / "recipe.toml").read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not TOML: not a run's recipe
                    raise UserError(f"--resume: {out / 'recipe.toml'} is not a ddcore run's recipe "
                                    f"({str(exc).splitlines()[0]})") from exc
                if saved != _recipe_identity(_dump_recipe(self.recipe.raw)):
                    raise UserError(
                        f"--resume: the recipe differs from the one in {out / 'recipe.toml'} (only run.* may change)")
            for name in ARTEFACTS:
                if (out / name).is_dir():
                    raise UserError(f"--out {out}: {out / name} is a directory, expected a file (or nothing)")
            ckpt_dir = (out / CHECKPOINT).parent
            if ckpt_dir.exists() and not ckpt_dir.is_dir():
                raise UserError(f"--out {out}: {ckpt_dir} is a file, expected the checkpoint directory")
            try:
                ckpt_dir.mkdir(exist_ok=True)
            except OSError as exc:
                raise UserError(f"--out {out}: cannot create {ckpt_dir} ({exc.strerror or exc})") from exc
            for folder in (out, ckpt_dir):
                for tmp in clean_stale_temporaries(folder):
                    self.log(f"removed {tmp} (left by an interrupted write)")
            if not self.resume:
                atomic_write_text(out / "recipe.toml", _dump_recipe(self.recipe.raw))
        except BaseException:
            self._lock.release()
            raise

    def _write_manifest(self) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        info = self.build_ctx.info
        floats = self.parameterization.storage_floats()
        manifest = {
            "recipe": self.recipe.file,
            "name": self.recipe.name,
            "command": _command_line(),
            "seed": self.recipe.seed,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else _cpu_name(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "plugins": [
                {"plugin": p.name, "distribution": p.distribution, "version": p.version,
                 "components": [f"{k}:{n}" for k, n in p.components]}
                for p in self.host.plugins()
            ],
            "dataset": {"name": info.name, "num_classes": info.num_classes, "shape": list(info.image_shape),
                        "mean": list(info.mean), "std": list(info.std)},
            "storage_floats": floats,
            "storage_images": floats / info.floats_per_image,
            "git_revision": _git_revision(),
            "resumed_from_step": self.start_step if self.resume else None,
            # what the "auto" speed switches resolved to on this device (same values, different kernels)
            "hot_path": {k: v for k, v in attrs.asdict(self.hot_path).items() if k != "scope"},
        }
        atomic_write_text(self.out_dir / "manifest.json", dumps_strict(manifest, indent=2))

    def _append_metrics(self, metrics: dict[str, Any]) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        path = self.out_dir / "metrics.jsonl"
        try:
            with open(path, "a") as f:
                f.write(dumps_strict(metrics) + "\n")
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def _trim_metrics(self, step: int) -> None:
        """On resume, drop metric lines past the checkpoint's step (they are logged again) and any torn line."""
        path = None if self.out_dir is None or not self.dist.is_main else self.out_dir / "metrics.jsonl"
        if path is None or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line)
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))

    def _write_eval(self) -> None:
        if self.out_dir is not None and self.dist.is_main:
            atomic_write_text(self.out_dir / "eval.json", dumps_strict(self.evaluations, indent=2))

    def _check_finite_synset(self, step: int) -> None:
        """A non-finite synthetic set is never saved (over a good checkpoint or synset) nor reported."""
        with torch.no_grad():
            floats = [t for t in self.parameterization.state_dict().values()
                      if isinstance(t, torch.Tensor) and t.is_floating_point()]
            finite = bool(torch.stack([torch.isfinite(t).all() for t in floats]).all()) if floats else True
        if not finite:
            raise RunDiverged(f"run diverged: at step {step} the synthetic set holds non-finite values (not saved); "
                              f"{self._last_good()}")

    def _checkpoint(self, step: int) -> None:
        self.dist.merge(self)  # class-sharded: the checkpoint holds the merged (single-process) state
        if self.out_dir is not None and self.dist.is_main:
            self._check_finite_synset(step)
            save_checkpoint(self.out_dir / CHECKPOINT, self.state_dict(step))
            self.last_checkpoint = (self.out_dir / CHECKPOINT, step)

    def save_artifacts(self) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        self._check_finite_synset(self.recipe.run.iterations)
        with torch.no_grad():
            syn = self.parameterization.materialize().detach()
        save_synset(self.out_dir / "synset.safetensors", self.parameterization.state_dict(), syn)
        save_grid(self.out_dir / "synset.png", syn, self.build_ctx.info)

    def _progress(self, total: int):
        from ddcore._progress import ProgressBar

        return ProgressBar(total, self.start_step, enabled=self.show_progress, label=self.recipe.name or "distill")


class _StopSignals:
    """Ctrl-C and SIGTERM during a run: inside the step loop the first one asks the loop to stop after the
    current step (which then writes a checkpoint); elsewhere, or a second time, they raise KeyboardInterrupt.

    Only the main thread can own signal handlers; elsewhere (and under torchrun, where the ranks must stop
    together) the defaults stay.
    """

    NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.in_loop = False
        self.requested = 0  # signal number of a pending stop request
        self.signum = signal.SIGINT
        self._saved: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return self.NAMES.get(self.signum, f"signal {self.signum}")

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        if self.in_loop and not self.requested:
            self.requested = signum
            return
        raise KeyboardInterrupt

    def __enter__(self) -> "_StopSignals":
        if self.enabled:
            for sig in self.NAMES:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()


def _preflight_synset_memory(config: Any, info: Any, device: torch.device, *, file: Optional[str]) -> None:
    """Refuse a synthetic set that cannot fit before allocating it (``synset.ipc = 100000``), with the numbers."""
    ipc = getattr(config, "ipc", None)
    if not isinstance(ipc, int) or ipc <= 0:
        return
    images = ipc * info.num_classes
    # the parameters, their gradient, the optimizer's momentum and one materialised/augmented working copy
    need = images * info.floats_per_image * 4 * 4
    have = _available_memory(device)
    if have is not None and need > have:
        raise RecipeError(
            f"{ipc} images per class x {info.num_classes} classes of {'x'.join(map(str, info.image_shape))} float32 "
            f"need about {need / 2**30:.1f} GiB on {device} (images, gradients, optimizer state and a working copy), "
            f"but {device} has {have / 2**30:.1f} GiB available; lower synset.ipc",
            file=file, key="synset.ipc")


def _available_memory(device: torch.device) -> Optional[int]:
    """Free bytes on ``device`` (CUDA: free memory; CPU: MemAvailable), or None when unknown."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _term_label(run: Run, index: int) -> str:
    """``objective[2] 'dm' (plugin 'dm', distribution ddcore-dm 0.1.0)``: who to blame for a term's output."""
    name = run.objectives[index][0]
    entry = run.host.registry.get("objective", name)
    version = run.host.distributions().get(entry.distribution, "")
    return (f"objective[{index}] '{name}' (plugin '{entry.plugin}', distribution "
            f"{entry.distribution}{' ' + version if version else ''})")


def _apply_hot_path(ctx: StepContext, hot_path: HotPath) -> None:
    """``[run] channels_last`` / ``compile``: the step's networks and image batches as the switches say."""
    for net in ctx.nets:
        hot_path.prepare_net(net)
    if hot_path.channels_last:
        for name in ("real", "real_raw", "syn", "syn_raw"):
            batch = getattr(ctx, name)
            if batch is not None:
                batch.images = hot_path.prepare_images(batch.images)


class _Tf32:
    """``[run] precision = "tf32"``: allow TF32 matmul/convolution (CUDA) inside the step, then restore."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._saved = None

    def __enter__(self):
        if self.enabled:
            self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved
            self._saved = None


def _eval_line(result: dict[str, Any]) -> str:
    s = result["synset"]
    parts = [f"eval @ step {result['step']}: synset {s['mean']:.2f} ± {s['std']:.2f} ({s.get('num_models', '?')} models)"]
    for kind, r in result["baselines"].items():
        parts.append(f"{kind} baseline {r['mean']:.2f} ± {r['std']:.2f}")
    return "; ".join(parts) + f" [budget {result.get('budget_images')} images]"


def _dump_recipe(raw: dict) -> str:
    import tomli_w

    from ddcore.config import ComponentRef

    def clean(v):
        if isinstance(v, ComponentRef):
            return v.to_toml()
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return tomli_w.dumps(clean(raw))


def _recipe_identity(text: str) -> str:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    data = tomllib.loads(text)
    data.pop("run", None)
    return json.dumps(data, sort_keys=True)


def _cpu_name() -> str:
    """The CPU model and the intra-op threads torch uses, e.g. ``AMD EPYC 7B13, 2 threads``."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{name}, {threads} thread{'' if threads == 1 else 's'}"


def _command_line() -> Optional[str]:
    """The command that started this process, as typed (``ddcore run …``), for the run's record."""
    import shlex
    import sys

    if not sys.argv or not sys.argv[0]:
        return None
    argv = ["ddcore" if Path(sys.argv[0]).name in ("ddcore", "__main__.py") else sys.argv[0], *sys.argv[1:]]
    return shlex.join(argv)


def _git_revision() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load_synset_into(run: Run, path: Path) -> None:
    """Load a saved ``synset.safetensors`` into a built run's parameterization."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise UserError(f"{path}: cannot read the synthetic set ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    params = {k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")}
    mine = run.parameterization.state_dict()
    missing = sorted(set(mine) - set(params))
    extra = sorted(set(params) - set(mine))
    if missing or extra:
        raise UserError(f"{path}: holds parameters {sorted(params)}, the recipe builds {sorted(mine)}")
    for name, want in mine.items():
        got = params[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise UserError(f"{path}: param/{name} is {got.dtype} {list(got.shape)}, the recipe builds "
                            f"{want.dtype} {list(want.shape)}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise UserError(f"{path}: param/{name} holds non-finite values (a diverged run); refusing to evaluate it")
    run.parameterization.load_state_dict({k: v.to(run.device) for k, v in params.items()})
