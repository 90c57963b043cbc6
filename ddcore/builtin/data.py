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
    # smoke: the kit's tiny configs (ddcore.testing.smoke_test); npz reads mnist under $DDCORE_DATA
    registry.add("npz", NpzSource, config=NpzConfig,
                 smoke={"options": {"path": "mnist", "classes": 3, "train_per_class": 5, "test_per_class": 2}})
    registry.add("digits", DigitsSource, config=DigitsConfig)
    registry.add("torchvision", TorchvisionSource, config=TorchvisionConfig,  # fake idx files, no download
                 smoke={"options": {"dataset": "MNIST", "root": "<tmp>", "download": False},
                        "setup": "ddcore.testing:write_fake_mnist"})
    registry.add("imagefolder", ImageFolderSource, config=ImageFolderConfig,
                 smoke={"options": {"root": "<tmp>"}, "setup": "ddcore.testing:write_fake_imagefolder"})
