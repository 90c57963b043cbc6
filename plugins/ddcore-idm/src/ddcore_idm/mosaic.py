"""IDM's real mosaic initialisation (uitrbn/IDM IDM_cifar10.py l.142-145, ``--init real --aug``).

Every synthetic image is a ``grid x grid`` mosaic of real images of its class, each bilinearly downscaled by
``1/grid`` (``F.upsample(scale_factor=0.5, mode='bilinear')``). Combined with the partition expansion, each
quadrant starts as one whole (down-scaled) real image, so the expanded set starts as 4 x ipc real images.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from ddcore.components import Init
from ddcore.config import option, positive
from ddcore.errors import RecipeError


def tile_mosaic(cells: torch.Tensor, grid: int) -> torch.Tensor:
    """``[N * grid**2, C, h, w]`` cells (image-major, column-major inside an image) -> ``[N, C, h*grid, w*grid]``.

    The inverse layout of :func:`ddcore_idm.partition.partition_expand` (before its upsampling).
    """
    m, c, h, w = cells.shape
    n = m // (grid * grid)
    x = cells.reshape(n, grid, grid, c, h, w)  # n, col, row, c, h, w
    return x.permute(0, 3, 2, 4, 1, 5).reshape(n, c, grid * h, grid * w)


@attrs.define(frozen=True, kw_only=True)
class MosaicConfig:
    """Options of the ``mosaic`` init."""

    grid: int = option(2, "Cells per side (2: four real images per synthetic image, IDM's setting).",
                       validator=positive)


class MosaicInit(Init):
    """Each synthetic image = a 2x2 mosaic of 4 different real images of its class, each downscaled x0.5 (bilinear).

    Deviation from the code, on purpose: the official init draws the four quadrants with four independent
    ``get_images(c, ipc)`` calls, so the same real image can land in two quadrants; here the ``4 x ipc`` images of
    a class are drawn without replacement (all different whenever the class has that many images).
    """

    def __call__(self, counts: list[int], generator: torch.Generator) -> torch.Tensor:
        g = self.config.grid
        info = self.build.info
        if info.height % g or info.width % g:
            raise RecipeError(f"mosaic grid {g} does not divide the image size {info.height}x{info.width}",
                              key="synset.init.grid")
        train = self.build.train
        idx = train.random_indices_per_class([n * g * g for n in counts], generator)
        real = train.normalize(train.pixels(idx)).float()  # class-major, [sum(counts) * g*g, C, H, W]
        small = F.interpolate(real, scale_factor=1.0 / g, mode="bilinear", align_corners=False)
        return tile_mosaic(small, g)
