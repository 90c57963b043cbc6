"""Built-in data sources: ``npz``, ``digits``, ``torchvision``, ``imagefolder`` (see :mod:`ddcore.data`)."""

from __future__ import annotations

import ddcore
from ddcore.data.digits import DigitsConfig, DigitsSource
from ddcore.data.imagefolder import ImageFolderConfig, ImageFolderSource
from ddcore.data.npz import NpzConfig, NpzSource
from ddcore.data.torchvision_source import TorchvisionConfig, TorchvisionSource

__all__ = []


@ddcore.hookimpl
def ddcore_register_data_sources(registry):
    registry.add("npz", NpzSource, config=NpzConfig)
    registry.add("digits", DigitsSource, config=DigitsConfig)
    registry.add("torchvision", TorchvisionSource, config=TorchvisionConfig)
    registry.add("imagefolder", ImageFolderSource, config=ImageFolderConfig)
