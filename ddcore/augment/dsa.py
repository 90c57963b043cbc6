"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021) as functional ops, a sampler and a component.

Three layers, kornia-style:

* **functional ops** (:func:`brightness`, :func:`saturation`, :func:`contrast`, :func:`crop`, :func:`cutout`,
  :func:`flip`, :func:`scale`, :func:`rotate`): act on normalised float images ``[N, C, H, W]``, take one
  parameter per sample, and are differentiable w.r.t. the images (every op is linear in ``x`` for fixed
  parameters).
* **sampling vs. application**: :func:`sample_params` draws, for each of ``num`` groups (classes), one augmentation
  family (mode ``"single"`` = the official ``aug_mode='S'``) or all of them (``"all"`` = official ``'M'``) with
  that group's magnitudes, using only the given ``torch.Generator``. :func:`apply` replays them: sample ``i``
  gets the parameters of group ``groups[i]``. Calling :func:`apply` with the same parameters on the real and on
  the synthetic batch is the siamese part. :func:`random` is the official ``seed=-1`` path (one family per call,
  magnitudes per sample), used to train evaluation networks.
* :class:`DSAModule` (an ``nn.Module`` wrapping the above) and the component :class:`DSA`.

Faithfulness to ``VICO-UoE/DatasetCondensation`` ``utils.py`` (``DiffAugment`` and ``rand_*``):

* magnitudes: brightness ``x + (u - 0.5) * brightness``; saturation ``(x - mean_c) * (u * saturation) + mean_c``
  (mean over channels, per pixel); contrast ``(x - mean) * (u + contrast) + mean`` (mean over C, H, W);
  scale ``sx, sy ~ U[1/r, r]`` (``sx`` scales the width axis); rotate ``θ ~ U[-r°, r°]`` with
  ``[[cos, -sin, 0], [sin, cos, 0]]``; flip along the width with probability ``prob_flip``; crop = integer
  translation by ``U{-s..s}`` pixels per axis, ``s = int(H * ratio_crop_pad + 0.5)``, zeros shifted in; cutout =
  zero a ``k x k`` square, ``k = int(H * ratio_cutout + 0.5)``, centre ``U{0..H - (k odd)}``, clipped to the image.
* warps use ``F.affine_grid`` + ``F.grid_sample`` (bilinear, zeros padding) with ``align_corners=False`` — the
  defaults the official code ran with (it passes no ``align_corners``). kornia's ``warp_affine`` works in pixel
  coordinates with its own conventions, so it is not used for these two ops.
* the ``color`` family applies brightness, saturation, contrast in that order, each with its own draw.

