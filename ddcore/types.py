"""Plain data carriers passed between components.

They are deliberately tiny: tensors plus the few facts every component needs to interpret them.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch

__all__ = ["DatasetInfo", "RealBatch", "SynBatch"]


@attrs.define(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, known before any tensor is touched.

    ``mean``/``std`` are the per-channel normalisation constants (in [0, 1] pixel units) used to turn
    uint8 images into the normalised float tensors every network and synthetic set lives in.
    """

    name: str
    num_classes: int
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def floats_per_image(self) -> int:
        return self.channels * self.height * self.width


@attrs.define
class SynBatch:
    """A (materialised) synthetic set or a batch of it.

    :ivar images: float tensor ``[N, C, H, W]`` in *normalised* space (the same space real batches are in).
    :ivar labels: ``[N]`` int64 hard labels, ``[N, K]`` float soft labels, or ``None`` (self-supervised).
    :ivar targets: optional ``[N, D]`` learned target representations (self-supervised methods).
    :ivar groups: ``[N]`` int64 group ids used to share augmentation parameters (siamese DSA shares them per
        class). Defaults to the hard labels, or zeros when there are none.
    """

    images: torch.Tensor
    labels: Optional[torch.Tensor] = None
    targets: Optional[torch.Tensor] = None
    groups: Optional[torch.Tensor] = None

    def __attrs_post_init__(self) -> None:
        if self.groups is None:
            if self.labels is not None and self.labels.dtype == torch.int64 and self.labels.ndim == 1:
                self.groups = self.labels
            else:
                self.groups = torch.zeros(self.images.shape[0], dtype=torch.int64, device=self.images.device)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def detach(self) -> "SynBatch":
        return SynBatch(
            images=self.images.detach(),
            labels=None if self.labels is None else self.labels.detach(),
            targets=None if self.targets is None else self.targets.detach(),
            groups=self.groups,
        )

    def to(self, device: torch.device | str) -> "SynBatch":
        def mv(t):
            return None if t is None else t.to(device)

        return SynBatch(mv(self.images), mv(self.labels), mv(self.targets), mv(self.groups))

    def index(self, idx: torch.Tensor) -> "SynBatch":
        def sel(t):
            return None if t is None else t[idx]

        return SynBatch(sel(self.images), sel(self.labels), sel(self.targets), sel(self.groups))


@attrs.define
class RealBatch:
    """A batch of real training images, drawn by the engine with one gather.

    In ``per_class`` sampling the batch is class-major: ``images.view(num_classes, per_class, C, H, W)``
    gives each class's block (``per_class`` is set); in ``uniform`` sampling ``per_class`` is ``None``.

    :ivar images: normalised float ``[N, C, H, W]``.
    :ivar labels: ``[N]`` int64.
    :ivar indices: ``[N]`` int64 indices into the training split (for caches keyed by image, e.g. teachers).
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    per_class: Optional[int] = None

    @property
    def groups(self) -> torch.Tensor:
        return self.labels

    def __len__(self) -> int:
        return int(self.images.shape[0])
