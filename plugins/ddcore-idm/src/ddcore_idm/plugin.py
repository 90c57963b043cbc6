"""Hook implementations of ddcore-idm (entry point ``idm`` in group ``ddcore``)."""

from __future__ import annotations

from ddcore import hookimpl

from ddcore_idm.class_aware_ce import ClassAwareCE, ClassAwareCEConfig
from ddcore_idm.class_sequential import ClassSequentialSGD, ClassSequentialSGDConfig
from ddcore_idm.mosaic import MosaicConfig, MosaicInit
from ddcore_idm.partition import PartitionConfig, PartitionExpansion
from ddcore_idm.queue import ModelQueue, ModelQueueConfig

#: The model queue at test scale (ddcore's plugin kit smoke tests).
TINY_QUEUE = {"initial_nets": 1, "fetch_net_num": 1, "model_train_steps": 1, "trained_bs": 8}


@hookimpl
def ddcore_register_augmentations(registry):
    registry.add("partition", PartitionExpansion, config=PartitionConfig)


@hookimpl
def ddcore_register_inits(registry):
    registry.add("mosaic", MosaicInit, config=MosaicConfig)


@hookimpl
def ddcore_register_samplers(registry):
    registry.add("model_queue", ModelQueue, config=ModelQueueConfig, smoke={"options": TINY_QUEUE})


@hookimpl
def ddcore_register_objectives(registry):
    # weighted by the sampled net's running accuracy, which only the queue reports
    registry.add("class_aware_ce", ClassAwareCE, config=ClassAwareCEConfig,
                 smoke={"recipe": {"sampler": {"name": "model_queue", **TINY_QUEUE, "trained_bs": 16}}})


@hookimpl
def ddcore_register_optimizers(registry):
    registry.add("class_sequential_sgd", ClassSequentialSGD, config=ClassSequentialSGDConfig)
