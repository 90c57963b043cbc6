"""The ``ddcore-track`` plugin: a run's loss, metrics, evaluations, synthetic images and recipe in TensorBoard
and/or MLflow.

It registers one recipe table, ``[track]`` (``ddcore_register_recipe_tables``), so ``ddcore recipe check``
validates it with the rest of the recipe, and implements the hooks the engine calls around a run:

* ``ddcore_run_started``: open the backends the table enables, log the recipe (text, and MLflow params);
* ``ddcore_metrics``: every logging interval's scalars (``distill/loss``, ``distill/loss/<term>``, lr, speed);
* ``ddcore_evaluated``: the evaluation results (``eval/<set>/mean`` and ``std``, per model) and a grid of the
  synthetic images (``synset``) at that step;
* ``ddcore_run_finished``: flush and close.

Tracking is opt-in per recipe: without a ``[track]`` table these hooks do nothing. Only rank 0 of a distributed
run writes, and a run without an output directory writes nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import attrs
import torch

import ddcore
from ddcore.config import OptionValueError, option, positive

#: Backends of the runs in progress, by ``id(run)`` (a process may run several recipes one after another).
_writers: dict[int, list] = {}

MLFLOW_INSTALL = "pip install 'ddcore-track[mlflow]'"


def _mlflow_installed(instance, attribute, value):
    if value and importlib.util.find_spec("mlflow") is None:
        raise OptionValueError(attribute.name, f"MLflow is not installed; {MLFLOW_INSTALL} (or set it to false)")


@attrs.define(frozen=True, kw_only=True)
class TrackConfig:
    """The recipe's ``[track]`` table (unknown keys are errors)."""

    tensorboard: bool = option(True, "Write TensorBoard event files.")
    dir: str = option("tensorboard", "Event-file folder, relative to the run directory.")
    mlflow: bool = option(False, "Also log to MLflow (needs `pip install 'ddcore-track[mlflow]'`).",
                          validator=_mlflow_installed)
    mlflow_uri: str = option("", "MLflow tracking URI; empty: an offline file store `mlruns/` in the run directory.")
    mlflow_experiment: str = option("", "MLflow experiment name; empty: the recipe's `name`.")
    images: bool = option(True, "Log a grid of the synthetic images at every evaluation.")
    images_per_class: int = option(10, "Images per class (one row each) in the grid.", validator=positive)


@ddcore.hookimpl
def ddcore_register_recipe_tables(registry):
    registry.add("track", TrackConfig, config=TrackConfig,
                 doc="Experiment tracking (ddcore-track): TensorBoard event files and/or an MLflow run, fed from "
                     "the lifecycle hooks. Opt-in: a recipe without `[track]` logs nothing.")


