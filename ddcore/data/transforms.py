"""Pixel transforms of uint8 image tensors that every data source applies the same way (public).

All of them work on CPU tensors of shape ``[N, C, H, W]`` (``nhwc_to_nchw`` converts from numpy ``[N, H, W, C]``)
and never loop over images in Python.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ddcore.data.constants import Stats
from ddcore.errors import DataError

__all__ = ["channel_stats", "nhwc_to_nchw", "replicate_channels", "resize_uint8", "select_indices"]


def select_indices(labels: np.ndarray, *, classes: int = 0, per_class: int = 0) -> Optional[np.ndarray]:
    """Indices (in file order) of the images kept by the ``classes`` and ``*_per_class`` options.

    Keeps labels ``< classes`` (when ``classes > 0``) and the first ``per_class`` images of each class in file
    order (when ``per_class > 0``). Returns ``None`` when everything is kept. Vectorised (no loop over classes).
    """
    labels = np.asarray(labels)
    keep = np.ones(labels.shape[0], dtype=bool)
    if classes > 0:
        keep &= labels < classes
    if per_class > 0 and labels.size:
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
        rank = np.empty_like(order)
        rank[order] = np.arange(labels.shape[0]) - starts
        keep &= rank < per_class
    if keep.all():
        return None
    return np.flatnonzero(keep)


def replicate_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """``channels = 3``: repeat a gray ``[N, 1, H, W]`` tensor to RGB; 0 (or already 3 channels) is a no-op."""
    if channels in (0, images.shape[1]):
        return images
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    raise DataError(f"cannot turn {images.shape[1]}-channel images into {channels} channels (only gray -> 3)")


def resize_uint8(images: torch.Tensor, size: int, *, chunk: int = 4096) -> torch.Tensor:
    """Bilinear resize of uint8 ``[N, C, H, W]`` to ``size x size`` (antialiased when shrinking), in chunks."""
    if size <= 0 or images.shape[-2:] == (size, size):
        return images
    shrink = size < max(images.shape[-2:])
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].float()
        block = F.interpolate(block, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out[start:start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(images: torch.Tensor, *, chunk: int = 8192) -> Stats:
    """Per-channel mean and (population) std of uint8 ``[N, C, H, W]`` images, in [0, 1] pixel units."""
    if images.shape[0] == 0:
        raise DataError("cannot compute normalisation constants of an empty training split")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].to(torch.float64).transpose(0, 1).reshape(channels, -1)
        total += block.sum(1)
        total_sq += (block * block).sum(1)
    count = images.numel() // channels
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0)
    std = var.sqrt().clamp_min(1e-3 * 255)  # a constant image must not divide by zero
    return tuple(float(v) for v in mean / 255), tuple(float(v) for v in std / 255)


def nhwc_to_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` (or ``[N, H, W]``) numpy array -> contiguous uint8 ``[N, C, H, W]`` CPU tensor."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise DataError(f"expected uint8 images, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise DataError(f"expected images of shape [N, H, W, C], got {list(arr.shape)}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()
