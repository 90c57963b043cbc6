"""Built-in sampler ``random_init``: a freshly initialised network every step (or every k steps)."""

from __future__ import annotations

import attrs

import ddcore
from ddcore.components import Sampler
from ddcore.config import option, positive

__all__ = ["RandomInit", "RandomInitConfig"]


@attrs.define(frozen=True, kw_only=True)
class RandomInitConfig:
    every: int = option(1, "Steps between new networks (1 = a fresh network every step, as DM).", validator=positive)
    train_mode: bool = option(True, "Put the network in train mode (BatchNorm uses batch statistics, as DM).")
    frozen: bool = option(True, "Freeze the network's parameters (they are never updated).")


class RandomInit(Sampler):
    """Builds the recipe's ``[backbone]`` with a per-step seed; the net depends only on (seed, step)."""

    def __init__(self, config: RandomInitConfig, build):
        super().__init__(config, build)
        self._key = None
        self._net = None

    def nets(self, step):
        key = step // self.config.every
        if key != self._key:
            net = self.build.make_backbone(seed_key=("random_init", key))
            net.train(self.config.train_mode)
            if self.config.frozen:
                net.requires_grad_(False)
            self._key, self._net = key, net
        return [self._net]


@ddcore.hookimpl
def ddcore_register_samplers(registry):
    registry.add("random_init", RandomInit, config=RandomInitConfig)
