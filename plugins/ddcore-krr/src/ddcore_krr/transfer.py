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
   - ``kd`` (target-data-free KD, paper eq. 6, Table 4) as ``test_kd.py`` / ``zeroshot_kd.py`` run it: a target
     classifier T_ψ (``kd_teacher`` backbone, trained on the target training split with the fine-tune protocol:
     the code loads a checkpoint whose training is not released); the pre-trained student with a new head is
     trained on X_s only with cross-entropy to softmax(T_ψ(x̂)), AdamW lr 1e-4 / wd 0, 1000 epochs over X_s in
     batches of 512, cosine per epoch, DSA on every batch; T_ψ runs in **train mode** (batch statistics) and the
     student is scored in **train mode** too, as the code does (``teacher_mode`` / ``test_mode`` = ``eval``
     switch either off).
   - ``kd_sgd``: the same KD with the fine-tune protocol (SGD 0.01 / 0.9 / 5e-4, cosine, 10,000 iterations of
     256, crop + flip, both nets in eval mode): this plugin's earlier protocol, kept as a named alternative.

   Labelled sets (``labels`` and no ``targets``: the ``random_labelled`` / ``kmeans_labelled`` baselines, Table 1's
   Random / Kmeans rows) are pre-trained as ``test.py`` pre-trains them (``pretrain_dc.py``): cross-entropy to
   the class labels, DSA on every batch, SGD lr 0.01 / momentum 0.9 / wd 5e-4, batch 256, 1000 epochs, lr ×0.1
   after half of them; their head (one output per source class) is discarded like the d_y head.
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

from ddcore.augment import dsa
from ddcore.components import Evaluator
from ddcore.config import ComponentRef, option
from ddcore.data.transforms import replicate_channels, resize_uint8
from ddcore.data.store import ClassIndexedData
from ddcore.errors import RecipeError, UserError
from ddcore.evaluation.train import balanced_subset_indices
from ddcore.types import DatasetInfo, SynBatch

from ddcore_krr.krr import crop_flip
from ddcore_krr.teacher import current_teacher

@attrs.define(frozen=True)
class Protocol:
    """Resolved hyperparameters of one target protocol (defaults: :data:`PROTOCOL_DEFAULTS`)."""

    iterations: int
    batch: int
    lr: float
    momentum: float
    weight_decay: float
    augment: str            # "none", "crop_flip" or "dsa"
    optimizer: str = "sgd"  # "sgd" or "adamw"
    epochs: int = 0         # > 0: passes over the training set (cosine per epoch); 0: ``iterations`` batches
    teacher_mode: str = "eval"  # kd: mode of T_ψ while it labels X_s
    test_mode: str = "eval"     # mode of the scored classifier


#: protocol -> the official code's hyperparameters (linear_eval.py, finetune.py, test_kd.py + zeroshot_kd.py).
PROTOCOL_DEFAULTS: dict[str, Protocol] = {
    "linear": Protocol(5000, 512, 0.2, 0.9, 0.0, "none"),
    "finetune": Protocol(10000, 256, 0.01, 0.9, 5e-4, "crop_flip"),
    "kd": Protocol(0, 512, 1e-4, 0.9, 0.0, "dsa", optimizer="adamw", epochs=1000, teacher_mode="train",
                   test_mode="train"),
    "kd_sgd": Protocol(10000, 256, 0.01, 0.9, 5e-4, "crop_flip"),
}


