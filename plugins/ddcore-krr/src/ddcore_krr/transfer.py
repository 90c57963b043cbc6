"""Evaluator ``ssl_transfer``: pre-train on (X_s, Y_s), then linear probe / fine-tune / KD on target datasets.

Protocol (paper §3.2 eq. 5, §4.1; official ``pretrain_krr_st.py``, ``linear_eval.py``, ``finetune.py``; facts §6):

1. **Pre-train** a fresh backbone (any registered name; ``"backbone"`` = the recipe's ``[backbone]`` table) whose
   classifier has d_y outputs, minimising ``mse(net(X_s), Y_s)``: ``pretrain_epochs`` (1000) epochs, batch 256,
   SGD lr 0.1 / momentum 0.9 / wd 1e-3, constant lr, no augmentation. The d_y head h_W is then discarded.
2. For every entry of ``targets`` (``[[eval.targets]]``; ``data`` omitted = the run's own dataset, else a data
   table like ``[data]`` — e.g. ``{name = "npz", path = "mnist", resize = 32, channels = 3}``). Images that do
   not match the source shape are replicated to 3 channels / resized to the source resolution (paper §4.1);
   each target is normalised with its own constants.

   - ``linear``: frozen features ``net.embed`` of non-augmented images; ``nn.Linear`` trained with SGD lr 0.2,
     momentum 0.9, wd 0, cosine, 5000 iterations of batch 512 (``linear_eval.py``).
   - ``finetune``: a new linear head on ``net.embed``; *all* layers trained with SGD lr 0.01, momentum 0.9,
     wd 5e-4, cosine, 10,000 iterations of batch 256 (5,000 for the fine-grained sets), RandomCrop(pad 4) +
     h-flip (``finetune.py``).
   - ``kd`` (target-data-free KD, paper eq. 6): a target classifier T_ψ (``kd_teacher`` backbone) is trained
     on the target training split with the fine-tune protocol; the pre-trained student with a new head is then
     trained on X_s only, with cross-entropy to softmax(T_ψ(x̂)) (same optimiser/augmentation as ``finetune``),
     and tested on the target test split.
3. Everything is repeated ``num_runs`` (3) times with different seeds; accuracies (percent) are reported per
   ``"<model>/<target>"`` with mean ± std. The headline ``mean``/``std`` are those of the first target over all
   models and runs.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Optional

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.components import Evaluator
from ddcore.config import ComponentRef, option
from ddcore.data.transforms import replicate_channels, resize_uint8
from ddcore.data.store import ClassIndexedData
from ddcore.errors import RecipeError, UserError
from ddcore.evaluation.train import balanced_subset_indices
from ddcore.types import DatasetInfo, SynBatch

from ddcore_krr.krr import crop_flip
from ddcore_krr.teacher import current_teacher

#: protocol -> (iterations, batch, lr, momentum, weight decay, augment) of the official code.
PROTOCOL_DEFAULTS: dict[str, tuple[int, int, float, float, float, bool]] = {
    "linear": (5000, 512, 0.2, 0.9, 0.0, False),
    "finetune": (10000, 256, 0.01, 0.9, 5e-4, True),
    "kd": (10000, 256, 0.01, 0.9, 5e-4, True),
}


@attrs.define(frozen=True, kw_only=True)
class TransferTarget:
    """One transfer evaluation (``[[eval.targets]]``); zero / negative numbers mean the protocol's default."""

    name: str = option("source", "Label of this target in the results.")
    protocol: str = option("linear", "linear probe, full finetune, or target-data-free kd (eq. 6).",
                           choices=tuple(PROTOCOL_DEFAULTS))
    data: Optional[ComponentRef] = option(None, "Data source table of the target (like [data]); omitted = the "
                                                "run's own dataset (train split to fit, test split to score).",
                                         kind="data")
    iterations: int = option(0, "Optimisation steps (0: linear 5000, finetune/kd 10000; fine-grained: 5000).")
    batch_size: int = option(0, "Batch size (0: linear 512, finetune/kd 256).")
    lr: float = option(0.0, "Learning rate (0: linear 0.2, finetune/kd 0.01); cosine-decayed.")
    momentum: float = option(-1.0, "SGD momentum (<0: 0.9).")
    weight_decay: float = option(-1.0, "Weight decay (<0: linear 0, finetune/kd 5e-4).")
    augment: str = option("auto", "Train-time augmentation: auto (finetune/kd: crop_flip; linear: none), "
                                  "crop_flip or none.", choices=("auto", "crop_flip", "none"))
    train_limit: int = option(0, "Use a class-balanced subset of this many target training images (0 = all).",
                              validator=attrs.validators.ge(0))
    test_limit: int = option(0, "Use a class-balanced subset of this many test images (0 = all).",
                             validator=attrs.validators.ge(0))
    kd_teacher: str = option("ConvNetKRR", "kd: backbone of the target classifier T_ψ.")
    kd_teacher_iterations: int = option(0, "kd: training steps of T_ψ on the target data (0 = iterations).")


