"""Built-in parameterization ``pixels`` and initialisers ``real`` and ``noise``."""

from __future__ import annotations

import attrs
import torch
from torch import nn

import ddcore
from ddcore.components import Init, Parameterization
from ddcore.config import ComponentRef, NoConfig, option, positive
from ddcore.types import SynBatch

__all__ = ["NoiseInit", "Pixels", "PixelsConfig", "RealInit"]


@attrs.define(frozen=True, kw_only=True)
class PixelsConfig:
    ipc: int = option(10, "Synthetic images per class.", validator=positive)
    init: ComponentRef = option(ComponentRef("real"), "Initialiser (kind 'init'): 'real', 'noise', or a plugin's.",
                                 kind="init")


class Pixels(Parameterization):
    """One learnable tensor of images per class (class-major), hard labels ``[0]*ipc + [1]*ipc + ...``."""

    def __init__(self, config: PixelsConfig, build):
        super().__init__(config, build)
        c = build.num_classes
        counts = [config.ipc] * c
        init = build.make_component("init", config.init, key="synset.init")
        with torch.no_grad():
            images = init(counts, build.generator("init")).to(build.device)
        self.images = nn.Parameter(images.clone().contiguous())
        self.register_buffer("labels", torch.arange(c, device=build.device).repeat_interleave(config.ipc))

    def materialize(self) -> SynBatch:
        return SynBatch(images=self.images, labels=self.labels)

    def param_groups(self):
        return [{"name": "images", "params": [self.images]}]

    def storage_floats(self) -> int:
        return self.images.numel()

    def class_index(self, param: torch.Tensor):
        return self.labels if param is self.images else None


class RealInit(Init):
    """Random real images of each class (without replacement), as the DC family's ``init = real``."""

    def __call__(self, counts, generator):
        idx = self.build.train.random_indices_per_class(counts, generator)
        return self.build.train.normalize(self.build.train.pixels(idx))


class NoiseInit(Init):
    """Standard-normal noise in normalised space (the DC family's ``init = noise``)."""

    def __call__(self, counts, generator):
        shape = (sum(counts), *self.build.info.image_shape)
        return torch.randn(shape, generator=generator, device=generator.device)


@ddcore.hookimpl
def ddcore_register_parameterizations(registry):
    registry.add("pixels", Pixels, config=PixelsConfig, smoke={"options": {"ipc": 2}})


@ddcore.hookimpl
def ddcore_register_inits(registry):
    registry.add("real", RealInit, config=NoConfig)
    registry.add("noise", NoiseInit, config=NoConfig)