Deliberate differences: no global RNG (the official code re-seeds ``torch``'s global generator), so the random
streams differ from the official ones (distributions are the same); a group's parameters are shared by every
sample of that group in one call, instead of one parameter set per ``DiffAugment`` call; a strategy may not
repeat a token (the official code would silently raise that family's probability).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Sequence, Union

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.components import SiameseAugmentation
from ddcore.config import OptionValueError, non_negative, option

__all__ = [
    "affine", "apply", "brightness", "color", "contrast", "crop", "crop_shifts", "cutout", "cutout_centers",
    "cutout_size", "Dispatch", "DSA", "DSAConfig", "DSAModule", "DSAParams", "FAMILIES", "flip", "MODES",
    "NONE_STRATEGIES", "parse_strategy", "random", "rotate", "sample_params", "saturation", "scale"
]

#: The strategy tokens, in the order of the official ``AUGMENT_FNS``.
FAMILIES: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
#: Strategy strings meaning "no augmentation" (the official code accepts ``'none'`` and ``'None'``).
NONE_STRATEGIES = ("", "none", "None")
MODES = ("single", "all")
Dispatch = Literal["auto", "gather", "mask"]

# Columns of the one uniform draw per group (see sample_params); the layout is part of the seed contract.
_U_BRIGHTNESS, _U_SATURATION, _U_CONTRAST = 0, 1, 2
_U_CROP = slice(3, 5)  # (rows, cols)
_U_CUTOUT = slice(5, 7)  # (rows, cols)
_U_FLIP = 7
_U_SCALE = slice(8, 10)  # (sx: width, sy: height)
_U_ROTATE = 10
_NUM_UNIFORMS = 11


def parse_strategy(strategy: Union[str, Sequence[str]]) -> tuple[str, ...]:
    """``"color_crop_flip"`` → ``("color", "crop", "flip")``; ``"none"``/``""`` → ``()``.

    :raises ValueError: for an unknown or repeated token (the message lists the allowed tokens).
    """
    if isinstance(strategy, str):
        if strategy in NONE_STRATEGIES:
            return ()
        tokens = tuple(strategy.split("_"))
    else:
        tokens = tuple(strategy)
    allowed = ", ".join(FAMILIES)
    for token in tokens:
        if token not in FAMILIES:
            raise ValueError(
                f"unknown DSA strategy token {token!r} in {strategy!r}; allowed tokens (joined by '_'): {allowed}, "
                f"or 'none'"
            )
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"DSA strategy {strategy!r} repeats a token; allowed tokens (each at most once): {allowed}")
    return tokens


def _check_strategy(instance: Any, attribute: Any, value: str) -> None:
    try:
        parse_strategy(value)
    except ValueError as exc:
        raise OptionValueError(attribute.name, str(exc)) from None


def _in_range(lo: float, hi: float = math.inf):
    """attrs validator: ``lo <= value <= hi`` (names the option in recipe errors)."""

    def check(instance: Any, attribute: Any, value: float) -> None:
        if not lo <= value <= hi:
            bound = f"in [{lo}, {hi}]" if hi != math.inf else f">= {lo}"
            raise OptionValueError(attribute.name, f"expected a number {bound}, got {value!r}")

    return check


@attrs.define(frozen=True, kw_only=True)
class DSAConfig:
    """Options of the ``dsa`` augmentation (defaults = the official ``ParamDiffAug``)."""

    strategy: str = option(
        "color_crop_cutout_flip_scale_rotate",
        "Families joined by '_': color, crop, cutout, flip, scale, rotate ('none' = identity). "
        "The official recipes drop 'flip' for MNIST and SVHN.",
        validator=_check_strategy,
    )
    mode: str = option(
        "single",
        "'single': one family per group (class) and call, chosen uniformly (official 'S'); "
        "'all': every family in strategy order (official 'M').",
        choices=MODES,
    )
    prob_flip: float = option(0.5, "Probability of a horizontal flip.", validator=_in_range(0.0, 1.0))
    ratio_scale: float = option(1.2, "Scale factors per axis are uniform in [1/r, r] (r >= 1).",
                                validator=_in_range(1.0))
    ratio_rotate: float = option(15.0, "Rotation angle uniform in [-r, r] degrees.", validator=non_negative)
    ratio_crop_pad: float = option(
        0.125, "Crop = translation by up to round(r*H) pixels per axis, zeros shifted in.",
        validator=_in_range(0.0, 1.0))
    ratio_cutout: float = option(0.5, "Cutout square side = round(r*H) pixels.", validator=_in_range(0.0, 1.0))
    brightness: float = option(1.0, "Brightness offset uniform in [-b/2, b/2].", validator=non_negative)
    saturation: float = option(2.0, "Saturation factor uniform in [0, s].", validator=non_negative)
    contrast: float = option(0.5, "Contrast factor uniform in [c, c + 1].", validator=non_negative)


# ---------------------------------------------------------------------------------------------------
# Functional ops: x [N, C, H, W] float; one parameter per sample.
# ---------------------------------------------------------------------------------------------------


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def brightness(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``x + offset`` per sample (``offset`` ``[N]``; official range ``[-0.5, 0.5] * brightness``)."""
    return x + _per_sample(offset, x)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's deviation from its channel mean by ``factor`` ``[N]`` (official ``U[0, saturation]``)."""
    f = _per_sample(factor, x)
    # (x - mean) * f + mean, as one fused pass: x * f + mean * (1 - f)
    return torch.addcmul(x.mean(dim=1, keepdim=True) * (1.0 - f), x, f)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its mean over C, H, W by ``factor`` ``[N]`` (``U[c, c + 1]``)."""
    f = _per_sample(factor, x)
    return torch.addcmul(x.mean(dim=(1, 2, 3), keepdim=True) * (1.0 - f), x, f)


def color(x: torch.Tensor, offset: torch.Tensor, sat: torch.Tensor, con: torch.Tensor) -> torch.Tensor:
    """The ``color`` family: brightness, then saturation, then contrast."""
    return contrast(saturation(brightness(x, offset), sat), con)


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror along the width the samples where ``mask`` (bool ``[N]``) is true."""
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp by ``theta`` ``[N, 2, 3]`` in normalised coordinates: bilinear, zeros padding, ``align_corners=False``."""
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def scale(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Sample the image at ``(sx * u, sy * v)``: ``factors`` ``[N, 2]`` = ``(sx, sy)`` (> 1 shrinks the content)."""
    f = factors.to(device=x.device, dtype=x.dtype)
    zero = torch.zeros_like(f[:, 0])
    theta = torch.stack(
        [torch.stack([f[:, 0], zero, zero], dim=1), torch.stack([zero, f[:, 1], zero], dim=1)], dim=1
    )
    return affine(x, theta)


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate by ``angle`` ``[N]`` radians with the official matrix ``[[cos, -sin, 0], [sin, cos, 0]]``."""
    a = angle.to(device=x.device, dtype=x.dtype)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], dim=1), torch.stack([sin, cos, zero], dim=1)], dim=1)
    return affine(x, theta)


def crop(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Integer translation: ``out[n, :, i, j] = x[n, :, i + dy, j + dx]``, zero where that is outside.

    ``shift`` int64 ``[N, 2]`` = ``(dy, dx)``. Same construction as the official ``rand_crop``: pad one pixel of
    zeros and gather clamped indices (one flat gather per sample plane, so no ``[N, C, H, W]`` index tensor).
    """
    n, c, h, w = x.shape
    shift = shift.to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h) + shift[:, :1] + 1).clamp_(0, h + 1)  # [N, H]
    cols = (torch.arange(w, device=x.device).view(1, w) + shift[:, 1:] + 1).clamp_(0, w + 1)  # [N, W]
    flat = (rows.unsqueeze(2) * (w + 2) + cols.unsqueeze(1)).view(n, 1, h * w)
    padded = F.pad(x, (1, 1, 1, 1)).reshape(n, c, (h + 2) * (w + 2))
    return padded.gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)


