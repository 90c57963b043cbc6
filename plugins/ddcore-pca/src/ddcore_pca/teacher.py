"""The teacher g_φ, borrowed from ddcore-krr (one per run, shared through ``build.shared``).

:class:`TeacherFeatures` is the callable view the PCA parameterization needs: normalised images in,
``[n, d_y]`` features out (no grad, eval-mode BN, batched). The actual network, its Barlow Twins training,
file loading and on-disk caching are ddcore-krr's (:func:`ddcore_krr.teacher.get_teacher`), so a run that mixes
the ``pca`` parameterization with ddcore-krr's KRR objective and evaluators uses one and the same teacher.
"""

from __future__ import annotations

from typing import Any

import torch

from ddcore.types import SynBatch


class TeacherFeatures:
    """``teacher(images) -> features``; ``dim`` = d_y; ``key`` identifies the weights (for caches)."""

    def __init__(self, teacher: Any):
        self.teacher = teacher
        self.dim = int(teacher.dim)
        self.key = str(getattr(teacher, "key", "") or id(teacher))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher.features(images)


def resolve_teacher(build: Any, config: Any) -> TeacherFeatures:
    """The run's ddcore-krr teacher, built from ``config`` (a ``ddcore_krr.teacher.TeacherConfig``) if none exists."""
    from ddcore_krr.teacher import get_teacher

    return TeacherFeatures(get_teacher(build, config))


def ssl_pairs_for_budget(build: Any, dim: int, budget_images: int) -> int:
    """(image, target) pairs whose floats ``m (c h w + d_y)`` equal ``budget_images`` images (ddcore-krr's rule)."""
    fpi = build.info.floats_per_image
    return max(1, min(round(budget_images * fpi / (fpi + dim)), len(build.train)))


def ssl_baseline(build: Any, teacher: TeacherFeatures, kind: str, budget_images: int,
                 generator: torch.Generator, kmeans_iterations: int = 30) -> SynBatch:
    """Boost-SSDD's baselines at equal storage: ddcore-krr's kinds (``random`` / ``kmeans`` real images with teacher
    targets; ``random_labelled`` / ``kmeans_labelled`` labelled real images, KRR-ST Table 1), as many images as
    pairs fit in this set's floats (:func:`ddcore_krr.parameterization.ssl_baseline_set`)."""
    from ddcore.errors import RecipeError
    from ddcore_krr.parameterization import BASELINES, ssl_baseline_set

    if kind not in BASELINES:
        raise RecipeError(f"unknown baseline {kind!r} for the ssl pca parameterization; allowed: "
                          f"{', '.join(BASELINES)}", key="eval.baselines")
    pairs = ssl_pairs_for_budget(build, teacher.dim, budget_images)
    return ssl_baseline_set(build, teacher.teacher, kind, pairs, generator, kmeans_iterations=kmeans_iterations)
