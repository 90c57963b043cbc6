"""Parameterization ``krr_pixels``: m learnable images X_s plus m learnable target representations Y_s.

Algorithm 1 of the paper, lines 3–4: X_s starts as a uniform random subset of the (unlabeled) training split,
Y_s as the teacher's features of those images (Table 11: this "w init" matters; ``target_init = "gaussian"``
gives the "w/o init" ablation). Both are leaf tensors optimised by the run's optimizer (AdamW in the paper).

Normalisation quirk (facts §6): the official code stores x_syn in raw [0, 1] pixel space while every real
batch goes through ``Normalize``, so the inner model sees differently scaled inputs for X_s and for real data,
and pre-training later also uses raw X_s. ddcore's contract is that synthetic and real images live in the same
normalised space, and that is our default (``pixel_space = "normalized"``): X_s is initialised from normalised
real images and the teacher targets are g_φ(X_s) exactly. ``pixel_space = "raw"`` reproduces the official
behaviour (X_s materialises as raw pixels, Y_s = g_φ(normalize(X_s))) for bit-level comparisons.

Baselines (``[eval] baselines``), at the same number of pairs m:
- ``random_labelled`` / ``kmeans_labelled``: the paper's Table 1 "Random" / "Kmeans" rows as the official
  ``test.py`` runs them: m real training images *with their class labels* (no targets), class-balanced (m/C per
  class), pre-trained by the evaluator with cross-entropy + DSA (``pretrain_dc.py``). ``kmeans_labelled`` picks,
  per class, the medoids of k-means (k = m/C) on that class's teacher features (our choice of space: the paper
  cites Cui et al. 2022 without stating one).
- ``random``: m uniformly drawn real training images with their teacher features as targets;
- ``kmeans``: k-means (k = m) on the teacher features of the training split; per cluster, the member nearest
  to its centroid, with its teacher features (a "Kmeans" coreset in g_φ's space).
The engine's budget counts floats (``m·(C·H·W + d_y)``); the teacher-target baselines store exactly as many, the
labelled ones m images (fewer floats: the paper compares at the same number of images).

Subclass hooks for other parameterizations (e.g. PCA bases): :meth:`KRRPixels.initial_pairs` returns the
initial (images, targets); :func:`teacher_pairs` builds teacher-targeted sets from store indices.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import nn

from ddcore.components import Parameterization
from ddcore.config import option
from ddcore.errors import RecipeError
from ddcore.types import SynBatch

from ddcore_krr.kmeans import kmeans_medoid_indices
from ddcore_krr.teacher import Teacher, TeacherConfig, get_teacher



@attrs.define(frozen=True, kw_only=True)
class KRRPixelsConfig:
    """Options of ``krr_pixels`` (the KRR-ST synthetic set: images + target representations)."""

    num: int = option(1000, "m: synthetic (image, target) pairs (CIFAR-100: 1000 = 2 %; Tiny: 2000).",
                      validator=attrs.validators.ge(1))
    init: str = option("real", "X_s init: real = uniform random training images (Alg. 1 l.3); noise = N(0, 1).",
                       choices=("real", "noise"))
    target_init: str = option("teacher", "Y_s init: teacher = g_φ(X_s) (Alg. 1 l.4, 'w init'); gaussian = N(0, I) "
                                         "('w/o init' of Table 11).", choices=("teacher", "gaussian"))
    pixel_space: str = option("normalized", "Space X_s lives in: normalized (ddcore contract) or raw [0, 1] pixels "
                                            "(the official code's quirk, facts §6).", choices=("normalized", "raw"))
    learn_images: bool = option(True, "Optimise X_s.")
    learn_targets: bool = option(True, "Optimise Y_s.")
    target_lr_scale: float = option(1.0, "Learning-rate multiplier of Y_s (official: 1, one AdamW for both).")
    kmeans_iterations: int = option(30, "Lloyd iterations of the kmeans baseline.", validator=attrs.validators.ge(1))
    teacher: TeacherConfig = option(factory=TeacherConfig, doc="The self-supervised teacher g_φ (table).")


#: Baselines with teacher targets (pre-trained with MSE, like the distilled set).
TEACHER_TARGET_BASELINES = ("random", "kmeans")
#: The paper's Table 1 baselines: labelled real images, pre-trained with cross-entropy + DSA (official test.py).
LABELLED_BASELINES = ("random_labelled", "kmeans_labelled")


def teacher_pairs(build: Any, teacher: Teacher, indices: torch.Tensor, raw: bool = False) -> SynBatch:
    """Training images at store ``indices`` with their teacher features as targets (optionally as raw pixels)."""
    batch = build.train.take(indices)
    targets = teacher.table(build.train)[batch.indices]
    images = build.train.denormalize(batch.images) if raw else batch.images
    return SynBatch(images=images, labels=None, targets=targets)


def labelled_images(build: Any, teacher: Teacher, kind: str, count: int, generator: torch.Generator,
                    kmeans_iterations: int = 30, raw: bool = False) -> SynBatch:
    """``count`` real training images with their class labels, class-balanced (``random_labelled`` /
    ``kmeans_labelled``: per class, medoids of k-means on the teacher features of that class)."""
    from ddcore.baselines import per_class_budget

    data = build.train
    counts = per_class_budget(count, data.class_counts)
    if kind == "random_labelled":
        idx = data.random_indices_per_class(counts, generator)
    else:
        feats = teacher.table(data)
        parts = []
        for c, k in enumerate(counts):
            if k == 0:
                continue
            start = int(data.offsets[c])
            rows = kmeans_medoid_indices(feats[start:start + data.class_counts[c]], k, generator=generator,
                                         iterations=kmeans_iterations)
            parts.append(rows.to(data.labels.device) + start)
        idx = torch.cat(parts)
    batch = data.take(idx.to(data.labels.device))
    images = data.denormalize(batch.images) if raw else batch.images
    return SynBatch(images=images, labels=batch.labels, targets=None)


def ssl_baseline_set(build: Any, teacher: Teacher, kind: str, pairs: int, generator: torch.Generator, *,
                     kmeans_iterations: int = 30, raw: bool = False) -> SynBatch:
    """One of :data:`BASELINES` with ``pairs`` images (module doc); shared with ddcore-pca's ssl mode."""
    data = build.train
    if kind in LABELLED_BASELINES:
        return labelled_images(build, teacher, kind, pairs, generator, kmeans_iterations, raw)
    if kind == "random":
        idx = torch.randperm(len(data), generator=generator, device=generator.device)[:pairs]
    else:
        idx = kmeans_medoid_indices(teacher.table(data), pairs, generator=generator, iterations=kmeans_iterations)
    return teacher_pairs(build, teacher, idx.to(data.labels.device), raw=raw)


