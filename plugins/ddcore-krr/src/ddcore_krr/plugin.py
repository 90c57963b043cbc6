"""ddcore plugin ``krr``: registers the KRR-ST components (entry point ``krr = "ddcore_krr.plugin"``)."""

from __future__ import annotations

import ddcore

from ddcore_krr.krr import KRRObjective, KRRObjectiveConfig
from ddcore_krr.networks import (
    ConvNetKRRConfig, MobileNetV2KRRConfig, ResNet10KRRConfig, build_convnet_krr, build_mobilenet_v2_krr,
    build_resnet10_krr,
)
from ddcore_krr.parameterization import KRRPixels, KRRPixelsConfig
from ddcore_krr.pool import ModelPool, ModelPoolConfig
from ddcore_krr.smoke import TINY_KRR_PIXELS
from ddcore_krr.transfer import SSLTransfer, SSLTransferConfig


@ddcore.hookimpl
def ddcore_register_backbones(registry):
    registry.add("ConvNetKRR", build_convnet_krr, config=ConvNetKRRConfig)
    # the official cross-architecture targets that the core lacks (VGG11BN and AlexNetBN are the core's)
    registry.add("ResNet10KRR", build_resnet10_krr, config=ResNet10KRRConfig,
                 doc="Official KRR-ST ResNet10: torchvision BasicBlock x [1,1,1,1], BatchNorm, 3x3 stem, 512-d.")
    registry.add("MobileNetV2KRR", build_mobilenet_v2_krr, config=MobileNetV2KRRConfig,
                 doc="Official KRR-ST MobileNetV2 for small images (torchvision's, stride-1 stem, t = 2), 1280-d.")


@ddcore.hookimpl
def ddcore_register_parameterizations(registry):
    registry.add("krr_pixels", KRRPixels, config=KRRPixelsConfig, smoke={"options": TINY_KRR_PIXELS})


@ddcore.hookimpl
def ddcore_register_samplers(registry):
    # the pool trains its models online on the synthetic (image, target) pairs of krr_pixels
    registry.add("model_pool", ModelPool, config=ModelPoolConfig,
                 smoke={"options": {"num_models": 1, "max_steps": 1},
                        "recipe": {"synset": {"name": "krr_pixels", **TINY_KRR_PIXELS}}})


@ddcore.hookimpl
def ddcore_register_objectives(registry):
    # target representations (krr_pixels with a tiny teacher), its pool sampler and uniform real batches; digits
    # as RGB because the teacher's SSL augmentations (colour jitter) need three channels
    registry.add("krr", KRRObjective, config=KRRObjectiveConfig, smoke={
        "options": {"real_augment": "none"},
        "recipe": {"data": {"name": "digits", "channels": 3, "train_per_class": 10, "test_per_class": 2},
                   "synset": {"name": "krr_pixels", **TINY_KRR_PIXELS, "num": 10},
                   "sampler": {"name": "model_pool", "num_models": 1, "max_steps": 1},
                   "backbone": {"name": "ConvNetKRR", "channels": [8, 16]},
                   "real": {"sampling": "uniform", "batch": 32}}})


@ddcore.hookimpl
def ddcore_register_evaluators(registry):
    registry.add("ssl_transfer", SSLTransfer, config=SSLTransferConfig, smoke={
        "options": {"num_runs": 1, "pretrain_epochs": 1, "pretrain_batch_size": 8, "test_batch_size": 64,
                    "targets": [{"name": "source", "protocol": "linear", "iterations": 2, "batch_size": 8}]},
        "targets": 16})
