"""The ``ddcore-track`` plugin: a run's loss, metrics, evaluations, synthetic images and recipe in TensorBoard.

A lifecycle-hook plugin registers no component; it implements the hooks the engine calls around a run:

* ``ddcore_run_started``: read and validate the recipe's ``[track]`` table, open the writer, log the recipe;
* ``ddcore_metrics``: every logging interval's scalars (``distill/loss``, ``distill/loss/<term>``, lr, speed);
* ``ddcore_evaluated``: the evaluation results (``eval/<set>/mean`` and ``std``, per model) and a grid of the
  synthetic images (``synset``) at that step;
* ``ddcore_run_finished``: flush and close.

Tracking is opt-in per recipe: without a ``[track]`` table these hooks do nothing. Only rank 0 of a distributed
run writes, and a run without an output directory writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import attrs
import torch

import ddcore
from ddcore.config import option, positive

#: Writers of the runs in progress, by ``id(run)`` (a process may run several recipes one after another).
_writers: dict[int, Any] = {}


@attrs.define(frozen=True, kw_only=True)
class TrackConfig:
    """The recipe's ``[track]`` table (unknown keys are errors)."""

    tensorboard: bool = option(True, "Write TensorBoard event files.")
    dir: str = option("tensorboard", "Event-file folder, relative to the run directory.")
    images: bool = option(True, "Log a grid of the synthetic images at every evaluation.")
    images_per_class: int = option(10, "Images per class (one row each) in the grid.", validator=positive)


def track_config(run) -> Optional[TrackConfig]:
    """The run's ``[track]`` options, or ``None`` when the recipe has no ``[track]`` table."""
    from ddcore.config import structure

    raw = run.recipe.raw.get("track")
    if raw is None:
        return None
    return structure(TrackConfig, raw, key="track", file=run.recipe.file)


def _writer(run):
    return _writers.get(id(run))


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
    config = track_config(run)  # validated on every rank: a bad key fails the same way everywhere
    if config is None or not config.tensorboard or run.out_dir is None or not run.dist.is_main:
        return
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(run.out_dir) / config.dir
    # on resume, drop events a previous attempt wrote past the checkpoint
    writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_step if start_step else None)
    writer.ddcore_config = config
    _writers[id(run)] = writer
    recipe = (Path(run.out_dir) / "recipe.toml").read_text() if (Path(run.out_dir) / "recipe.toml").exists() else ""
    # TensorBoard renders text as markdown: indent to show the TOML verbatim
    writer.add_text("recipe", "\n".join("    " + line for line in recipe.splitlines()), global_step=start_step)


@ddcore.hookimpl
def ddcore_metrics(run, step, metrics):
    writer = _writer(run)
    if writer is None:
        return
    for name, value in metrics.items():
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"distill/{name}", value, global_step=step)


def _log_result(writer, prefix: str, result: dict[str, Any], step: int) -> None:
    for key in ("mean", "std"):
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"{prefix}/{key}", value, global_step=step)
    for name, per in (result.get("per_model") or {}).items():
        if isinstance(per, dict) and isinstance(per.get("mean"), (int, float)):
            writer.add_scalar(f"{prefix}/per_model/{name}", per["mean"], global_step=step)


@ddcore.hookimpl
def ddcore_evaluated(run, step, results):
    writer = _writer(run)
    if writer is None:
        return
    _log_result(writer, "eval/synset", results.get("synset") or {}, step)
    for kind, result in (results.get("baselines") or {}).items():
        _log_result(writer, f"eval/baseline_{kind}", result or {}, step)
    config = writer.ddcore_config
    if config.images:
        with torch.no_grad():
            syn = run.parameterization.materialize()
        if syn.images.ndim == 4:
            grid = image_grid(syn.images, syn.labels, run.build_ctx.info, config.images_per_class)
            writer.add_image("synset", grid, global_step=step)
    writer.flush()


@ddcore.hookimpl
def ddcore_run_finished(run, results):
    writer = _writers.pop(id(run), None)
    if writer is not None:
        writer.flush()
        writer.close()