def cutout(x: torch.Tensor, center: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero a ``size = (kh, kw)`` rectangle whose rows are ``cy - kh//2 ... cy - kh//2 + kh - 1`` (likewise
    columns), clipped to the image; ``center`` int64 ``[N, 2]`` = ``(cy, cx)``."""
    n, _, h, w = x.shape
    center = center.to(x.device)
    lo = center - torch.tensor([size[0] // 2, size[1] // 2], device=x.device)  # [N, 2]
    r = torch.arange(h, device=x.device).view(1, h)
    q = torch.arange(w, device=x.device).view(1, w)
    in_rows = (r >= lo[:, :1]) & (r < lo[:, :1] + size[0])  # [N, H]
    in_cols = (q >= lo[:, 1:]) & (q < lo[:, 1:] + size[1])  # [N, W]
    keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))
    return x * keep.unsqueeze(1).to(x.dtype)


# ---------------------------------------------------------------------------------------------------
# Parameters: drawn per group, replayed per sample.
# ---------------------------------------------------------------------------------------------------


def crop_shifts(u: torch.Tensor, size: tuple[int, int], ratio_crop_pad: float) -> torch.Tensor:
    """Uniforms ``u`` ``[..., 2]`` in [0, 1) → integer shifts ``U{-s..s}`` per axis, ``s = int(dim*ratio + 0.5)``."""
    out = []
    for axis, dim in enumerate(size):
        s = int(dim * ratio_crop_pad + 0.5)
        k = torch.floor(u[..., axis] * (2 * s + 1)).long().clamp_(max=2 * s)
        out.append(k - s)
    return torch.stack(out, dim=-1)


def cutout_size(size: tuple[int, int], ratio_cutout: float) -> tuple[int, int]:
    """Side lengths of the cutout rectangle, ``int(dim * ratio + 0.5)`` per axis (16 x 16 at 32 x 32)."""
    return int(size[0] * ratio_cutout + 0.5), int(size[1] * ratio_cutout + 0.5)


def cutout_centers(u: torch.Tensor, size: tuple[int, int], ratio_cutout: float) -> torch.Tensor:
    """Uniforms ``u`` ``[..., 2]`` → centres ``U{0 .. dim - (k odd)}`` per axis (official ``randint(0, dim + 1 - k%2)``)."""
    ks = cutout_size(size, ratio_cutout)
    out = []
    for axis, (dim, k) in enumerate(zip(size, ks)):
        n = dim + (1 - k % 2)
        out.append(torch.floor(u[..., axis] * n).long().clamp_(max=n - 1))
    return torch.stack(out, dim=-1)


@attrs.define(frozen=True)
class DSAParams:
    """Augmentation parameters of ``num_groups`` groups (one row per group), self-contained for :func:`apply`.

    :ivar families: the strategy's tokens, in application order.
    :ivar active: bool ``[G, len(families)]``: which families group ``g`` applies (one per row in mode
        ``"single"``, all in mode ``"all"``).
    :ivar brightness: ``[G]`` offsets; ``saturation``, ``contrast``: ``[G]`` factors.
    :ivar crop_u, cutout_u: ``[G, 2]`` uniforms in [0, 1), turned into pixels at :func:`apply` time for the
        batch's ``H, W`` (:func:`crop_shifts`, :func:`cutout_centers`), so parameters do not depend on image size.
    :ivar flip: bool ``[G]``; ``scale``: ``[G, 2]`` ``(sx, sy)``; ``rotate``: ``[G]`` radians.
    """

    families: tuple[str, ...]
    active: torch.Tensor
    brightness: torch.Tensor
    saturation: torch.Tensor
    contrast: torch.Tensor
    crop_u: torch.Tensor
    cutout_u: torch.Tensor
    flip: torch.Tensor
    scale: torch.Tensor
    rotate: torch.Tensor
    ratio_crop_pad: float
    ratio_cutout: float

    @property
    def num_groups(self) -> int:
        return int(self.active.shape[0])

    def to(self, device: Union[str, torch.device]) -> "DSAParams":
        return attrs.evolve(self, **{f: getattr(self, f).to(device) for f in _TENSOR_FIELDS})


_TENSOR_FIELDS = ("active", "brightness", "saturation", "contrast", "crop_u", "cutout_u", "flip", "scale", "rotate")


def sample_params(
    strategy: Union[str, Sequence[str]],
    num: int,
    generator: torch.Generator,
    device: Union[str, torch.device, None],
    config: DSAConfig,
    *,
    one_family: bool = False,
) -> DSAParams:
    """Draw parameters for ``num`` groups from ``generator`` only (no global RNG).

    Draw layout (fixed): one ``randint`` of the family per group (one for all groups when ``one_family``), then
    one ``rand(num, 11)`` holding every family's uniforms, whatever the strategy and mode. The draws happen on
    ``generator.device`` and are moved to ``device``.

    :param strategy: tokens string (``"color_crop"``) or sequence; ``config.strategy`` is not consulted.
    :param config: magnitudes and ``mode`` (``"single"``: one family per group; ``"all"``: every family).
    :param one_family: draw a single family shared by all groups (the per-call choice of :func:`random`).
    """
    families = parse_strategy(strategy)
    if config.mode not in MODES:
        raise ValueError(f"unknown DSA mode {config.mode!r}; allowed: {', '.join(MODES)}")
    gen_device = generator.device
    nf = len(families)
    if config.mode == "all" or nf == 0:
        active = torch.ones(num, nf, dtype=torch.bool, device=gen_device)
    else:
        draw = torch.randint(0, nf, (1 if one_family else num,), generator=generator, device=gen_device)
        active = F.one_hot(draw.expand(num), nf).bool()
    u = torch.rand(num, _NUM_UNIFORMS, generator=generator, device=gen_device)
    r = config.ratio_scale
    params = DSAParams(
        families=families,
        active=active,
        brightness=(u[:, _U_BRIGHTNESS] - 0.5) * config.brightness,
        saturation=u[:, _U_SATURATION] * config.saturation,
        contrast=u[:, _U_CONTRAST] + config.contrast,
        crop_u=u[:, _U_CROP],
        cutout_u=u[:, _U_CUTOUT],
        flip=u[:, _U_FLIP] < config.prob_flip,
        scale=u[:, _U_SCALE] * (r - 1.0 / r) + 1.0 / r,
        rotate=(u[:, _U_ROTATE] - 0.5) * 2.0 * math.radians(config.ratio_rotate),
        ratio_crop_pad=float(config.ratio_crop_pad),
        ratio_cutout=float(config.ratio_cutout),
    )
    return params if device is None else params.to(device)


def _family_op(name: str, x: torch.Tensor, p: DSAParams, g: torch.Tensor) -> torch.Tensor:
    """Apply family ``name`` to ``x`` with the parameters of groups ``g`` (int64 ``[len(x)]``)."""
    hw = (int(x.shape[2]), int(x.shape[3]))
    if name == "color":
        return color(x, p.brightness[g], p.saturation[g], p.contrast[g])
    if name == "crop":
        return crop(x, crop_shifts(p.crop_u[g], hw, p.ratio_crop_pad))
    if name == "cutout":
        return cutout(x, cutout_centers(p.cutout_u[g], hw, p.ratio_cutout), cutout_size(hw, p.ratio_cutout))
    if name == "flip":
        return flip(x, p.flip[g])
    if name == "scale":
        return scale(x, p.scale[g])
    if name == "rotate":
        return rotate(x, p.rotate[g])
    raise ValueError(f"unknown DSA family {name!r}")


class _PermuteRows(torch.autograd.Function):
    """``x[perm]`` whose backward is the gather ``grad[inv]`` (``inv`` = inverse permutation) instead of the
    scatter-add autograd uses for ``index_select`` (very slow on CPU). Differentiable twice."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, perm: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(perm, inv)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None]:
        perm, inv = ctx.saved_tensors
        return _PermuteRows.apply(grad, inv, perm), None, None