class TensorBoardBackend:
    """TensorBoard event files in ``folder`` (rank 0)."""

    def __init__(self, folder: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # on resume, drop events a previous attempt wrote past the checkpoint
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=start_step if start_step else None)

    def recipe(self, text: str, flat: dict[str, str], step: int) -> None:
        # TensorBoard renders text as markdown: indent to show the TOML verbatim
        self.writer.add_text("recipe", "\n".join("    " + line for line in text.splitlines()), global_step=step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)

    def image(self, name: str, grid: torch.Tensor, step: int) -> None:
        self.writer.add_image(name, grid, global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class MLflowBackend:
    """One MLflow run per ddcore run; ``--resume`` continues the same MLflow run (its id is kept in the run
    directory, ``mlflow_run.json``)."""

    def __init__(self, config: TrackConfig, run, start_step: int):
        from mlflow.tracking import MlflowClient

        out = Path(run.out_dir)
        uri = config.mlflow_uri or (out / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked: that store is what works offline, without a server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        self.state_file = out / "mlflow_run.json"
        previous = json.loads(self.state_file.read_text()) if start_step and self.state_file.exists() else None
        if previous is not None and previous.get("uri") == uri:
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.fresh = False
        else:
            name = config.mlflow_experiment or run.recipe.name or "ddcore"
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            self.run_id = self.client.create_run(experiment_id, run_name=out.name).info.run_id
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"uri": uri, "run_id": self.run_id}))
            tmp.replace(self.state_file)
            self.fresh = True

    def recipe(self, text: str, flat: dict[str, str], step: int) -> None:
        from mlflow.entities import Param

        self.client.log_text(self.run_id, text, "recipe.toml")
        if self.fresh:  # params are immutable in MLflow: a resumed run keeps its first values
            params = [Param(key, value[:6000]) for key, value in flat.items()]
            for i in range(0, len(params), 100):  # MLflow's batch limit
                self.client.log_batch(self.run_id, params=params[i:i + 100])

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # "distill.loss", not "distill/loss": the file store makes each "/" a folder, and "distill/loss" cannot be
        # both a metric file and the folder of "distill/loss/<term>"
        metrics = [Metric(name.replace("/", "."), float(value), now, step) for name, value in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def image(self, name: str, grid: torch.Tensor, step: int) -> None:
        pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        self.client.log_image(self.run_id, pixels, f"{name}/step_{step:07d}.png")

    def flush(self) -> None:
        pass  # every MLflow call is written through

    def close(self) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED")


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"key.path": "value"}`` of a recipe mapping (arrays as their TOML-like text)."""
    out = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = json.dumps(value) if isinstance(value, (list, str)) else str(value)
    return out


def _writer(run) -> list:
    return _writers.get(id(run), [])


def image_grid(images: torch.Tensor, labels: Optional[torch.Tensor], info, per_class: int) -> torch.Tensor:
    """``[3, H, W]`` grid in ``[0, 1]``: one row of at most ``per_class`` images per class (hard labels)."""
    from torchvision.utils import make_grid

    images = images.detach().float().cpu()
    nrow = min(len(images), per_class)
    if labels is not None and labels.ndim == 1 and labels.dtype == torch.int64:
        labels = labels.cpu()
        picks = [torch.nonzero(labels == c).flatten()[:per_class] for c in range(info.num_classes)]
        nrow = max([len(p) for p in picks] + [1])
        images = torch.cat([images[p] for p in picks]) if picks else images
    else:
        images = images[:per_class * info.num_classes]
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    images = (images * std + mean).clamp(0, 1)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


@ddcore.hookimpl
def ddcore_run_started(run, build, start_step):
    config = run.recipe_table("track")  # structured and validated by the core, like every recipe table
    if config is None or run.out_dir is None or not run.dist.is_main:
        return
    backends = []
    if config.tensorboard:
        backends.append(TensorBoardBackend(Path(run.out_dir) / config.dir, start_step))
    if config.mlflow:
        backends.append(MLflowBackend(config, run, start_step))
    _writers[id(run)] = backends
    recipe_file = Path(run.out_dir) / "recipe.toml"
    text = recipe_file.read_text() if recipe_file.exists() else ""
    for backend in backends:
        backend.recipe(text, flatten(run.recipe.raw), start_step)


@ddcore.hookimpl
def ddcore_metrics(run, step, metrics):
    values = {f"distill/{name}": value for name, value in metrics.items()
              if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
    for backend in _writer(run):
        backend.scalars(values, step)


def _result_scalars(prefix: str, result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key in ("mean", "std"):
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}/{key}"] = value
    for name, per in (result.get("per_model") or {}).items():
        if isinstance(per, dict) and isinstance(per.get("mean"), (int, float)):
            out[f"{prefix}/per_model/{name}"] = per["mean"]
    return out


@ddcore.hookimpl
def ddcore_evaluated(run, step, results):
    backends = _writer(run)
    if not backends:
        return
    values = _result_scalars("eval/synset", results.get("synset") or {})
    for kind, result in (results.get("baselines") or {}).items():
        values.update(_result_scalars(f"eval/baseline_{kind}", result or {}))
    grid = None
    config = run.recipe_table("track")
    if config.images:
        with torch.no_grad():
            syn = run.parameterization.materialize()
        if syn.images.ndim == 4:
            grid = image_grid(syn.images, syn.labels, run.build_ctx.info, config.images_per_class)
    for backend in backends:
        backend.scalars(values, step)
        if grid is not None:
            backend.image("synset", grid, step)
        backend.flush()


@ddcore.hookimpl
def ddcore_run_finished(run, results):
    for backend in _writers.pop(id(run), []):
        backend.close()
