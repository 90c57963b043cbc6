"""ddcore plugin ``krr``: registers the KRR-ST components (entry point ``krr = "ddcore_krr.plugin"``)."""

from __future__ import annotations

import ddcore

from ddcore_krr.krr import KRRObjective, KRRObjectiveConfig
from ddcore_krr.networks import ConvNetKRRConfig, build_convnet_krr
from ddcore_krr.parameterization import KRRPixels, KRRPixelsConfig
from ddcore_krr.pool import ModelPool, ModelPoolConfig
from ddcore_krr.transfer import SSLTransfer, SSLTransferConfig


@ddcore.hookimpl
def ddcore_register_backbones(registry):
    registry.add("ConvNetKRR", build_convnet_krr, config=ConvNetKRRConfig)


@ddcore.hookimpl
def ddcore_register_parameterizations(registry):
    registry.add("krr_pixels", KRRPixels, config=KRRPixelsConfig)


@ddcore.hookimpl
def ddcore_register_samplers(registry):
    registry.add("model_pool", ModelPool, config=ModelPoolConfig)


@ddcore.hookimpl
def ddcore_register_objectives(registry):
    registry.add("krr", KRRObjective, config=KRRObjectiveConfig)


@ddcore.hookimpl
def ddcore_register_evaluators(registry):
    registry.add("ssl_transfer", SSLTransfer, config=SSLTransferConfig)
