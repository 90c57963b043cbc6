"""ddcore: a plugin-extensible framework for dataset distillation.

Public API: the hook markers, the component base classes, the contexts and data carriers. Plugins touch the
core only through these names (and the hook specs in :mod:`ddcore.hookspecs`).
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
    Evaluator,
    Init,
    Objective,
    Parameterization,
    Sampler,
    SynOptimizer,
)
from ddcore.config import NoConfig, option  # noqa: E402
from ddcore.context import BuildContext, StepContext  # noqa: E402
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
    "Evaluator",
    "Init",
    "NoConfig",
    "Objective",
    "Parameterization",
    "PluginError",
    "RealBatch",
    "RecipeError",
    "Sampler",
    "StepContext",
    "SynBatch",
    "SynOptimizer",
    "SynsetDataset",
    "UserError",
    "export_synset",
    "load_synset",
    "option",
]