@attrs.define(frozen=True, kw_only=True)
class SSLTransferConfig:
    """Options of the ``ssl_transfer`` evaluator (defaults: the official KRR-ST protocol)."""

    models: list[ComponentRef] = option(
        attrs.NOTHING, "Backbones to pre-train (registered names or tables); 'backbone' = the recipe's [backbone].",
        factory=lambda: [ComponentRef("backbone")], kind="backbone",
    )
    num_runs: int = option(3, "Repetitions per model (paper: 3).", validator=attrs.validators.ge(1))
    pretrain_epochs: int = option(1000, "MSE pre-training epochs on (X_s, Y_s) (paper: 1000).",
                                  validator=attrs.validators.ge(0))
    pretrain_batch_size: int = option(256, "Pre-training batch size.", validator=attrs.validators.ge(1))
    pretrain_lr: float = option(0.1, "Pre-training SGD lr (constant).")
    pretrain_momentum: float = option(0.9, "Pre-training SGD momentum.")
    pretrain_weight_decay: float = option(1e-3, "Pre-training weight decay (KRR-ST: 1e-3; Boost-SSDD Tiny: 5e-3).")
    targets: list[TransferTarget] = option(attrs.NOTHING, "Transfer evaluations ([[eval.targets]]).",
                                           factory=lambda: [TransferTarget()])
    test_batch_size: int = option(1024, "Images per forward pass when scoring / extracting features.",
                                  validator=attrs.validators.ge(1))
    teacher_mse_images: int = option(
        2000, "Also report each pre-trained net's MSE to the teacher's features on this many class-balanced source "
        "test images (0 = off): the quantity KRR-ST's outer loss targets, measured on unseen images.",
        validator=attrs.validators.ge(0))


class _Split:
    """A target split: a store plus the positions used (``None`` = all)."""

    def __init__(self, store: ClassIndexedData, positions: Optional[torch.Tensor]):
        self.store = store
        self.positions = positions if positions is not None else torch.arange(len(store), device=store.labels.device)

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def take(self, rows: torch.Tensor):
        return self.store.take(self.positions[rows])

    def chunks(self, size: int):
        for s in range(0, len(self), size):
            yield self.take(torch.arange(s, min(s + size, len(self)), device=self.positions.device))

    @property
    def num_classes(self) -> int:
        return self.store.num_classes

    @property
    def zero_pixel(self) -> torch.Tensor:
        info = self.store.info
        return (-torch.tensor(info.mean) / torch.tensor(info.std)).to(self.positions.device)