def _apply_sorted(x: torch.Tensor, params: DSAParams, g: torch.Tensor, family: torch.Tensor) -> torch.Tensor:
    """Gather dispatch for one family per sample: sort the batch by family, run each family on its contiguous
    block, restore the order. Needs the per-family counts on the host (free on CPU)."""
    n = x.shape[0]
    counts = torch.bincount(family, minlength=len(params.families)).tolist()
    if max(counts) == n:  # the whole batch shares one family (e.g. random(), or a single group)
        return _family_op(params.families[int(family[0])], x, params, g)
    perm = torch.argsort(family, stable=True)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n, device=perm.device)
    perm_x, inv_x = perm.to(x.device), inv.to(x.device)
    blocks = _PermuteRows.apply(x, perm_x, inv_x).split(counts)
    group_blocks = g.index_select(0, perm).split(counts)
    out = [
        _family_op(name, xb, params, gb) if count else xb
        for name, count, xb, gb in zip(params.families, counts, blocks, group_blocks)
    ]
    return _PermuteRows.apply(torch.cat(out), inv_x, perm_x)


def apply(x: torch.Tensor, params: DSAParams, groups: torch.Tensor, *, dispatch: Dispatch = "auto") -> torch.Tensor:
    """Augment ``x`` ``[N, C, H, W]``: sample ``i`` gets the parameters of group ``groups[i]`` (int64 ``[N]``).

    Loops over the (at most 6) families, never over groups. ``dispatch``:

    * ``"gather"``: each family runs only on the samples whose group chose it (batch sorted by family, one
      contiguous block per family, order restored; the block sizes are read on the host — free on CPU, a sync
      on accelerators). Mode ``"all"`` simply runs every family on the whole batch.
    * ``"mask"``: every family runs on the whole batch and ``torch.where`` keeps the chosen result (no host
      sync, up to 6x the arithmetic).
    * ``"auto"``: gather on CPU, mask elsewhere. Both give the same values.
    """
    if x.dim() != 4:
        raise ValueError(f"DSA expects images [N, C, H, W], got shape {tuple(x.shape)}")
    if groups.dim() != 1 or groups.shape[0] != x.shape[0]:
        raise ValueError(f"groups must be [N={x.shape[0]}] int64, got shape {tuple(groups.shape)}")
    if dispatch not in ("auto", "gather", "mask"):
        raise ValueError(f"unknown dispatch {dispatch!r}; allowed: auto, gather, mask")
    if not params.families or x.shape[0] == 0:
        return x
    g = groups.to(device=params.active.device, dtype=torch.long)
    sel = params.active.index_select(0, g)  # [N, F]: family f applies to sample i
    if dispatch == "gather" or (dispatch == "auto" and x.device.type == "cpu"):
        per_sample = sel.sum(1)
        if bool((per_sample == len(params.families)).all()):  # mode "all": every family on every sample
            for name in params.families:
                x = _family_op(name, x, params, g)
            return x
        if bool((per_sample == 1).all()):  # mode "single"
            return _apply_sorted(x, params, g, sel.to(torch.uint8).argmax(1))
        # Any other layout (hand-made params): fall through to the mask path, which handles every layout.
    for f, name in enumerate(params.families):
        y = _family_op(name, x, params, g)
        x = torch.where(sel[:, f].to(x.device).view(-1, 1, 1, 1), y, x)
    return x


