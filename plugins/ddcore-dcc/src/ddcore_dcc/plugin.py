"""Hook implementations of ddcore-dcc (entry point ``dcc`` in group ``ddcore``)."""

from __future__ import annotations

import ddcore

from ddcore_dcc.objective import GradientMatch, GradientMatchConfig
from ddcore_dcc.sampler import InnerLoop, InnerLoopConfig


@ddcore.hookimpl
def ddcore_register_samplers(registry):
    registry.add("inner_loop", InnerLoop, config=InnerLoopConfig)


@ddcore.hookimpl
def ddcore_register_objectives(registry):
    registry.add("gradient_match", GradientMatch, config=GradientMatchConfig)
