"""Hook implementations of ddcore-dcc (entry point ``dcc`` in group ``ddcore``)."""

from __future__ import annotations

import ddcore

from ddcore_dcc.objective import GradientMatch, GradientMatchConfig
from ddcore_dcc.sampler import InnerLoop, InnerLoopConfig

#: The inner loop at test scale (ddcore's plugin kit smoke tests).
TINY_INNER_LOOP = {"updates_per_net": 1, "train_epochs": 1, "batch_train": 8, "bn_per_class": 2}


@ddcore.hookimpl
def ddcore_register_samplers(registry):
    registry.add("inner_loop", InnerLoop, config=InnerLoopConfig, smoke={"options": TINY_INNER_LOOP})


@ddcore.hookimpl
def ddcore_register_objectives(registry):
    # differentiates the loss w.r.t. the network weights: trainable networks from the inner loop
    registry.add("gradient_match", GradientMatch, config=GradientMatchConfig,
                 smoke={"recipe": {"sampler": {"name": "inner_loop", **TINY_INNER_LOOP}}})
