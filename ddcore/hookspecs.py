"""Hook specifications of ddcore.

A plugin is a module (usually shipped in its own distribution and listed under the ``ddcore`` entry-point
group) with functions decorated by :data:`ddcore.hookimpl` whose names match the specs below. An
implementation may accept any subset of a spec's parameters (pluggy's opt-in arguments), so new parameters
can be added to a spec without breaking plugins. All hooks are called with keyword arguments.

Hooks are called at build time and at the engine's callback points, never per class inside the hot loop.
The compatibility promise (``docs/writing-plugins.md``, "Versioning"): within a ``0.x`` minor version (and, from
1.0, within a major version) specs only gain parameters; none is removed or renamed and return contracts do not
change. A spec or parameter that must go is first marked with :func:`deprecated` (pluggy's ``warn_on_impl``), so
every plugin implementing it gets a :class:`PluginDeprecationWarning` for at least one minor version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import pluggy

if TYPE_CHECKING:
    from ddcore.context import BuildContext, StepContext
    from ddcore.engine import Run
    from ddcore.registry import KindRegistry

__all__ = [
    "PluginDeprecationWarning", "deprecated", "hookspec", "ddcore_register_data_sources",
    "ddcore_register_backbones", "ddcore_register_parameterizations", "ddcore_register_inits",
    "ddcore_register_augmentations", "ddcore_register_samplers", "ddcore_register_objectives",
    "ddcore_register_optimizers", "ddcore_register_evaluators", "ddcore_register_recipe_tables",
    "ddcore_run_started", "ddcore_step_end", "ddcore_metrics", "ddcore_evaluated", "ddcore_run_finished"
]

hookspec = pluggy.HookspecMarker("ddcore")


class PluginDeprecationWarning(FutureWarning):
    """A plugin implements a hook (or a hook parameter) that a later minor version of ddcore removes.

    A ``FutureWarning``, so Python shows it by default: the plugin's users see it, not only its test suite.
    """


def deprecated(reason: str, *, removal: str, args: Optional[dict[str, str]] = None):
    """Mark a hook spec deprecated: every plugin implementing it is warned once, at registration.

    ``args`` maps deprecated *parameter* names to their reason instead (the hook stays). This is the first step of
    the policy in ``docs/writing-plugins.md``: warn for at least one minor version, remove in ``removal``.
    """
    if args:
        return hookspec(warn_on_impl_args={
            name: PluginDeprecationWarning(f"hook parameter '{name}' is deprecated and goes in ddcore {removal}: "
                                           f"{why}") for name, why in args.items()})
    return hookspec(warn_on_impl=PluginDeprecationWarning(f"this hook is deprecated and goes in ddcore {removal}: "
                                                          f"{reason}"))


# ---------------------------------------------------------------------------------------------------
# Registration hooks: called once, when the plugin host is created, for every registered plugin.
# Each receives a registry bound to one component kind and to the calling plugin (so duplicate names can
# be reported with both distributions). Return values are ignored.
# ---------------------------------------------------------------------------------------------------


@hookspec
def ddcore_register_data_sources(registry: "KindRegistry") -> None:
    """Register data sources (recipe table ``[data]``).

    A data source factory is called as ``factory(config, build=None)`` and returns a
    :class:`ddcore.components.DataSource`: ``info()`` and ``load(split)`` giving uint8 ``[N, C, H, W]`` images
    and int64 labels.

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, factory, config=ConfigClass)``.
    """


@hookspec
def ddcore_register_backbones(registry: "KindRegistry") -> None:
    """Register network architectures (recipe ``[backbone]``, evaluator ``models``, sampler options).

    A backbone factory is called as ``factory(config, *, info, num_classes)`` with the dataset's
    :class:`ddcore.types.DatasetInfo` and returns a :class:`ddcore.components.Backbone` (an ``nn.Module``
    with ``forward_all(x) -> BackboneOutput``, ``forward`` and ``embed``).

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, factory, config=ConfigClass)``.
    """


@hookspec
def ddcore_register_parameterizations(registry: "KindRegistry") -> None:
    """Register synthetic-set parameterizations (recipe ``[synset]``).

    Factory: ``factory(config, build)`` → :class:`ddcore.components.Parameterization`.

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, factory, config=ConfigClass)``.
    """


@hookspec
def ddcore_register_inits(registry: "KindRegistry") -> None:
    """Register initialisers of per-class synthetic images (``synset.init``: ``real``, ``noise``, …).

    Factory: ``factory(config, build)`` → :class:`ddcore.components.Init`, called with per-class counts
    and a generator, returning normalised class-major images.

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, factory, config=ConfigClass)``.
    """


@hookspec
def ddcore_register_augmentations(registry: "KindRegistry") -> None:
    """Register augmentations (recipe ``[[augment]]``), siamese (DSA) or expansions (IDM partition).

    Factory: ``factory(config, build)`` → :class:`ddcore.components.Augmentation`.

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, factory, config=ConfigClass)``.
    """


@hookspec
def ddcore_register_samplers(registry: "KindRegistry") -> None:
    """Register samplers, the sources of each step's networks (recipe ``[sampler]``).

    Factory: ``factory(config, build)`` → :class:`ddcore.components.Sampler`.

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, factory, config=ConfigClass)``.
    """


@hookspec
def ddcore_register_objectives(registry: "KindRegistry") -> None:
    """Register objective terms (recipe ``[[objective]]``, each with a ``weight``).

    Factory: ``factory(config, build)`` → :class:`ddcore.components.Objective`, called per step with the
    :class:`ddcore.context.StepContext` and returning a scalar loss tensor.

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, factory, config=ConfigClass)``.
    """


@hookspec
def ddcore_register_optimizers(registry: "KindRegistry") -> None:
    """Register optimisers of the synthetic parameters (recipe ``[optimizer]``).

    Factory: ``factory(config, build, *, param_groups, parameterization, total_steps)`` →
    :class:`ddcore.components.SynOptimizer`.

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, factory, config=ConfigClass)``.
    """


@hookspec
def ddcore_register_evaluators(registry: "KindRegistry") -> None:
    """Register evaluators of synthetic sets (recipe ``[eval]``).

    Factory: ``factory(config, build)`` → :class:`ddcore.components.Evaluator`.

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, factory, config=ConfigClass)``.
    """


@hookspec
def ddcore_register_recipe_tables(registry: "KindRegistry") -> None:
    """Register top-level recipe tables that a plugin owns (e.g. ``[track]`` of ddcore-track).

    A plugin whose settings belong to no component (a tracker, a logger) declares its table here, so that
    ``ddcore recipe check`` validates it with the rest of the recipe (an unknown key or a wrong type there names
    its key path) and the generated recipe reference documents it. The factory is the table's config class::

        registry.add("track", TrackConfig, config=TrackConfig)

    At run time the plugin reads the structured table with :meth:`ddcore.engine.Run.recipe_table` (``None`` when
    the recipe has no such table). A table name must not be one of the core's top-level keys.

    Called once per plugin when the plugin host is created (``PluginHost()``), before any recipe is read.

    :param registry: call ``registry.add(name, ConfigClass, config=ConfigClass)``.
    """


# ---------------------------------------------------------------------------------------------------
# Lifecycle hooks: called by the engine around a run. Useful for loggers and trackers.
# ---------------------------------------------------------------------------------------------------


@hookspec
def ddcore_run_started(run: "Run", build: "BuildContext", start_step: int) -> None:
    """Called once the run's components are built, before the first step (also on resume).

    :param run: the run (recipe, output directory, components).
    :param build: the build context.
    :param start_step: 0 for a fresh run, the checkpoint's step on resume.
    """


@hookspec
def ddcore_step_end(run: "Run", ctx: "StepContext", loss: Any) -> None:
    """Called after every synthetic update (after the sampler's ``after_step``).

    Keep implementations cheap: this is the only hook called per step. ``loss`` is a device tensor; calling
    ``.item()`` on it forces a host sync, so only do it at your own logging interval.

    :param run: the run.
    :param ctx: the step's context (its memoised outputs are still alive).
    :param loss: the total weighted loss (0-d tensor).
    """


@hookspec
def ddcore_metrics(run: "Run", step: int, metrics: dict[str, float]) -> None:
    """Called at every logging interval with host-side scalar metrics (also written to ``metrics.jsonl``).

    :param run: the run.
    :param step: the step the metrics belong to (1-based count of completed steps).
    :param metrics: name → value.
    """


@hookspec
def ddcore_evaluated(run: "Run", step: int, results: dict[str, Any]) -> None:
    """Called after each periodic or final evaluation.

    :param run: the run.
    :param step: completed steps at evaluation time.
    :param results: ``{"synset": evaluator result, "baselines": {kind: result}}``.
    """


@hookspec
def ddcore_run_finished(run: "Run", results: Optional[dict[str, Any]]) -> None:
    """Called once after the last step and the final evaluation, when artefacts are written.

    :param run: the run.
    :param results: the final evaluation results, or ``None`` when evaluation was disabled.
    """
