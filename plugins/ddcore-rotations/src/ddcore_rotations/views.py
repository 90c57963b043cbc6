"""Predefined, deterministic, differentiable views τ_a of an image batch (Boost-SSDD §3.3 and Table 12).

* rotations ``rot90``, ``rot180``, ``rot270``: ``torch.rot90`` on the spatial dims — an exact index permutation
  (kornia offers exact ``rot180``/``hflip``/``vflip`` but its 90° ``rotate`` resamples through a bilinear grid,
  which is not exact; ``rot180`` here equals ``kornia.geometry.transform.rot180`` bit for bit, tested).
* jigsaw ``jigsaw_lr``, ``jigsaw_tb``, ``jigsaw_both``: the image cut into four quadrants, left and right halves
  swapped, top and bottom swapped, or both (a roll by half the size; exact for even sizes).
* five-crop ``crop_tl``, ``crop_tr``, ``crop_bl``, ``crop_br``, ``crop_center``: a ``crop x crop`` window (20 of
  32 px in the paper, scaled with the image size) resized back bilinearly.

Named sets: ``rotation`` (the paper's choice, A = 3), ``jigsaw`` (A = 3), ``crop`` (A = 5). Every view is linear
in the pixels, so gradients flow through it to the parameterization.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

View = Callable[[torch.Tensor], torch.Tensor]

SETS: dict[str, tuple[str, ...]] = {
    "rotation": ("rot90", "rot180", "rot270"),
    "jigsaw": ("jigsaw_lr", "jigsaw_tb", "jigsaw_both"),
    "crop": ("crop_tl", "crop_tr", "crop_bl", "crop_br", "crop_center"),
}
VIEW_NAMES: tuple[str, ...] = tuple(n for names in SETS.values() for n in names)


def _rot(k: int) -> View:
    def rotate(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rotation by 90 degrees needs square images, got {x.shape[-2]}x{x.shape[-1]}")
        return torch.rot90(x, k, dims=(-2, -1))

    return rotate


def _jigsaw(rows: bool, cols: bool) -> View:
    def swap(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (rows and h % 2) or (cols and w % 2):
            raise ValueError(f"jigsaw halves need even image sizes, got {h}x{w}")
        shifts, dims = [], []
        if rows:
            shifts.append(h // 2)
            dims.append(-2)
        if cols:
            shifts.append(w // 2)
            dims.append(-1)
        return torch.roll(x, shifts=tuple(shifts), dims=tuple(dims))

    return swap


def crop_size_for(height: int, crop: int = 0) -> int:
    """The crop side: ``crop`` when given, else the paper's 20/32 of the image side."""
    return crop if crop > 0 else max(1, round(height * 20 / 32))


def _crop(where: str, crop: int) -> View:
    def crop_resize(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        c = crop_size_for(h, crop)
        if c > min(h, w):
            raise ValueError(f"crop size {c} exceeds the image size {h}x{w}")
        top = {"tl": 0, "tr": 0, "bl": h - c, "br": h - c, "center": (h - c) // 2}[where]
        left = {"tl": 0, "tr": w - c, "bl": 0, "br": w - c, "center": (w - c) // 2}[where]
        window = x[..., top:top + c, left:left + c]
        return F.interpolate(window, size=(h, w), mode="bilinear", align_corners=False)

    return crop_resize


def expand_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Set names (``rotation``, ``jigsaw``, ``crop``) replaced by their views; order kept, duplicates refused."""
    out: list[str] = []
    for name in names:
        for view in SETS.get(name, (name,)):
            if view not in VIEW_NAMES:
                raise ValueError(f"unknown view {view!r}; expected a set ({', '.join(SETS)}) or one of "
                                 f"{', '.join(VIEW_NAMES)}")
            if view in out:
                raise ValueError(f"view {view!r} is listed twice")
            out.append(view)
    return tuple(out)


def make_view(name: str, crop: int = 0) -> View:
    if name.startswith("rot"):
        return _rot({"rot90": 1, "rot180": 2, "rot270": 3}[name])
    if name.startswith("jigsaw_"):
        kind = name[len("jigsaw_"):]
        return _jigsaw(rows=kind in ("tb", "both"), cols=kind in ("lr", "both"))
    if name.startswith("crop_"):
        return _crop(name[len("crop_"):], crop)
    raise ValueError(f"unknown view {name!r}")


def apply_views(x: torch.Tensor, views: list[View]) -> torch.Tensor:
    """``[x; τ_1(x); ...; τ_A(x)]``: view-major, ``[(A+1) n, C, H, W]``."""
    return torch.cat([x, *[v(x) for v in views]])
