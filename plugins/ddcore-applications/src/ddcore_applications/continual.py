"""Evaluator ``continual``: a distilled set as the memory of class-incremental learning (GDumb protocol).

Protocol (DM §3.5; GDumb, Prabhu et al. 2020): the dataset's classes are split evenly into ``steps`` learning
steps (in a seeded random order by default: "randomly and evenly split"). After step ``s`` the memory is the
union of the per-class images of every class seen so far; a network is trained *from scratch on the memory
only* and tested on the test images of all seen classes, predicting among the seen classes (logits of unseen
classes masked). Performance therefore depends on the memory alone.

The set is distilled once: the evaluator slices it by class (hard labels; soft labels by their arg-max). The
engine evaluates the same-budget ``baselines`` (``random``: GDumb's own sampler; ``herding``) through this
evaluator too, so each memory kind gets the same steps, networks (seeded by step and model index, identical
across memories) and training protocol. The result's ``mean``/``std`` are the accuracy after the last step
(all classes); ``steps`` holds every step.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import attrs
import numpy as np
import torch

from ddcore.components import Evaluator
from ddcore.config import non_negative, option, positive
from ddcore.errors import RecipeError, UserError
from ddcore.evaluation.train import LOSSES, train_classifier
from ddcore.types import SynBatch
from ddcore_applications.common import class_subset_indices, masked_accuracy, mean_std, run_units

APPLICATION = "continual"


@attrs.define(frozen=True, kw_only=True)
class ContinualConfig:
    """Options of the ``continual`` evaluator (defaults: DM §3.5 with the DC training protocol)."""

    steps: int = option(5, "Learning steps; the classes are split over them as evenly as possible (DM: 5 and 10).",
                        validator=positive)
    class_order: str = option("shuffled", "Order classes arrive in: 'shuffled' (seeded by the run seed; DM: "
                                          "randomly split) or 'sequential' (0, 1, 2, ...).",
                              choices=("shuffled", "sequential"))
    model: str = option("ConvNet", "Architecture trained at every step (a registered backbone; DM: ConvNet).")
    num_models: int = option(3, "Networks trained per step and memory (mean ± std over them).", validator=positive)
    epochs: int = option(1000, "Training epochs per step: epochs + 1 (the DC protocol, lr x0.1 at half).",
                         validator=non_negative)
    lr: float = option(0.01, "SGD learning rate.")
    momentum: float = option(0.9, "SGD momentum.")
    weight_decay: float = option(5e-4, "SGD weight decay.")
    batch_size: int = option(256, "Training batch size.", validator=positive)
    augment: bool = option(True, "Augment every training batch with the run's siamese augmentations (random mode).")
    loss: str = option("auto", "auto = ce for hard labels, soft_ce for soft labels.", choices=("auto",) + LOSSES)
    test_per_class: int = option(0, "Test images per seen class (the first of each class); 0 = all.",
                                 validator=non_negative)
    parallel: str = option("auto", "'threads': a step's networks side by side on CPU threads; 'off': one after "
                                   "another; 'auto': threads on a CPU, off elsewhere.",
                           choices=("auto", "threads", "off"))
    max_parallel: int = option(0, "Most networks trained at once with threads (0 = as many as threads).",
                               validator=non_negative)
    plot: bool = option(True, "Write continual.png (accuracy per step, every memory) into the run directory.")
    baselines: list[str] = option(attrs.NOTHING, "Same-budget memories the engine also evaluates.",
                                  factory=lambda: ["random", "herding"])


def split_steps(order: Sequence[int], steps: int) -> list[list[int]]:
    """Classes of each step: ``order`` cut into ``steps`` consecutive, as-even-as-possible chunks."""
    return [[int(c) for c in chunk] for chunk in np.array_split(np.asarray(order, dtype=np.int64), steps)]


class ContinualLearning(Evaluator):
    """GDumb-style class-incremental learning with the evaluated set as the memory."""

    def __init__(self, config: ContinualConfig, build):
        super().__init__(config, build)
        build.registry.get("backbone", config.model, key="eval.model")
        k = build.num_classes
        if config.steps > k:
            raise RecipeError(f"{config.steps} steps need at least as many classes; {build.info.name} has {k}",
                              key="eval.steps")
        if config.class_order == "shuffled":
            order = torch.randperm(k, generator=build.generator("continual", "class_order")).tolist()
        else:
            order = list(range(k))
        self.class_order = order
        self.step_classes = split_steps(order, config.steps)
        self._parallel = config.parallel
        if self._parallel == "auto":
            self._parallel = "threads" if build.device.type == "cpu" else "off"

    def seen_classes(self, step: int) -> list[int]:
        """Classes seen after (0-based) ``step``."""
        return [c for chunk in self.step_classes[:step + 1] for c in chunk]

    # -- memory --------------------------------------------------------------------------------------
    def memory(self, synset: SynBatch, classes: Sequence[int]) -> SynBatch:
        """The rows of ``synset`` whose class is in ``classes`` (hard labels, or the arg-max of soft labels)."""
        labels = synset.labels
        if labels is None:
            raise UserError("eval 'continual': the set has no labels (a memory needs classes)")
        cls = labels if labels.ndim == 1 else labels.argmax(-1)
        keep = torch.isin(cls, torch.as_tensor(list(classes), device=cls.device))
        return synset.index(keep.nonzero().squeeze(1))

    def _loss(self, labels: torch.Tensor) -> str:
        if self.config.loss != "auto":
            return self.config.loss
        return "ce" if labels.dtype == torch.int64 and labels.ndim == 1 else "soft_ce"

    def _job(self, memory: SynBatch, classes: list[int], step: int, index: int, seed: int, progress):
        """Build network ``index`` of ``step`` (here, in the calling thread) and return the job training it."""
        cfg, build = self.config, self.build
        net = build.make_backbone(cfg.model, seed_key=(seed, APPLICATION, step, index))
        generator = build.generator("eval", APPLICATION, seed, step, index)
        augment = None
        if cfg.augment and build.siamese_augmentations:
            augment = functools.partial(build.augment_random, generator=generator)
        test = build.test

        def train_and_test() -> float:
            train_classifier(net, memory.images, memory.labels, epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                             weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, augment=augment,
                             generator=generator, loss=self._loss(memory.labels))
            acc = masked_accuracy(net, test, class_subset_indices(test, classes, cfg.test_per_class), classes)
            progress.advance()
            return 100.0 * acc

        return train_and_test

    # -- sharded evaluation ---------------------------------------------------------------------------
    def units(self) -> list[tuple[int, int]]:
        """``(step, model index)``: every network of every step is independent."""
        return [(s, i) for s in range(self.config.steps) for i in range(self.config.num_models)]

    def evaluate_units(self, synset: SynBatch, *, seed: int, units: Sequence[tuple[int, int]]) -> list[float]:
        synset = synset.detach().to(self.build.device)
        jobs = []
        for step, index in units:
            classes = self.seen_classes(int(step))
            memory = self.memory(synset, classes)
            if len(memory) == 0:
                raise UserError(f"eval 'continual': step {int(step) + 1}'s memory is empty (no images of classes "
                                f"{classes} in the set)")
            jobs.append((memory, classes, int(step), int(index)))
        with self.build.progress_task("continual", len(jobs)) as progress:
            return run_units(jobs, lambda job: self._job(*job, seed, progress), self.build.device, self._parallel,
                             self.config.max_parallel)

    def summarize(self, synset: SynBatch, results: Sequence[tuple[tuple[int, int], float]]) -> dict[str, Any]:
        steps = []
        for s in range(self.config.steps):
            classes = self.seen_classes(s)
            values = [v for (step, _), v in results if int(step) == s]
            steps.append({"step": s + 1, "classes": classes, "memory_images": len(self.memory(synset, classes)),
                          **mean_std(values)})
        last = steps[-1]
        return {
            "metric": "accuracy", "application": APPLICATION,
            "mean": last["mean"], "std": last["std"], "num_models": self.config.num_models,
            "per_model": {self.config.model: {k: last[k] for k in ("mean", "std", "values")}},
            "average_incremental": float(np.mean([s["mean"] for s in steps])),
            "class_order": list(self.class_order), "steps": steps,
        }

    def evaluate(self, synset: SynBatch, *, seed: int) -> dict[str, Any]:
        """Accuracy on all seen classes after every step; ``mean``/``std``: after the last step (percent)."""
        units = self.units()
        values = self.evaluate_units(synset, seed=seed, units=units)
        return self.summarize(synset.detach().to(self.build.device), list(zip(units, values)))
