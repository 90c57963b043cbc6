"""Hook implementations of ddcore-iid (entry point ``iid`` in group ``ddcore``)."""

from __future__ import annotations

from ddcore import hookimpl

from ddcore_iid.centralization import ClassCentralization, ClassCentralizationConfig
from ddcore_iid.covariance import CovarianceMatching, CovarianceMatchingConfig


@hookimpl
def ddcore_register_objectives(registry):
    # needs a pool of pretrained networks: one small ConvNet trained for one epoch
    registry.add("class_centralization", ClassCentralization, config=ClassCentralizationConfig,
                 smoke={"options": {"pool": {"size": 1, "epochs": 1, "batch": 64,
                                             "arch": {"name": "ConvNet", "width": 8, "depth": 2}}}})
    registry.add("covariance_matching", CovarianceMatching, config=CovarianceMatchingConfig)
