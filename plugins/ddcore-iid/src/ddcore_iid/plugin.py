"""Hook implementations of ddcore-iid (entry point ``iid`` in group ``ddcore``)."""

from __future__ import annotations

from ddcore import hookimpl

from ddcore_iid.centralization import ClassCentralization, ClassCentralizationConfig
from ddcore_iid.covariance import CovarianceMatching, CovarianceMatchingConfig


@hookimpl
def ddcore_register_objectives(registry):
    registry.add("class_centralization", ClassCentralization, config=ClassCentralizationConfig)
    registry.add("covariance_matching", CovarianceMatching, config=CovarianceMatchingConfig)
