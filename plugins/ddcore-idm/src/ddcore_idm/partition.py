"""IDM's partition-and-expansion augmentation (``number_sign_augment``, uitrbn/IDM dc_utils.py:1128).

Every synthetic image is cut into ``factor x factor`` cells; each cell is bilinearly upsampled back to the full
image size, so one stored image yields ``factor**2`` training images with the same label. It is an *expansion*
augmentation: the engine applies it after ``materialize()`` while distilling and before training evaluation
networks, exactly as IDM expands the synthetic set both in the matching step and in ``evaluate_synset``.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from ddcore.components import Expansion
from ddcore.config import option, positive
from ddcore.errors import RecipeError
from ddcore.types import SynBatch


def partition_expand(images: torch.Tensor, factor: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N * factor**2, C, H, W]``: cells of each image, upsampled back (bilinear).

    Image-major order: rows ``[i*f*f:(i+1)*f*f]`` are image ``i``'s cells, column-major over the grid
    (top-left, bottom-left, top-right, bottom-right for factor 2: the official a, b, c, d order).
    """
    n, c, h, w = images.shape
    f = factor
    if h % f or w % f:
        raise RecipeError(f"partition factor {f} does not divide the image size {h}x{w}", key="augment.factor")
    cells = images.reshape(n, c, f, h // f, f, w // f)  # n, c, row, hh, col, ww
    cells = cells.permute(0, 4, 2, 1, 3, 5).reshape(n * f * f, c, h // f, w // f)  # col-major: (col, row)
    # F.upsample(mode='bilinear') in the official code == interpolate(align_corners=False).
    return F.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False)


@attrs.define(frozen=True, kw_only=True)
class PartitionConfig:
    """Options of the ``partition`` expansion."""

    factor: int = option(2, "Cells per side: 2 cuts each image into 4 quadrants (IDM); 3 is the unused x3 variant.",
                         validator=positive)


class PartitionExpansion(Expansion):
    """Partition each synthetic image into factor x factor cells and upsample them back; labels repeat factor**2 times.

    Layout: the output is image-major (each image's cells are consecutive), so a class-major synthetic set stays
    class-major (the official code concatenates quadrant-major, ``[all a, all b, all c, all d]``; the order does
    not change any per-class mean or the evaluation). ``labels``, ``targets`` and ``groups`` are repeated per cell,
    so siamese augmentation still shares parameters per class.
    """

    def __init__(self, config: PartitionConfig, build):
        super().__init__(config, build)
        info = getattr(build, "info", None)
        if info is not None and (info.height % config.factor or info.width % config.factor):
            raise RecipeError(
                f"partition factor {config.factor} does not divide the image size {info.height}x{info.width}",
                key="augment.factor",
            )

    def expand(self, syn: SynBatch) -> SynBatch:
        k = self.config.factor**2

        def rep(t):
            return None if t is None else t.repeat_interleave(k, dim=0)

        return SynBatch(
            images=partition_expand(syn.images, self.config.factor),
            labels=rep(syn.labels),
            targets=rep(syn.targets),
            groups=rep(syn.groups),
        )