@attrs.define(frozen=True, kw_only=True)
class TransferTarget:
    """One transfer evaluation (``[[eval.targets]]``); zero / negative numbers mean the protocol's default."""

    name: str = option("source", "Label of this target in the results.")
    protocol: str = option("linear", "linear probe, full finetune, target-data-free kd (eq. 6) as test_kd.py runs "
                                     "it, or kd_sgd (kd with the finetune protocol).",
                           choices=tuple(PROTOCOL_DEFAULTS))
    data: Optional[ComponentRef] = option(None, "Data source table of the target (like [data]); omitted = the "
                                                "run's own dataset (train split to fit, test split to score).",
                                         kind="data")
    iterations: int = option(0, "Optimisation steps (0: linear 5000, finetune/kd_sgd 10000; fine-grained: 5000; "
                                "kd: epochs x batches per epoch).")
    epochs: int = option(-1, "Passes over the training set, cosine stepped per epoch (<0: kd 1000, others use "
                             "iterations; 0: use iterations).")
    batch_size: int = option(0, "Batch size (0: linear/kd 512, finetune/kd_sgd 256).")
    optimizer: str = option("auto", "auto (kd: adamw; others: sgd), sgd or adamw.", choices=("auto", "sgd", "adamw"))
    lr: float = option(0.0, "Learning rate (0: linear 0.2, finetune/kd_sgd 0.01, kd 1e-4); cosine-decayed.")
    momentum: float = option(-1.0, "SGD momentum (<0: 0.9).")
    weight_decay: float = option(-1.0, "Weight decay (<0: linear 0, finetune/kd_sgd 5e-4, kd 0).")
    augment: str = option("auto", "Train-time augmentation: auto (finetune/kd_sgd: crop_flip; kd: dsa; linear: "
                                  "none), crop_flip, dsa or none.", choices=("auto", "crop_flip", "dsa", "none"))
    teacher_mode: str = option("auto", "kd: mode of T_ψ while it labels X_s (auto: kd train = test_kd.py, kd_sgd "
                                       "eval).", choices=("auto", "train", "eval"))
    test_mode: str = option("auto", "Mode of the classifier when scored (auto: kd train = test_kd.py, others eval).",
                            choices=("auto", "train", "eval"))
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
    labelled_pretrain_epochs: int = option(
        1000, "Labelled sets (random_labelled / kmeans_labelled baselines): cross-entropy pre-training epochs "
        "(test.py: 1000, lr x0.1 after half).", validator=attrs.validators.ge(0))
    labelled_pretrain_batch_size: int = option(256, "Labelled sets: pre-training batch size (test.py: 256).",
                                               validator=attrs.validators.ge(1))
    labelled_pretrain_lr: float = option(0.01, "Labelled sets: pre-training SGD lr (test.py: 0.01).")
    labelled_pretrain_weight_decay: float = option(5e-4, "Labelled sets: pre-training weight decay (test.py: 5e-4).")
    labelled_pretrain_augment: str = option("dsa", "Labelled sets: augmentation of every pre-training batch (test.py: "
                                                   "dsa).", choices=("dsa", "none"))
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
            total = torch.zeros((), device=syn.images.device)
            batches = 0
            for idx in _epoch_batches(n, cfg.pretrain_batch_size, generator, syn.images.device):
                loss = F.mse_loss(net(syn.images[idx]), syn.targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = total + loss.detach()
                batches += 1
            last = total / max(batches, 1)
        return float(last)

    def pretrain_labelled(self, net: nn.Module, syn: SynBatch, generator: torch.Generator) -> float:
        """Cross-entropy pre-training of ``net`` on labelled images (official ``pretrain_dc.py``, module doc):
        DSA per batch, SGD, lr x0.1 after ``epochs // 2`` epochs; returns the last epoch's mean loss."""
        cfg = self.config
        n = len(syn)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.labelled_pretrain_lr, momentum=0.9,
                              weight_decay=cfg.labelled_pretrain_weight_decay)
        strategy = dsa.parse_strategy(dsa.DSAConfig().strategy)
        net.train()
        last = torch.zeros((), device=syn.images.device)
        for epoch in range(cfg.labelled_pretrain_epochs):
            if epoch == cfg.labelled_pretrain_epochs // 2:  # MultiStepLR(milestones=[epochs // 2], gamma=0.1)
                for g in opt.param_groups:
                    g["lr"] = cfg.labelled_pretrain_lr * 0.1
            total = torch.zeros((), device=syn.images.device)
            batches = 0
            for idx in _epoch_batches(n, cfg.labelled_pretrain_batch_size, generator, syn.images.device):
                x = syn.images[idx]
                if cfg.labelled_pretrain_augment == "dsa":
                    with torch.no_grad():
                        x = dsa.random(x, generator, strategy, dsa.DSAConfig())
                loss = F.cross_entropy(net(x), syn.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = total + loss.detach()
                batches += 1
            last = total / max(batches, 1)
        return float(last)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, split: _Split, mode: str = "eval") -> float:
        """Top-1 accuracy (percent) on ``split``; ``mode = "train"`` scores with batch statistics (test_kd.py)."""
        model.train(mode == "train")
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

    def _hparams(self, target: TransferTarget, n: int) -> Protocol:
        """The target's protocol with its overrides applied; ``iterations`` resolved for ``n`` training rows."""
        p = PROTOCOL_DEFAULTS[target.protocol]
        batch = min(target.batch_size or p.batch, n)
        epochs = p.epochs if target.epochs < 0 else target.epochs
        if target.iterations and target.epochs < 0:
            epochs = 0  # an explicit iteration count wins over the protocol's default epochs
        iterations = epochs * math.ceil(n / batch) if epochs else (target.iterations or p.iterations)
        return attrs.evolve(
            p, iterations=iterations, batch=batch, epochs=epochs, lr=target.lr or p.lr,
            momentum=p.momentum if target.momentum < 0 else target.momentum,
            weight_decay=p.weight_decay if target.weight_decay < 0 else target.weight_decay,
            augment=p.augment if target.augment == "auto" else target.augment,
            optimizer=p.optimizer if target.optimizer == "auto" else target.optimizer,
            teacher_mode=p.teacher_mode if target.teacher_mode == "auto" else target.teacher_mode,
            test_mode=p.test_mode if target.test_mode == "auto" else target.test_mode,
        )

    def linear_probe(self, net: nn.Module, index: int, generator: torch.Generator) -> float:
        target = self.config.targets[index]
        train, test = self.splits(index)
        f_tr, y_tr = self.features(net, train)
        f_te, y_te = self.features(net, test)
        hp = self._hparams(target, len(train))
        it, bs, lr = hp.iterations, hp.batch, hp.lr
        with self.build.seeded("ssl_transfer-head", generator.initial_seed()):
            head = nn.Linear(f_tr.shape[1], train.num_classes).to(f_tr.device)
        opt = self._optimizer(head.parameters(), hp)
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

    @staticmethod
    def _optimizer(params, hp: Protocol) -> torch.optim.Optimizer:
        if hp.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def _train_classifier(self, model: nn.Module, hp: Protocol, images_of, labels_of, n: int,
                          generator: torch.Generator, zero_pixel: torch.Tensor) -> nn.Module:
        """``hp.iterations`` batches with the protocol's optimiser, cosine lr (per epoch when ``hp.epochs``) and
        augmentation; ``images_of(rows)`` / ``labels_of(rows, x)`` give each batch."""
        opt = self._optimizer(model.parameters(), hp)
        if hp.epochs:  # per epoch a fresh permutation in batches of hp.batch, the last one smaller (DataLoader)
            plan = []
            for ep in range(hp.epochs):
                perm = torch.randperm(n, generator=generator, device=generator.device)
                plan += [(ep, perm[s:s + hp.batch]) for s in range(0, n, hp.batch)]
        else:
            schedule = batch_schedule(n, hp.batch, hp.iterations, generator)
            plan = [(k, schedule[k]) for k in range(hp.iterations)]
        strategy = dsa.parse_strategy(dsa.DSAConfig().strategy)
        total = hp.epochs or hp.iterations
        model.train()
        for step, rows in plan:
            cosine_lr(opt, hp.lr, step, total)
            x = images_of(rows)
            if hp.augment == "crop_flip":
                x = crop_flip(x, generator, fill=zero_pixel)
            elif hp.augment == "dsa":
                with torch.no_grad():
                    x = dsa.random(x, generator, strategy, dsa.DSAConfig())
            loss = F.cross_entropy(model(x), labels_of(rows, x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return model

    def finetune(self, net: nn.Module, index: int, generator: torch.Generator) -> float:
        target = self.config.targets[index]
        train, test = self.splits(index)
        hp = self._hparams(target, len(train))
        sample = train.take(torch.arange(min(2, len(train)), device=train.positions.device)).images
        with self.build.seeded("ssl_transfer-head", generator.initial_seed()):
            model = Classifier(copy.deepcopy(net), train.num_classes, sample)
        labels = {}

        def images_of(rows):
            batch = train.take(rows.to(train.positions.device))
            labels["y"] = batch.labels
            return batch.images

        self._train_classifier(model, hp, images_of, lambda rows, x: labels["y"], len(train), generator,
                               train.zero_pixel)
        return self.accuracy(model, test, hp.test_mode)

    def kd_teacher(self, index: int) -> nn.Module:
        """T_ψ of target ``index``: a ``kd_teacher`` backbone trained on the target data with the fine-tune
        protocol (once per evaluator; frozen, eval mode — :meth:`knowledge_distillation` copies it per run)."""
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

            finetune = TransferTarget(protocol="finetune", iterations=target.kd_teacher_iterations)
            hp = self._hparams(finetune, len(train))
            if not target.kd_teacher_iterations:
                hp = attrs.evolve(hp, iterations=self._hparams(attrs.evolve(target, protocol="kd_sgd", epochs=-1),
                                                               len(train)).iterations)
            self._train_classifier(teacher, hp, images_of, lambda rows, x: labels["y"], len(train),
                                   build.generator("ssl_transfer-kd-teacher", target.name), train.zero_pixel)
            self._kd_teachers[target.name] = teacher.eval().requires_grad_(False)
        return self._kd_teachers[target.name]

    def knowledge_distillation(self, net: nn.Module, index: int, syn: SynBatch, generator: torch.Generator) -> float:
        """Eq. 6: train the pre-trained net on X_s only, with T_ψ's softmax as targets; test on the target."""
        target = self.config.targets[index]
        _, test = self.splits(index)
        hp = self._hparams(target, len(syn))
        # a copy per run: in train mode T_ψ's BatchNorm updates its running statistics (test_kd.py keeps
        # teacher.train()), which must not leak from one run into the next
        teacher = copy.deepcopy(self.kd_teacher(index)).train(hp.teacher_mode == "train")
        with self.build.seeded("ssl_transfer-head", generator.initial_seed()):
            model = Classifier(copy.deepcopy(net), test.num_classes, syn.images[:2])

        def soft_labels(rows, x):
            with torch.no_grad():
                return F.softmax(teacher(x), -1)

        zero = (-torch.tensor(self.build.info.mean) / torch.tensor(self.build.info.std)).to(syn.images.device)
        self._train_classifier(model, hp, lambda rows: syn.images[rows.to(syn.images.device)], soft_labels,
                               len(syn), generator, zero)
        return self.accuracy(model, test, hp.test_mode)

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
        labelled = syn.targets is None and syn.labels is not None and syn.labels.ndim == 1
        if syn.targets is None and not labelled:
            raise UserError("eval 'ssl_transfer': the synthetic set has neither target representations "
                            "(synset.targets) nor class labels")
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
                outputs = build.info.num_classes if labelled else int(syn.targets.shape[1])
                net = build.make_backbone(backbone_ref, num_classes=outputs,
                                          seed_key=("ssl_transfer", seed, m_index, run))
                g = build.generator("ssl_transfer", seed, m_index, run)
                pretrain = self.pretrain_labelled if labelled else self.pretrain
                pre_losses.setdefault(label, []).append(pretrain(net, syn, g))
                mse = None if labelled else self.teacher_mse(net)
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
            "pretraining": "cross-entropy + DSA on labels" if labelled else "MSE on target representations",
            "per_model": per_model,
            "pretrain_loss": {k: float(np.mean(v)) for k, v in pre_losses.items()},
            # held-out regression error to the teacher (what the distillation optimises), mean over runs
            "teacher_mse": {k: float(np.mean(v)) for k, v in teacher_mse.items()},
            "seconds": time.perf_counter() - t0,
        }


def _epoch_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """One shuffled epoch's index batches; a trailing single-image batch is dropped (it breaks BatchNorm)."""
    order = torch.randperm(n, generator=generator, device=generator.device).to(device)
    for s in range(0, n, batch_size):
        idx = order[s:s + batch_size]
        if idx.numel() >= 2 or n < 2:
            yield idx
