"""Hook implementations of ddcore-rotations.

Registers the ``pca_augmented`` parameterization and the ``predefined_views`` expansion, and fits the stored
view-target model ("after distillation", Boost-SSDD Algorithm 1 lines 21-23) from the lifecycle hooks:

* ``ddcore_step_end`` of the last step (``ctx.step + 1 == run.iterations``) — before the final evaluation and
  before the artefacts are written, so both see the stored form (bases, coefficients, Q_a);
* ``ddcore_run_started`` when a resumed run has no steps left, and ``ddcore_run_finished`` as a safety net;
  a run resumed with more steps is un-finalized at ``ddcore_run_started`` (the trained C_a^y were kept), so
  resume reproduces the uninterrupted run exactly (tested).
"""

import ddcore

from ddcore_krr.smoke import TINY_TEACHER_OPTIONS
from ddcore_rotations.augmented import PCAAugmented, PCAAugmentedConfig
from ddcore_rotations.expansion import PredefinedViews, PredefinedViewsConfig


def _finalize(run) -> None:
    param = getattr(run, "parameterization", None)
    if isinstance(param, PCAAugmented):
        param.finalize()


@ddcore.hookimpl
def ddcore_register_parameterizations(registry):
    registry.add("pca_augmented", PCAAugmented, config=PCAAugmentedConfig, smoke={
        "options": {"m": 6, "num_bases_x": 2, "num_bases_y": 2, "teacher": TINY_TEACHER_OPTIONS, "approx_epochs": 2}})


@ddcore.hookimpl
def ddcore_register_augmentations(registry):
    registry.add("predefined_views", PredefinedViews, config=PredefinedViewsConfig)


@ddcore.hookimpl
def ddcore_step_end(run, ctx):
    if ctx.step + 1 == run.recipe.run.iterations:
        _finalize(run)


@ddcore.hookimpl
def ddcore_run_started(run, start_step):
    param = getattr(run, "parameterization", None)
    if not isinstance(param, PCAAugmented):
        return
    if start_step >= run.recipe.run.iterations:
        param.finalize()
    else:  # a resumed run that was finalized at its earlier end distils on with the trained C_a^y again
        param.unfinalize()


@ddcore.hookimpl
def ddcore_run_finished(run):
    _finalize(run)
