"""Hook implementations of ddcore-dm (entry point ``dm`` in group ``ddcore``)."""

from __future__ import annotations

from ddcore import hookimpl

from ddcore_dm.objective import DistributionMatching, DistributionMatchingConfig


@hookimpl
def ddcore_register_objectives(registry):
    registry.add("dm", DistributionMatching, config=DistributionMatchingConfig)
