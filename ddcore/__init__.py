"""ddcore: a plugin-extensible framework for dataset distillation.

Public API: the hook marker, the component base classes, the contexts and data carriers (the names below), plus
every module whose dotted path has no ``_``-prefixed part, restricted to the names in its ``__all__``.
``ddcore.testing.check_public_imports`` (and the ``ddcore`` pytest plugin) fail on an import of anything else;
``docs/writing-plugins.md`` lists the surface, generated from these ``__all__`` lists.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations: ``@ddcore.hookimpl def ddcore_register_objectives(registry): ...``
hookimpl = pluggy.HookimplMarker("ddcore")

from ddcore.components import (  # noqa: E402
    Augmentation,
    Backbone,
    BackboneOutput,
    Component,
    DataSource,
    EvaluationResult,
    Evaluator,
    Expansion,
    Init,
    Objective,
    Parameterization,
    Sampler,
    SiameseAugmentation,
    SynOptimizer,
)
from ddcore.config import NoConfig, option  # noqa: E402
from ddcore.context import BuildContext, StepContext, derive_seed  # noqa: E402
from ddcore.errors import DataError, PluginError, RecipeError, UserError  # noqa: E402
from ddcore.types import DatasetInfo, RealBatch, SynBatch  # noqa: E402
from ddcore.synset_io import SynsetDataset, export_synset, load_synset  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
    "Augmentation",
    "Backbone",
    "BackboneOutput",
    "BuildContext",
    "Component",
    "DataError",
    "DataSource",
    "DatasetInfo",
    "EvaluationResult",
    "Evaluator",
    "Expansion",
    "Init",
    "NoConfig",
    "Objective",
    "Parameterization",
    "PluginError",
    "RealBatch",
    "RecipeError",
    "Sampler",
    "SiameseAugmentation",
    "StepContext",
    "SynBatch",
    "SynOptimizer",
    "SynsetDataset",
    "UserError",
    "derive_seed",
    "export_synset",
    "load_synset",
    "option",
]
