"""Predefined, deterministic, differentiable views τ_a of an image batch (Boost-SSDD §3.3 and Table 12).

* rotations ``rot90``, ``rot180``, ``rot270``: exact index permutations. ``rot180`` is kornia's exact
  ``kornia.geometry.transform.rot180``; kornia has no exact quarter turn (its ``rotate`` resamples through a
  bilinear grid), so ``rot90``/``rot270`` are ``torch.rot90`` on the spatial dims, in the direction of kornia's
  positive angles (tested against ``kornia.geometry.transform.rotate``).
* flips ``hflip``, ``vflip``: kornia's exact ``hflip`` / ``vflip``.
* any other angle ``rot<degrees>`` (``rot45``, ``rot30``, …): ``kornia.geometry.transform.rotate`` about the
  centre (bilinear, zero padding: the normalised mean), for users who want more predefined views than the
  paper's three; the set ``rotation8`` holds the eight multiples of 45° but the identity.
* jigsaw ``jigsaw_lr``, ``jigsaw_tb``, ``jigsaw_both``: the image cut into four quadrants, left and right halves
  swapped, top and bottom swapped, or both (a roll by half the size; exact for even sizes).
* five-crop ``crop_tl``, ``crop_tr``, ``crop_bl``, ``crop_br``, ``crop_center``: a ``crop x crop`` window (20 of
  32 px in the paper, scaled with the image size) resized back bilinearly.

Named sets: ``rotation`` (the paper's choice, A = 3), ``rotation8`` (A = 7), ``flip`` (A = 2), ``jigsaw`` (A = 3),
``crop`` (A = 5). Every view is linear in the pixels, so gradients flow through it to the parameterization.
"""

from __future__ import annotations

from typing import Callable

import kornia.geometry.transform as KT
import torch
import torch.nn.functional as F

View = Callable[[torch.Tensor], torch.Tensor]

SETS: dict[str, tuple[str, ...]] = {
    "rotation": ("rot90", "rot180", "rot270"),
    "rotation8": ("rot45", "rot90", "rot135", "rot180", "rot225", "rot270", "rot315"),
    "flip": ("hflip", "vflip"),
    "jigsaw": ("jigsaw_lr", "jigsaw_tb", "jigsaw_both"),
    "crop": ("crop_tl", "crop_tr", "crop_bl", "crop_br", "crop_center"),
}
VIEW_NAMES: tuple[str, ...] = tuple(dict.fromkeys(n for names in SETS.values() for n in names))


def _rot(k: int) -> View:
    def rotate(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rotation by 90 degrees needs square images, got {x.shape[-2]}x{x.shape[-1]}")
        return torch.rot90(x, k, dims=(-2, -1))

    return rotate


def _rot_angle(degrees: float) -> View:
    def rotate(x: torch.Tensor) -> torch.Tensor:
        angle = torch.full((x.shape[0],), float(degrees), dtype=x.dtype, device=x.device)
        return KT.rotate(x, angle, mode="bilinear", padding_mode="zeros", align_corners=True)

    return rotate


def rotation_degrees(name: str) -> int | None:
    """``rot<degrees>`` → the angle in (0, 360), else ``None``."""
    if name.startswith("rot") and name[3:].isdigit() and 0 < int(name[3:]) < 360:
        return int(name[3:])
    return None


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
            if view not in VIEW_NAMES and rotation_degrees(view) is None:
                raise ValueError(f"unknown view {view!r}; expected a set ({', '.join(SETS)}), one of "
                                 f"{', '.join(VIEW_NAMES)} or rot<degrees>")
            if view in out:
                raise ValueError(f"view {view!r} is listed twice")
            out.append(view)
    return tuple(out)


def make_view(name: str, crop: int = 0) -> View:
    if name == "rot180":
        return KT.rot180
    if name in ("rot90", "rot270"):
        return _rot(1 if name == "rot90" else 3)
    if name in ("hflip", "vflip"):
        return KT.hflip if name == "hflip" else KT.vflip
    if rotation_degrees(name) is not None:
        return _rot_angle(rotation_degrees(name))
    if name.startswith("jigsaw_"):
        kind = name[len("jigsaw_"):]
        return _jigsaw(rows=kind in ("tb", "both"), cols=kind in ("lr", "both"))
    if name.startswith("crop_"):
        return _crop(name[len("crop_"):], crop)
    raise ValueError(f"unknown view {name!r}")


def apply_views(x: torch.Tensor, views: list[View]) -> torch.Tensor:
    """``[x; τ_1(x); ...; τ_A(x)]``: view-major, ``[(A+1) n, C, H, W]``."""
    return torch.cat([x, *[v(x) for v in views]])