def batch_schedule(n: int, batch: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """``[iterations, min(batch, n)]`` row indices: consecutive slices of concatenated random permutations."""
    batch = min(batch, n)
    need = iterations * batch
    perms = [torch.randperm(n, generator=generator, device=generator.device) for _ in range(math.ceil(need / n))]
    return torch.cat(perms)[:need].view(iterations, batch) if need else torch.empty(0, batch, dtype=torch.int64)


def cosine_lr(opt: torch.optim.Optimizer, base: float, it: int, total: int) -> None:
    for g in opt.param_groups:
        g["lr"] = 0.5 * base * (1 + math.cos(math.pi * it / max(1, total)))


class Classifier(nn.Module):
    """``head(backbone.embed(x))``: a backbone with a new task head (the pre-training head is discarded)."""

    def __init__(self, backbone: nn.Module, num_classes: int, sample: torch.Tensor):
        super().__init__()
        self.backbone = backbone
        was = backbone.training
        backbone.eval()
        with torch.no_grad():
            dim = backbone.embed(sample[:2]).flatten(1).shape[1]
        backbone.train(was)
        self.head = nn.Linear(dim, num_classes).to(sample.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.embed(x).flatten(1))


class SSLTransfer(Evaluator):
    """Pre-train on (X_s, Y_s) with MSE, then linear-probe / fine-tune / KD on targets; mean ± std over runs."""

    def __init__(self, config: SSLTransferConfig, build: Any):
        super().__init__(config, build)
        if not config.targets:
            raise RecipeError("needs at least one target", key="eval.targets")
        for i, ref in enumerate(config.models):
            if ref.name != "backbone":
                build.registry.get("backbone", ref.name, key=f"eval.models[{i}]")
        names = [t.name for t in config.targets]
        if len(set(names)) != len(names):
            raise RecipeError(f"target names must be unique, got {names}", key="eval.targets")
        self._splits: dict[str, tuple[_Split, _Split]] = {}
        self._kd_teachers: dict[str, nn.Module] = {}
        self._mse_data: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (test images, teacher features)

    # -- data ------------------------------------------------------------------------------------------
    def _conform(self, images: torch.Tensor, info: DatasetInfo) -> tuple[torch.Tensor, DatasetInfo]:
        """Replicate gray to RGB and resize to the source resolution when the target differs."""
        src = self.build.info
        mean, std = info.mean, info.std
        if images.shape[1] != src.channels:
            images = replicate_channels(images, src.channels)
            if len(mean) == 1:
                mean, std = mean * src.channels, std * src.channels
        if images.shape[-2:] != (src.height, src.width):
            if src.height != src.width:
                raise UserError(f"eval.targets: cannot resize to a non-square source ({src.height}x{src.width})")
            images = resize_uint8(images.cpu(), src.height)
        info = attrs.evolve(info, channels=images.shape[1], height=images.shape[2], width=images.shape[3],
                            mean=tuple(mean), std=tuple(std))
        return images, info

    def splits(self, index: int) -> tuple[_Split, _Split]:
        """(train, test) splits of target ``index`` (loaded once per evaluator)."""
        target = self.config.targets[index]
        if target.name in self._splits:
            return self._splits[target.name]
        build = self.build
        if target.data is None:
            train_store, test_store = build.train, build.test
        else:
            source = build.make_component("data", target.data, key=f"eval.targets[{index}].data")
            stores = []
            for split in ("train", "test"):
                x, y = source.load(split)
                x, info = self._conform(x, source.info())
                stores.append(ClassIndexedData(x, y, info, build.device))
            train_store, test_store = stores
        out = tuple(_Split(s, balanced_subset_indices(s.class_counts, limit))
                    for s, limit in ((train_store, target.train_limit), (test_store, target.test_limit)))
        self._splits[target.name] = out  # type: ignore[assignment]
        return out  # type: ignore[return-value]

    # -- training pieces -------------------------------------------------------------------------------
    def pretrain(self, net: nn.Module, syn: SynBatch, generator: torch.Generator) -> float:
        """MSE pre-training of ``net`` on (X_s, Y_s) (eq. 5); returns the last epoch's mean loss."""
        cfg = self.config
        n = len(syn)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.pretrain_lr, momentum=cfg.pretrain_momentum,
                              weight_decay=cfg.pretrain_weight_decay)
        net.train()
        last = torch.zeros((), device=syn.images.device)
        for _ in range(cfg.pretrain_epochs):
            order = torch.randperm(n, generator=generator, device=generator.device).to(syn.images.device)
            total = torch.zeros((), device=syn.images.device)
            batches = 0
            for s in range(0, n, cfg.pretrain_batch_size):
                idx = order[s:s + cfg.pretrain_batch_size]
                if idx.numel() < 2 and n >= 2:  # a single-image batch breaks BatchNorm
                    continue
                loss = F.mse_loss(net(syn.images[idx]), syn.targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = total + loss.detach()
                batches += 1
            last = total / max(batches, 1)
        return float(last)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, split: _Split) -> float:
        model.eval()
        correct = torch.zeros((), device=split.positions.device, dtype=torch.int64)
        for batch in split.chunks(self.config.test_batch_size):
            correct += (model(batch.images).argmax(-1) == batch.labels).sum()
        return 100.0 * float(correct) / max(1, len(split))

    @torch.no_grad()
    def features(self, net: nn.Module, split: _Split) -> tuple[torch.Tensor, torch.Tensor]:
        net.eval()
        feats, labels = [], []
        for batch in split.chunks(self.config.test_batch_size):
            feats.append(net.embed(batch.images).flatten(1).float())
            labels.append(batch.labels)
        return torch.cat(feats), torch.cat(labels)

    def _hparams(self, target: TransferTarget, n: int) -> tuple[int, int, float, float, float, bool]:
        it, bs, lr, mom, wd, aug = PROTOCOL_DEFAULTS[target.protocol]
        it = target.iterations or it
        bs = min(target.batch_size or bs, n)
        lr = target.lr or lr
        mom = mom if target.momentum < 0 else target.momentum
        wd = wd if target.weight_decay < 0 else target.weight_decay
        aug = aug if target.augment == "auto" else target.augment == "crop_flip"
        return it, bs, lr, mom, wd, aug

    def linear_probe(self, net: nn.Module, index: int, generator: torch.Generator) -> float:
        target = self.config.targets[index]
        train, test = self.splits(index)
        f_tr, y_tr = self.features(net, train)
        f_te, y_te = self.features(net, test)
        it, bs, lr, mom, wd, _ = self._hparams(target, len(train))
        with self.build.seeded("ssl_transfer-head", generator.initial_seed()):
            head = nn.Linear(f_tr.shape[1], train.num_classes).to(f_tr.device)
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=mom, weight_decay=wd)
        schedule = batch_schedule(len(train), bs, it, generator).to(f_tr.device)
        for k in range(it):
            cosine_lr(opt, lr, k, it)
            idx = schedule[k]
            loss = F.cross_entropy(head(f_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            correct = (head(f_te).argmax(-1) == y_te).sum()
        return 100.0 * float(correct) / max(1, len(test))

    def _train_classifier(self, model: nn.Module, target: TransferTarget, images_of, labels_of, n: int,
                          generator: torch.Generator, zero_pixel: torch.Tensor, iterations: int) -> nn.Module:
        """SGD + cosine over ``iterations`` batches; ``images_of(rows)``/``labels_of(rows, x)`` give each batch."""
        _, bs, lr, mom, wd, aug = self._hparams(target, n)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=mom, weight_decay=wd)
        schedule = batch_schedule(n, bs, iterations, generator)
        model.train()
        for k in range(iterations):
            cosine_lr(opt, lr, k, iterations)
            rows = schedule[k]
            x = images_of(rows)
            if aug:
                x = crop_flip(x, generator, fill=zero_pixel)
            loss = F.cross_entropy(model(x), labels_of(rows, x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return model

    def finetune(self, net: nn.Module, index: int, generator: torch.Generator) -> float:
        target = self.config.targets[index]
        train, test = self.splits(index)
        it = self._hparams(target, len(train))[0]
        sample = train.take(torch.arange(min(2, len(train)), device=train.positions.device)).images
        with self.build.seeded("ssl_transfer-head", generator.initial_seed()):
            model = Classifier(copy.deepcopy(net), train.num_classes, sample)
        labels = {}

        def images_of(rows):
            batch = train.take(rows.to(train.positions.device))
            labels["y"] = batch.labels
            return batch.images

        self._train_classifier(model, target, images_of, lambda rows, x: labels["y"], len(train), generator,
                               train.zero_pixel, it)
        return self.accuracy(model, test)

    def kd_teacher(self, index: int) -> nn.Module:
        """T_ψ of target ``index``: a ``kd_teacher`` backbone trained on the target data (once per evaluator)."""
        target = self.config.targets[index]
        if target.name not in self._kd_teachers:
            train, _ = self.splits(index)
            build = self.build
            teacher = build.make_backbone(target.kd_teacher, num_classes=train.num_classes,
                                          seed_key=("ssl_transfer-kd-teacher", target.name))
            labels = {}

            def images_of(rows):
                batch = train.take(rows.to(train.positions.device))
                labels["y"] = batch.labels
                return batch.images

            it = target.kd_teacher_iterations or self._hparams(target, len(train))[0]
            self._train_classifier(teacher, target, images_of, lambda rows, x: labels["y"], len(train),
                                   build.generator("ssl_transfer-kd-teacher", target.name), train.zero_pixel, it)
            self._kd_teachers[target.name] = teacher.eval().requires_grad_(False)
        return self._kd_teachers[target.name]

    def knowledge_distillation(self, net: nn.Module, index: int, syn: SynBatch, generator: torch.Generator) -> float:
        """Eq. 6: fine-tune the pre-trained net on X_s only, with T_ψ's softmax as targets; test on the target."""
        target = self.config.targets[index]
        train, test = self.splits(index)
        teacher = self.kd_teacher(index)
        it = self._hparams(target, len(syn))[0]
        with self.build.seeded("ssl_transfer-head", generator.initial_seed()):
            model = Classifier(copy.deepcopy(net), train.num_classes, syn.images[:2])

        def soft_labels(rows, x):
            with torch.no_grad():
                return F.softmax(teacher(x), -1)

        zero = (-torch.tensor(self.build.info.mean) / torch.tensor(self.build.info.std)).to(syn.images.device)
        self._train_classifier(model, target, lambda rows: syn.images[rows.to(syn.images.device)], soft_labels,
                               len(syn), generator, zero, it)
        return self.accuracy(model, test)

    @torch.no_grad()
    def teacher_mse(self, net: nn.Module) -> Optional[float]:
        """MSE between ``net``'s outputs and the teacher's features on held-out source test images (eval mode).

        ``None`` when off or when the run has no teacher (e.g. a user evaluator on another parameterization). The
        test images and their teacher features are gathered once per evaluator (the teacher is frozen) and reused
        for every pre-trained net of every evaluated set.
        """
        limit = self.config.teacher_mse_images
        teacher = current_teacher(self.build)
        if limit == 0 or teacher is None or len(self.build.test) == 0:
            return None
        if self._mse_data is None:
            test = self.build.test
            split = _Split(test, balanced_subset_indices(test.class_counts, limit))
            images = split.take(torch.arange(len(split), device=split.positions.device)).images
            self._mse_data = (images, teacher.features(images))
        images, targets = self._mse_data
        net.eval()
        total = torch.zeros((), device=targets.device, dtype=torch.float64)
        step = self.config.test_batch_size
        for s in range(0, images.shape[0], step):
            out = net(images[s:s + step]).float()
            total += F.mse_loss(out, targets[s:s + step], reduction="sum").double()
        return float(total) / max(1, targets.numel())

    # -- Evaluator API -----------------------------------------------------------------------------------
    def evaluate(self, synset: SynBatch, *, seed: int) -> dict[str, Any]:
        """Pre-train every model ``num_runs`` times on ``synset`` and run every target; accuracies in percent."""
        cfg, build = self.config, self.build
        syn = synset.detach().to(build.device)
        if syn.targets is None:
            raise UserError("eval 'ssl_transfer': the synthetic set has no target representations (synset.targets)")
        t0 = time.perf_counter()
        values: dict[str, list[float]] = {}
        pre_losses: dict[str, list[float]] = {}
        teacher_mse: dict[str, list[float]] = {}
        labels: set[str] = set()
        for m_index, ref in enumerate(cfg.models):
            label = build.recipe.backbone.name if ref.name == "backbone" else ref.name
            if label in labels:  # the same architecture listed twice (e.g. with other options)
                label = f"{label}#{m_index}"
            labels.add(label)
            backbone_ref = None if ref.name == "backbone" else ref
            for run in range(cfg.num_runs):
                net = build.make_backbone(backbone_ref, num_classes=int(syn.targets.shape[1]),
                                          seed_key=("ssl_transfer", seed, m_index, run))
                g = build.generator("ssl_transfer", seed, m_index, run)
                pre_losses.setdefault(label, []).append(self.pretrain(net, syn, g))
                mse = self.teacher_mse(net)
                if mse is not None:
                    teacher_mse.setdefault(label, []).append(mse)
                for t_index, target in enumerate(cfg.targets):
                    gt = build.generator("ssl_transfer", seed, m_index, run, target.name)
                    if target.protocol == "linear":
                        acc = self.linear_probe(net, t_index, gt)
                    elif target.protocol == "finetune":
                        acc = self.finetune(net, t_index, gt)
                    else:
                        acc = self.knowledge_distillation(net, t_index, syn, gt)
                    values.setdefault(f"{label}/{target.name}", []).append(acc)
        per_model = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v} for k, v in values.items()}
        first = cfg.targets[0].name
        headline = [a for k, v in values.items() if k.endswith("/" + first) for a in v]
        return {
            "metric": "accuracy",
            "mean": float(np.mean(headline)),
            "std": float(np.std(headline)),
            "num_models": len(headline),
            "headline": f"{cfg.targets[0].protocol} on {first}",
            "per_model": per_model,
            "pretrain_loss": {k: float(np.mean(v)) for k, v in pre_losses.items()},
            # held-out regression error to the teacher (what the distillation optimises), mean over runs
            "teacher_mse": {k: float(np.mean(v)) for k, v in teacher_mse.items()},
            "seconds": time.perf_counter() - t0,
        }
