"""Built-in evaluator ``train_from_scratch``: the DC-family protocol (``evaluate_synset``).

For every architecture in ``models``, ``num_models`` fresh networks are trained on the synthetic set with
SGD for ``epochs + 1`` epochs (lr x0.1 after epoch ``epochs // 2 + 1``, momentum reset), with the run's
siamese augmentations in random mode on every batch (DSA at train time), then tested once on the test split.
How the ``num_models`` networks of one architecture are trained is ``parallel``: one vectorised ``torch.func``
ensemble (``vmap``; nets without running statistics, the others one after another), side by side on CPU
threads (``threads``; any net), or one after another (``off``). ``compile`` runs networks trained one after
another through ``torch.compile`` (in channels_last on a CPU). ``auto`` picks, per device, what measured fastest
(``bench/bench_eval.py``): compiled one after another on a CPU (threads where no C++ compiler is found), ``vmap``
on CUDA. Accuracies are reported in percent.

Seeding: network ``i`` of architecture ``arch`` for evaluation seed ``seed`` is initialised from
``build.make_backbone(arch, seed_key=(seed, i))``; its shuffling and augmentation draws come from
``build.generator("eval", arch, seed, i)``. Every path consumes these streams in the same order, so all
train the same networks (up to floating-point differences between kernels).

Architecture names are used as listed (``ConvNetBN`` stays a BN net: the recipe author lists what to
evaluate; the reference's mode 'S' would strip the suffix).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import attrs
import numpy as np
import torch

import ddcore
from ddcore.components import Evaluator
from ddcore.config import non_negative, option, positive
from ddcore.errors import RecipeError, UserError
from ddcore.evaluation._concurrent import run_concurrently, split_threads
from ddcore.evaluation.ensemble import can_vectorize, ensemble_accuracy, train_ensemble
from ddcore.evaluation.train import LOSSES, epoch_learning_rates, evaluate_accuracy, train_classifier
from ddcore.hotpath import HotPath, wants_compile
from ddcore.types import SynBatch

__all__ = ["TrainFromScratch", "TrainFromScratchConfig"]


@attrs.define(frozen=True, kw_only=True)
class TrainFromScratchConfig:
    """Options of the ``train_from_scratch`` evaluator (defaults: the DC/DSA/DM evaluation protocol)."""

    models: list[str] = option(
        attrs.NOTHING, "Architectures to evaluate (registered backbone names), used as listed.",
        factory=lambda: ["ConvNet"], kind="backbone",
    )
    num_models: int = option(5, "Fresh networks trained per architecture (num_eval).", validator=positive)
    epochs: int = option(1000, "Epoch of the reference: epochs + 1 epochs are trained (epoch_eval_train).",
                         validator=non_negative)
    lr: float = option(0.01, "SGD learning rate (lr_net); x0.1 after epoch epochs // 2 + 1.", validator=positive)
    momentum: float = option(0.9, "SGD momentum (reset when the lr decays).", validator=non_negative)
    weight_decay: float = option(5e-4, "SGD weight decay.", validator=non_negative)
    batch_size: int = option(256, "Training batch size (batch_train).", validator=positive)
    augment: bool = option(True, "Augment every training batch with the run's siamese augmentations in "
                                 "random mode (DSA at train time).")
    augment_strategy: str = option(
        "", "What augments the training batches when augment is true: '' = the run's siamese augmentations in "
            "random mode (DSA at train time); or a DC strategy, '_'-joined from crop, scale, rotate, noise (e.g. "
            "'crop_scale_rotate', DC's evaluation augmentation on MNIST; 'crop_noise' for BN ConvNets), applied "
            "with DC's magnitudes (crop 4 px, scale 0.2, rotate 45 degrees, noise 0.001); see ddcore.augment.dc.",
        validator=lambda i, a, v: _check_strategy(a, v))
    loss: str = option("auto", "Training loss: auto = ce for hard labels, soft_ce for [N, K] soft labels.",
                       choices=("auto",) + LOSSES)
    test_limit: int = option(0, "Test images used: 0 = the whole test split, else a deterministic "
                                "class-balanced subset (the first images of every class).",
                             validator=non_negative)
    test_batch_size: int = option(1024, "Test batch size (images per forward pass).", validator=positive)
    parallel: str = option(
        "auto", "How the networks of one architecture are trained: 'vmap' = one vectorised torch.func ensemble "
                "(nets without running statistics; others one after another), 'threads' = side by side on CPU "
                "threads sharing the intra-op threads (any net), 'off' = one after another; 'auto' = vmap on "
                "CUDA; on a CPU one after another when compile is on, else threads (bench/bench_eval.py).",
        choices=("auto", "vmap", "threads", "off"))
    compile: str = option(
        "auto", "Train and test the networks through torch.compile (channels_last on a CPU; same values up to "
                "kernel rounding; the first network pays the compilation): 'on' (needs parallel 'auto' or "
                "'off': the networks are trained one after another), 'off', or 'auto' = on for a CPU with a C++ "
                "compiler when parallel is 'auto' or 'off', off elsewhere.",
        choices=("auto", "on", "off"))
    max_parallel: int = option(0, "Most networks trained at once: per vectorised ensemble, or concurrent "
                                  "threads (0 = all num_models; threads: at most the intra-op thread count).",
                               validator=non_negative)


def _check_strategy(attribute, value: str) -> None:
    from ddcore.augment.dc import parse_strategy
    from ddcore.config import OptionValueError

    if value:
        try:
            parse_strategy(value)
        except ValueError as exc:
            raise OptionValueError(attribute.name, str(exc)) from None


class TrainFromScratch(Evaluator):
    """Train fresh networks on the synthetic set (DC protocol) and report their test accuracy in percent."""

    def __init__(self, config: TrainFromScratchConfig, build):
        super().__init__(config, build)
        if not config.models:
            raise RecipeError("needs at least one architecture", key="eval.models")
        for i, name in enumerate(config.models):
            build.registry.get("backbone", name, key=f"eval.models[{i}]")
        mode = config.parallel
        on_cpu = build.device.type == "cpu"
        if config.compile == "on" and mode in ("vmap", "threads"):
            raise RecipeError(f"'on' trains the networks one after another; expected parallel 'auto' or 'off', "
                              f"got {mode!r}", key="eval.compile")
        # 'auto' yields to an explicit parallel mode: compiled members are trained one after another
        compiled = config.compile == "on" or (mode in ("auto", "off") and wants_compile(config.compile, build.device))
        if mode == "auto":
            mode = "off" if compiled else ("threads" if on_cpu else "vmap")
        self._parallel = mode
        #: how each network is prepared before training (compiled / channels_last, or left as built)
        self.hot_path = HotPath(channels_last=compiled and on_cpu, compile=compiled,
                                strict=config.compile == "on", scope="eval")

    # -- helpers ------------------------------------------------------------------------------------
    def _loss_for(self, synset: SynBatch) -> tuple[torch.Tensor, str]:
        labels = synset.labels
        if labels is None:
            raise UserError("eval 'train_from_scratch': the synthetic set has no labels (self-supervised "
                            "sets need a different evaluator)")
        hard = labels.dtype == torch.int64 and labels.ndim == 1
        if self.config.loss == "auto":
            return labels, "ce" if hard else "soft_ce"
        return labels, self.config.loss

    def _augment(self, generator: torch.Generator):
        if not self.config.augment:
            return None
        if self.config.augment_strategy:
            from ddcore.augment.dc import DCAugment

            dc = DCAugment(self.config.augment_strategy)
            return lambda x: dc(x, generator)
        if not self.build.siamese_augmentations:
            return None
        build = self.build
        return lambda x: build.augment_random(x, generator)

    def _train_and_test(self, arch: str, images, labels, loss: str, seed: int,
                        indices: Optional[Sequence[int]] = None, progress=None) -> list[float]:
        """Accuracies (percent) of models ``indices`` (default: all ``num_models``) of ``arch``, in that order.

        ``progress`` (a :class:`ddcore._progress.TaskProgress` counting epochs) advances after every training
        epoch of every network: one network of a long protocol takes most of an hour on a CPU.
        """
        cfg = self.config
        indices = list(range(cfg.num_models)) if indices is None else list(indices)
        build = self.build
        train_kwargs = dict(
            epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            batch_size=cfg.batch_size, loss=loss,
        )
        test = build.test  # loaded here, not lazily inside worker threads

        def epoch_done(members: int):
            return None if progress is None else (lambda _epoch: progress.advance(members))

        def train_and_test(net, generator, augment) -> float:
            train_classifier(net, images, labels, generator=generator, augment=augment, on_epoch_end=epoch_done(1),
                             **train_kwargs)
            return evaluate_accuracy(net, test, cfg.test_batch_size, limit=cfg.test_limit)

        accs: list[torch.Tensor | float] = []
        group = cfg.max_parallel or cfg.num_models
        if self._parallel == "threads":
            group = len(indices)  # the thread pool bounds the parallelism (max_parallel caps its workers)
        for lo in range(0, len(indices), group):
            members = indices[lo:lo + group]
            nets = [self.hot_path.prepare_net(build.make_backbone(arch, seed_key=(seed, i))) for i in members]
            gens = [build.generator("eval", arch, seed, i) for i in members]
            augs = [self._augment(g) for g in gens]
            if self._parallel == "vmap" and can_vectorize(nets):
                ens = train_ensemble(
                    nets, images, labels, generators=gens,
                    augments=None if augs[0] is None else augs, write_back=False,
                    on_epoch_end=epoch_done(len(members)), **train_kwargs,
                )
                accs.extend(ensemble_accuracy(ens, test, cfg.test_batch_size, limit=cfg.test_limit).tolist())
                continue
            jobs = [functools.partial(train_and_test, net, g, aug) for net, g, aug in zip(nets, gens, augs)]
            workers, per_worker = 1, 1
            if self._parallel == "threads":
                workers, per_worker = split_threads(len(jobs), torch.get_num_threads(), cfg.max_parallel)
            accs.extend(run_concurrently(jobs, workers=workers, threads_per_worker=per_worker))
        return [100.0 * float(a) for a in accs]

    # -- sharded evaluation (ddcore.distributed deals units to ranks) ---------------------------------
    def units(self) -> list[tuple[str, int]]:
        """The independent pieces of one evaluation: ``(architecture, model index)``."""
        return [(arch, i) for arch in self.config.models for i in range(self.config.num_models)]

    def evaluate_units(self, synset: SynBatch, *, seed: int, units: Sequence[tuple[str, int]]) -> list[float]:
        """Accuracies (percent) of the given units only; model ``i`` is seeded as in :meth:`evaluate`."""
        synset = synset.detach().to(self.build.device)
        labels, loss = self._loss_for(synset)
        by_arch: dict[str, list[int]] = {}
        for arch, i in units:
            by_arch.setdefault(arch, []).append(int(i))
        values = {}
        # counted in epochs, so that a log line (or the bar) moves while a network trains
        epochs = len(epoch_learning_rates(self.config.epochs, self.config.lr))
        with self.build.progress_task(f"eval ({len(units)} networks)", len(units) * epochs, unit="epochs") as progress:
            for arch, idx in by_arch.items():
                trained = self._train_and_test(arch, synset.images, labels, loss, seed, indices=idx, progress=progress)
                for i, v in zip(idx, trained):
                    values[(arch, i)] = v
        return [values[(arch, int(i))] for arch, i in units]

    def summarize(self, synset: SynBatch, results: Sequence[tuple[tuple[str, int], float]]) -> dict[str, Any]:
        """The :meth:`evaluate` result from every unit's accuracy (units in :meth:`units` order)."""
        per_model: dict[str, dict[str, Any]] = {}
        every: list[float] = []
        for arch in self.config.models:
            values = [v for (a, _), v in results if a == arch]
            per_model[arch] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
            every.extend(values)
        return {"metric": "accuracy", "mean": float(np.mean(every)), "std": float(np.std(every)),
                "num_models": len(every), "per_model": per_model}


@ddcore.hookimpl
def ddcore_register_evaluators(registry):
    registry.add("train_from_scratch", TrainFromScratch, config=TrainFromScratchConfig,
                 smoke={"options": {"num_models": 1, "epochs": 1, "batch_size": 8, "test_batch_size": 64}})