#: Every baseline kind of the KRR-ST family.
BASELINES = TEACHER_TARGET_BASELINES + LABELLED_BASELINES


class KRRPixels(Parameterization):
    """X_s (``images``) and Y_s (``targets``) as two learnable tensors; ``materialize`` returns them as they are."""

    baselines = BASELINES

    def __init__(self, config: KRRPixelsConfig, build: Any):
        super().__init__(config, build)
        self.teacher = get_teacher(build, config.teacher)  # a plain object, not a submodule (not in state_dict)
        images, targets = self.initial_pairs()
        self.images = nn.Parameter(images.contiguous(), requires_grad=config.learn_images)
        self.targets = nn.Parameter(targets.contiguous(), requires_grad=config.learn_targets)

    @property
    def raw(self) -> bool:
        return self.config.pixel_space == "raw"

    def initial_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The initial (X_s, Y_s), on the build device (override in subclasses for other inits)."""
        cfg, build = self.config, self.build
        n = len(build.train)
        if cfg.num > n:
            raise RecipeError(f"{cfg.num} synthetic pairs asked but the training split has {n} images",
                              key="synset.num")
        g = build.generator("krr-init")
        if cfg.init == "real":
            idx = torch.randperm(n, generator=g, device=g.device)[: cfg.num].to(build.train.labels.device)
            images = build.train.take(idx).images
        else:
            images = torch.randn((cfg.num, *build.info.image_shape), generator=g, device=g.device).to(build.device)
        if cfg.target_init == "teacher":
            targets = self.teacher.features(images)
        else:
            targets = torch.randn((cfg.num, self.teacher.dim), generator=build.generator("krr-init-targets"),
                                  device=build.device)
        if self.raw:
            images = build.train.denormalize(images)
        return images.detach().float(), targets.detach().float()

    def materialize(self) -> SynBatch:
        return SynBatch(images=self.images, labels=None, targets=self.targets)

    def param_groups(self) -> list[dict[str, Any]]:
        groups = []
        if self.images.requires_grad:
            groups.append({"name": "images", "params": [self.images]})
        if self.targets.requires_grad:
            groups.append({"name": "targets", "params": [self.targets], "lr_scale": self.config.target_lr_scale})
        return groups

    def pairs_for_budget(self, budget_images: int) -> int:
        """Number of (image, target) pairs whose storage equals ``budget_images`` images' worth of floats."""
        fpi = self.build.info.floats_per_image
        pairs = round(budget_images * fpi / (fpi + self.teacher.dim))
        return max(1, min(pairs, len(self.build.train)))

    def baseline(self, kind: str, budget_images: int, generator: torch.Generator) -> SynBatch:
        """One of :data:`BASELINES` with as many images as this set's storage allows pairs (module doc)."""
        if kind not in self.baselines:
            raise RecipeError(f"unknown baseline {kind!r} for krr_pixels; allowed: {', '.join(self.baselines)}",
                              key="eval.baselines")
        return ssl_baseline_set(self.build, self.teacher, kind, self.pairs_for_budget(budget_images), generator,
                                kmeans_iterations=self.config.kmeans_iterations, raw=self.raw)