def random(
    x: torch.Tensor,
    generator: torch.Generator,
    strategy: Union[str, Sequence[str]],
    config: DSAConfig,
    *,
    dispatch: Dispatch = "auto",
) -> torch.Tensor:
    """Non-siamese augmentation (official ``seed=-1``): one family for the whole call in mode ``"single"`` (every
    family in mode ``"all"``), magnitudes drawn per sample."""
    n = x.shape[0]
    params = sample_params(strategy, n, generator, x.device, config, one_family=True)
    return apply(x, params, torch.arange(n, device=x.device), dispatch=dispatch)


# ---------------------------------------------------------------------------------------------------
# Module and component
# ---------------------------------------------------------------------------------------------------


class DSAModule(nn.Module):
    """``nn.Module`` face of DSA: ``sample(...)`` then ``forward(x, params, groups)``; ``forward(x,
    generator=g)`` without params is :func:`random`."""

    def __init__(self, config: Optional[DSAConfig] = None):
        super().__init__()
        self.config = config or DSAConfig()
        self.families = parse_strategy(self.config.strategy)

    def sample(self, num_groups: int, generator: torch.Generator, device: Union[str, torch.device, None]) -> DSAParams:
        return sample_params(self.families, num_groups, generator, device, self.config)

    def forward(
        self,
        x: torch.Tensor,
        params: Optional[DSAParams] = None,
        groups: Optional[torch.Tensor] = None,
        *,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        if params is None:
            if generator is None:
                raise ValueError("DSAModule.forward needs params and groups, or a generator for random()")
            return random(x, generator, self.families, self.config)
        if groups is None:
            groups = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return apply(x, params, groups)

    def extra_repr(self) -> str:
        return f"strategy={'_'.join(self.families) or 'none'}, mode={self.config.mode}"


class DSA(SiameseAugmentation):
    """Differentiable Siamese Augmentation (DSA): per class and step one family (color, crop, cutout, flip,
    scale, rotate) with one parameter set, replayed on the real and the synthetic batch; evaluation networks
    get one family per batch with per-image magnitudes. Defaults follow the official ``ParamDiffAug``."""

    def __init__(self, config: DSAConfig, build: Any = None):
        super().__init__(config, build)
        self.module = DSAModule(config)

    def sample(self, num_groups: int, generator: torch.Generator, device: Union[str, torch.device, None]) -> DSAParams:
        return self.module.sample(num_groups, generator, device)

    def apply(self, x: torch.Tensor, params: DSAParams, groups: torch.Tensor) -> torch.Tensor:
        return apply(x, params, groups)

    def random(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random(x, generator, self.module.families, self.config)
