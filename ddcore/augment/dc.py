"""DC's evaluation-time augmentation (``utils.augment`` of VICO-UoE/DatasetCondensation), vectorised.

DC (without DSA) trains its evaluation networks on MNIST with the strategy ``crop_scale_rotate`` and on a BN
ConvNet with ``crop_noise``; every image gets **one** operation drawn uniformly from the strategy:

- ``crop``: pad by ``crop`` px with the per-channel batch mean, take a window at offsets drawn from
  ``{0, …, 2·crop−1}`` (so shifts ``−crop … crop−1``);
- ``scale``: resize to ``(h, w) = int(U(1−s, 1+s)·H)`` each (nearest), centre, zero-pad/crop back to ``H×W``;
- ``rotate``: an integer angle in ``[−rotate, rotate)`` degrees about the centre, outside filled with the mean
  of the channel means;
- ``noise``: add ``noise · N(0, 1)``.

Deviation, for speed: rotation samples bilinearly (``grid_sample``), where the reference calls
``scipy.ndimage.rotate`` (cubic spline); the other operations are exact up to the nearest-neighbour rounding of
``F.interpolate``. One call processes the whole batch on its device; randomness comes from ``generator``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["DC_OPS", "DCAugment", "dc_augment", "parse_strategy"]

DC_OPS = ("crop", "scale", "rotate", "noise")


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """``"crop_scale_rotate"`` -> ``("crop", "scale", "rotate")``; raises ValueError for unknown operations."""
    ops = tuple(t for t in strategy.split("_") if t)
    bad = [t for t in ops if t not in DC_OPS]
    if bad or not ops:
        raise ValueError(f"expected '_'-joined operations from {', '.join(DC_OPS)}, got {strategy!r}")
    return ops


def _crop(x: torch.Tensor, crop: int, g: Optional[torch.Generator]) -> torch.Tensor:
    n, c, h, w = x.shape
    mean = x.mean(dim=(0, 2, 3))
    padded = mean.view(1, c, 1, 1).expand(n, c, h + 2 * crop, w + 2 * crop).clone()
    padded[:, :, crop:crop + h, crop:crop + w] = x
    r = torch.randint(0, 2 * crop, (n,), generator=g, device=x.device)
    col = torch.randint(0, 2 * crop, (n,), generator=g, device=x.device)
    rows = (r[:, None] + torch.arange(h, device=x.device))  # [n, h]
    cols = (col[:, None] + torch.arange(w, device=x.device))  # [n, w]
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # [n, h, w, c]
    return out.permute(0, 3, 1, 2).contiguous()


def _scale(x: torch.Tensor, scale: float, g: Optional[torch.Generator]) -> torch.Tensor:
    n, c, h, w = x.shape
    u = torch.rand(n, 2, generator=g, device=x.device) * (2 * scale) + (1 - scale)
    sizes = (u * h).floor().long().clamp(min=1)  # the reference scales both sides by the height
    # nearest resize of an H-row image to `hs` rows reads row floor(i * H / hs); centring on a canvas of side
    # max(hs, ws, H, W) and cropping back the H x W centre maps output row y to resized row y - off.
    hs, ws = sizes[:, 0], sizes[:, 1]
    side = torch.maximum(torch.maximum(hs, ws), torch.full_like(hs, max(h, w)))
    off_r = (side - hs) // 2 - (side - h) // 2
    off_c = (side - ws) // 2 - (side - w) // 2
    ys = torch.arange(h, device=x.device)[None, :] - off_r[:, None]  # [n, h]
    xs = torch.arange(w, device=x.device)[None, :] - off_c[:, None]  # [n, w]
    valid = ((ys >= 0) & (ys < hs[:, None]))[:, :, None] & ((xs >= 0) & (xs < ws[:, None]))[:, None, :]
    src_y = (torch.minimum(ys.clamp(min=0), hs[:, None] - 1) * h // hs[:, None]).clamp(max=h - 1)
    src_x = (torch.minimum(xs.clamp(min=0), ws[:, None] - 1) * w // ws[:, None]).clamp(max=w - 1)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = x[idx_n, :, src_y[:, :, None], src_x[:, None, :]]  # [n, h, w, c]
    return out.permute(0, 3, 1, 2) * valid[:, None].to(x.dtype)


def _rotate(x: torch.Tensor, rotate: int, g: Optional[torch.Generator]) -> torch.Tensor:
    n, c, h, w = x.shape
    fill = x.mean(dim=(0, 2, 3)).mean()
    angles = torch.randint(-rotate, rotate, (n,), generator=g, device=x.device).to(x.dtype) * (math.pi / 180)
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # rotate (x - fill) with zero padding, so the area rotated in from outside reads `fill`
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def dc_augment(x: torch.Tensor, strategy: str = "crop_scale_rotate", *, crop: int = 4, scale: float = 0.2,
               rotate: int = 45, noise: float = 0.001, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Apply one DC operation per image (drawn uniformly from ``strategy``); returns a new tensor."""
    ops = parse_strategy(strategy)
    n = x.shape[0]
    choice = torch.randint(0, len(ops), (n,), generator=generator, device=x.device)
    out = x.clone()
    for k, op in enumerate(ops):
        sel = (choice == k).nonzero().flatten()
        if sel.numel() == 0:
            continue
        part = x.index_select(0, sel)
        if op == "crop":
            part = _crop(part, crop, generator)
        elif op == "scale":
            part = _scale(part, scale, generator)
        elif op == "rotate":
            part = _rotate(part, rotate, generator)
        else:
            part = part + noise * torch.randn(part.shape, generator=generator, device=x.device, dtype=x.dtype)
        out.index_copy_(0, sel, part)
    return out


class DCAugment:
    """Module-style wrapper: ``DCAugment("crop_scale_rotate")(x, generator)`` (DC's default magnitudes)."""

    def __init__(self, strategy: str = "crop_scale_rotate", *, crop: int = 4, scale: float = 0.2, rotate: int = 45,
                 noise: float = 0.001):
        self.ops = parse_strategy(strategy)
        self.strategy, self.crop, self.scale, self.rotate, self.noise = strategy, crop, scale, rotate, noise

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return dc_augment(x, self.strategy, crop=self.crop, scale=self.scale, rotate=self.rotate, noise=self.noise,
                          generator=generator)
