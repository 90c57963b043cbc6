"""Test helpers for this plugin and for plugins built on it: a tiny build context with a tiny teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddcore.testing import make_build_context, tiny_dataset, tiny_recipe

from ddcore_krr.krr import KRRObjective, KRRObjectiveConfig
from ddcore_krr.parameterization import KRRPixels, KRRPixelsConfig
from ddcore_krr.pool import ModelPool, ModelPoolConfig
from ddcore_krr.teacher import TeacherConfig

#: A teacher small enough to train in well under a second on 2 CPU cores.
TINY_TEACHER = TeacherConfig(base_width=4, epochs=1, batch_size=8, projector=(16, 16), warmup_epochs=0)


def tiny_krr_build(cache_dir: Path, *, num: int = 6, pool: ModelPoolConfig = ModelPoolConfig(num_models=2, max_steps=3),
                   seed: int = 0) -> tuple[Any, KRRPixels, ModelPool, KRRObjective]:
    """``(build, parameterization, pool, objective)`` over 30 random 3×8×8 images with a tiny teacher."""
    recipe = tiny_recipe(plugins=["ddcore-krr"], backbone={"name": "ConvNetKRR", "channels": [8, 16]})
    build = make_build_context(recipe, data=tiny_dataset(num_classes=3, per_class=10, shape=(3, 8, 8)),
                               cache_dir=cache_dir, seed=seed)
    param = KRRPixels(KRRPixelsConfig(num=num, teacher=TINY_TEACHER), build)
    build.parameterization = param  # as the engine does once the parameterization is built
    sampler = ModelPool(pool, build)
    objective = KRRObjective(KRRObjectiveConfig(real_augment="none"), build)
    return build, param, sampler, objective
