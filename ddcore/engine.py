"""The distillation engine: builds a recipe's components and runs the one loop every method shares.

See ``docs/architecture.md`` for the loop. The engine knows no method: everything method-specific lives in
components resolved through the registry.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import attrs
import torch

from ddcore.artifacts import atomic_write_bytes, atomic_write_text, load_checkpoint, save_checkpoint, save_grid, save_synset
from ddcore.context import BuildContext, StepContext, derive_seed
from ddcore.distributed import init_from_env
from ddcore.errors import RecipeError, UserError
from ddcore.hotpath import HotPath
from ddcore.plugins import PluginHost, get_host
from ddcore.recipe import Recipe, load_recipe, validate
from ddcore.types import RealBatch, SynBatch

CHECKPOINT = "checkpoint/state.pt"


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
    return Path(os.environ.get("DDCORE_CACHE") or Path.home() / ".cache" / "ddcore")


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
        # wall-clock seconds of this run before this process (restored on resume) and this process's start
        self._wall_before = 0.0
        self._t_start = time.perf_counter()

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] = (), **kwargs) -> "Run":
        return cls(load_recipe(path, list(overrides)), **kwargs)

    # -- build ----------------------------------------------------------------------------------------
    def build(self) -> "Run":
        """Load data onto the device and build every component (idempotent)."""
        if self.built:
            return self
        from ddcore.data.store import ClassIndexedData

        reg, recipe, cfg = self.host.registry, self.recipe, self.configs
        # Data sources are built before the BuildContext exists; they see the recipe (to resolve relative paths).
        source = reg.get("data", recipe.data.name).factory(cfg["data"], SimpleNamespace(recipe=recipe, file=recipe.file))
        info = source.info()
        images, labels = source.load("train")
        train = ClassIndexedData(images, labels, info, self.device)

        def load_test():
            x, y = source.load("test")
            return ClassIndexedData(x, y, info, self.device)

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
        """``[run] compile`` against objectives that need double backward: 'auto' stays eager, 'on' is an error."""
        needs = [name for name, _, obj in self.objectives if getattr(obj, "double_backward", False)]
        if not (self.hot_path.compile and needs):
            return
        if self.recipe.run.compile == "on":
            raise RecipeError(
                f"'on' cannot run objective {needs[0]!r}: it differentiates through the network's gradients "
                "(double backward), which torch.compile does not support; expected 'off' or 'auto'",
                file=self.recipe.file, key="run.compile")
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
            "evaluations": json.dumps(self.evaluations),
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
            info=self.sampler.info(), aug_params=aug_params, real_chunk=self.hot_path.real_chunk,
        )
        ctx._materialize = self.parameterization.materialize
        run_cfg = self.recipe.run
        _apply_hot_path(ctx, self.hot_path)
        total = None
        tf32 = run_cfg.precision == "tf32"
        with _Tf32(tf32), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=run_cfg.precision == "bf16"):
            for name, weight, objective in self.objectives:
                term = objective(ctx).float()
                ctx.log(f"loss/{name}", term)
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

    def execute(self) -> Optional[dict[str, Any]]:
        """Run (or resume) the loop, evaluate, write artefacts; returns the final evaluation."""
        self._prepare_out_dir()
        self.build()
        if self.resume:
            ckpt = self.out_dir / CHECKPOINT
            if not ckpt.exists():
                raise UserError(f"--resume: no checkpoint at {ckpt}")
            self.load_state_dict(load_checkpoint(ckpt, self.device))
        self._t_start = time.perf_counter()
        self._write_manifest()
        hook = self.host.hook
        hook.ddcore_run_started(run=self, build=self.build_ctx, start_step=self.start_step)
        cfg = self.recipe.run
        if self.dist.active:
            self.log(f"distributed: {self.dist.describe()}")
        total_steps = cfg.iterations
        t0 = time.perf_counter()
        last_log = (self.start_step, t0)
        progress = self._progress(total_steps)
        try:
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
                    hook.ddcore_metrics(run=self, step=done, metrics=metrics)
                    progress.update(done, metrics["loss"])
                else:
                    progress.update(done, None)
                if cfg.eval_every and done % cfg.eval_every == 0 and done != total_steps:
                    self.evaluate(done)
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != total_steps:
                    self._checkpoint(done)
        finally:
            progress.close()
        results = None
        if self.evaluator is not None and cfg.eval_at_end and (
            not self.evaluations or self.evaluations[-1]["step"] != total_steps
        ):
            results = self.evaluate(total_steps)
        elif self.evaluations:
            results = self.evaluations[-1]
        self._checkpoint(total_steps)
        self.save_artifacts()
        hook.ddcore_run_finished(run=self, results=results)
        return results

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
        for kind in getattr(self.evaluator.config, "baselines", ()):
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
    def _prepare_out_dir(self) -> None:
        if self.out_dir is None:
            return
        if not self.dist.is_main and not self.resume:
            return  # only rank 0 writes (and checks) the output directory
        if self.resume:
            if not (self.out_dir / "manifest.json").exists():
                raise UserError(f"--resume: {self.out_dir} holds no run (no manifest.json)")
            saved = (self.out_dir / "recipe.toml").read_text()
            if _recipe_identity(saved) != _recipe_identity(_dump_recipe(self.recipe.raw)):
                raise UserError(
                    f"--resume: the recipe differs from the one in {self.out_dir / 'recipe.toml'} (only run.* may change)"
                )
            return
        if (self.out_dir / "manifest.json").exists():
            raise UserError(f"--out {self.out_dir} already holds a run; pass --resume to continue it or choose another --out")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "recipe.toml", _dump_recipe(self.recipe.raw))

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
        atomic_write_text(self.out_dir / "manifest.json", json.dumps(manifest, indent=2))

    def _append_metrics(self, metrics: dict[str, Any]) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")

    def _write_eval(self) -> None:
        if self.out_dir is not None and self.dist.is_main:
            atomic_write_text(self.out_dir / "eval.json", json.dumps(self.evaluations, indent=2))

    def _checkpoint(self, step: int) -> None:
        self.dist.merge(self)  # class-sharded: the checkpoint holds the merged (single-process) state
        if self.out_dir is not None and self.dist.is_main:
            save_checkpoint(self.out_dir / CHECKPOINT, self.state_dict(step))

    def save_artifacts(self) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        with torch.no_grad():
            syn = self.parameterization.materialize().detach()
        save_synset(self.out_dir / "synset.safetensors", self.parameterization.state_dict(), syn)
        save_grid(self.out_dir / "synset.png", syn, self.build_ctx.info)

    def _progress(self, total: int):
        from ddcore.progress import ProgressBar

        return ProgressBar(total, self.start_step, enabled=self.show_progress, label=self.recipe.name or "distill")


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
    return f"{name}, {torch.get_num_threads()} threads"


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

    tensors = load_file(str(path), device=str(run.device))
    params = {k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")}
    run.parameterization.load_state_dict(params)
