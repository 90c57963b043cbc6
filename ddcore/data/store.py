"""The class-indexed store of one dataset split, and its batch samplers.

The split is held as uint8 ``[N, C, H, W]`` images sorted by class (stable, so file order is kept within a class),
with int64 labels and per-class offsets/counts on the run's device. Where the pixels live is the *placement*
(``[data] store``):

* ``device`` — on the run's device (the default for data that fits);
* ``host`` — in host memory (pinned when the run is on CUDA); only each batch is copied to the device;
* ``mmap`` — a class-sorted uint8 file in the cache, memory-mapped read-only: every process on a host that maps
  it shares the kernel's page cache (one copy per host, however many ranks), and the pages a gather touched
  are dropped from the process after each gather, so its resident memory does not grow with the dataset.

Batches are drawn with one gather and normalised on the fly with a fused multiply-add (``x * scale[c] +
shift[c]``), so the float copy of the dataset never exists. Which images are drawn is computed on the run's
device from the generator alone, never from the placement: the same seed gives the same batch, bit for bit,
under every placement. Indices everywhere (``RealBatch.indices``, :meth:`take`, :meth:`random_indices_per_class`) are
positions in this class-sorted store; ``source_index`` maps them back to the order the data source returned.

Per-class sampling follows the official ``get_images(c, n)`` (a random permutation of class c truncated to n:
without replacement), vectorised over classes: one ``[num_classes, max_count]`` matrix of uniform keys, invalid
slots (beyond a class's count) masked to -1, ``topk`` per row, plus the class offsets.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import torch

from ddcore.errors import DataError
from ddcore.types import DatasetInfo, RealBatch

__all__ = ["PLACEMENTS", "ClassIndexedData"]

#: where the pixels of a split can live (``[data] store``; ``auto`` is resolved by :func:`ddcore.data.placement`)
PLACEMENTS = ("device", "host", "mmap")


class ClassIndexedData:
    """One split of a dataset, indexed by class.

    :param images_uint8: uint8 ``[N, C, H, W]`` images (any order; they are sorted by class here, unless
        ``source_index`` says they already are).
    :param labels: int64 ``[N]`` labels in ``[0, info.num_classes)``.
    :param info: the dataset's :class:`~ddcore.types.DatasetInfo` (normalisation constants, class count).
    :param device: where labels and every drawn batch live (the run's device).
    :param placement: where the pixels live: ``device``, ``host`` or ``mmap`` (see the module doc). ``mmap``
        takes ``images_uint8`` as given (a CPU tensor over a memory map, already class-sorted).
    :param source_index: for images already sorted by class: the position of each in the source's order
        (labels must then be non-decreasing). ``None``: sort here.
    :param mapping: the memory map behind ``images_uint8`` (``mmap``), whose touched pages are released after
        every gather.

    :ivar images: uint8 ``[N, C, H, W]``, class-sorted, on ``device`` (``device`` placement) or the CPU. Index it
        through :meth:`pixels`, which returns the rows on ``device`` whatever the placement.
    :ivar labels: int64 ``[N]`` on ``device``, non-decreasing.
    :ivar offsets: int64 ``[num_classes]``: first position of each class.
    :ivar counts: int64 ``[num_classes]``: images per class (``class_counts`` is the same as a list).
    :ivar source_index: int64 ``[N]``: position of each stored image in the input arrays.
    """

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor, info: DatasetInfo,
                 device: torch.device | str = "cpu", *, placement: str = "device",
                 source_index: Optional[torch.Tensor] = None, mapping: Any = None):
        if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
            raise DataError(f"ClassIndexedData needs uint8 [N, C, H, W] images, got {images_uint8.dtype} "
                            f"{list(images_uint8.shape)}")
        labels = torch.as_tensor(labels).to(torch.int64).reshape(-1)
        if labels.shape[0] != images_uint8.shape[0]:
            raise DataError(f"ClassIndexedData: {images_uint8.shape[0]} images but {labels.shape[0]} labels")
        if tuple(images_uint8.shape[1:]) != info.image_shape:
            raise DataError(f"ClassIndexedData: images are {list(images_uint8.shape[1:])} but the dataset info says "
                            f"{list(info.image_shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
            raise DataError(f"ClassIndexedData: labels must lie in [0, {info.num_classes - 1}], found "
                            f"{int(labels.min())}..{int(labels.max())}")
        if placement not in PLACEMENTS:
            raise DataError(f"ClassIndexedData: placement {placement!r}; expected one of {', '.join(PLACEMENTS)}")
        self.info = info
        self.device = torch.device(device)
        self.placement = placement
        self._mapping = mapping

        if source_index is None:
            if placement == "mmap":
                raise DataError("ClassIndexedData: placement 'mmap' needs class-sorted images and their source_index")
            order = torch.argsort(labels, stable=True)
            labels = labels[order]
            images_uint8 = images_uint8[order.to(images_uint8.device)]
        else:
            order = torch.as_tensor(source_index).to(torch.int64).reshape(-1)
            if order.shape[0] != labels.shape[0] or (labels.numel() > 1 and bool((labels[1:] < labels[:-1]).any())):
                raise DataError("ClassIndexedData: source_index given but the labels are not sorted by class")
        self.source_index = order.to(self.device)
        self.labels = labels.to(self.device)
        if placement == "device":
            self.images = images_uint8.to(self.device).contiguous()
        elif placement == "host":
            self.images = images_uint8.cpu().contiguous()
            if self.device.type == "cuda":
                self.images = self.images.pin_memory()
        else:
            if images_uint8.device.type != "cpu" or not images_uint8.is_contiguous():
                raise DataError("ClassIndexedData: placement 'mmap' needs a contiguous CPU tensor over the map")
            self.images = images_uint8
        counts = torch.bincount(labels, minlength=info.num_classes)
        self.counts = counts.to(self.device)
        self.offsets = (torch.cumsum(counts, 0) - counts).to(self.device)
        self.class_counts: list[int] = [int(c) for c in counts.tolist()]
        self._max_count = max(self.class_counts, default=0)
        self._min_count = min(self.class_counts, default=0)
        # [num_classes, max_count]: True where the slot is beyond the class's count (never drawn)
        self._invalid = torch.arange(self._max_count, device=self.device)[None, :] >= self.counts[:, None]

        std = torch.tensor(info.std, dtype=torch.float32)
        mean = torch.tensor(info.mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, -1, 1, 1).to(self.device)

    # -- facts -------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"ClassIndexedData({self.info.name}, n={len(self)}, classes={self.num_classes}, "
                f"shape={list(self.info.image_shape)}, device={self.device}, placement={self.placement})")

    # -- pixels --------------------------------------------------------------------------------------------
    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` -> normalised float32: ``(x/255 - mean) / std`` as one fused multiply-add."""
        return torch.addcmul(self._shift, x_uint8.float(), self._scale)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float images -> pixels in [0, 1] (not clamped), e.g. for saving or plotting."""
        return (x - self._shift) / (self._scale * 255.0)

    def pixels(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 ``[len(indices), C, H, W]`` at store positions ``indices`` (1-D), on ``device``: one gather.

        ``host``/``mmap``: gathered on the CPU (into pinned memory for a CUDA run), then copied; ``mmap`` then
        drops the pages the gather touched from this process (they stay in the shared page cache).
        """
        if self._mapping is None and self.images.device == self.device:
            return self.images[indices.to(self.device)]
        idx = indices.to("cpu", torch.int64).reshape(-1)
        if self.device.type == "cuda":
            out = torch.empty((idx.shape[0], *self.images.shape[1:]), dtype=torch.uint8, pin_memory=True)
            torch.index_select(self.images, 0, idx, out=out)
        else:
            out = torch.index_select(self.images, 0, idx)
        if self._mapping is not None:
            self._mapping.release()
        return out.to(self.device, non_blocking=True)

    def take(self, indices: torch.Tensor, *, per_class: Optional[int] = None) -> RealBatch:
        """The normalised images at store positions ``indices`` (one gather)."""
        indices = indices.to(self.device)
        return RealBatch(images=self.normalize(self.pixels(indices)), labels=self.labels[indices],
                         indices=indices, per_class=per_class)

    # -- sampling ------------------------------------------------------------------------------------------
    def _class_keys(self, generator: torch.Generator) -> torch.Tensor:
        """``[num_classes, max_count]`` uniform keys, -1 in the slots beyond each class's count."""
        keys = torch.rand((self.num_classes, self._max_count), generator=generator, device=generator.device)
        return keys.to(self.device).masked_fill_(self._invalid, -1.0)

    def sample_per_class(self, per_class: int, generator: torch.Generator,
                         classes: Optional[torch.Tensor] = None) -> RealBatch:
        """``per_class`` distinct random images of every class, class-major, in one gather.

        ``per_class`` is capped at the smallest class (sampling without replacement, as the official
        ``get_images``). ``classes`` (int64 class ids) restricts the batch to those classes, in that order; the
        draw is made for all classes and then sliced, so a class's images do not depend on the subset asked for
        (class-sharded runs draw exactly what a single process draws).
        """
        n = min(int(per_class), self._min_count)
        if n <= 0:
            empty = [c for c, k in enumerate(self.class_counts) if k == 0]
            raise DataError(f"sample_per_class({per_class}): " + (
                f"class(es) {empty[:10]} of {self.info.name} have no images" if empty else "per_class must be >= 1"))
        keys = self._class_keys(generator)
        picks = torch.topk(keys, n, dim=1, sorted=True).indices + self.offsets[:, None]
        if classes is not None:
            picks = picks[torch.as_tensor(classes, dtype=torch.int64, device=self.device)]
        return self.take(picks.reshape(-1), per_class=n)

    def random_indices_per_class(self, counts: Sequence[int] | int, generator: torch.Generator) -> torch.Tensor:
        """Store positions of ``counts[c]`` distinct random images of each class ``c``, class-major.

        ``counts`` may be one int for every class. A count larger than its class is a :class:`DataError`.
        """
        if isinstance(counts, int):
            counts = [counts] * self.num_classes
        if len(counts) != self.num_classes:
            raise DataError(f"random_indices_per_class: {len(counts)} counts for {self.num_classes} classes")
        too_many = [c for c, (k, have) in enumerate(zip(counts, self.class_counts)) if k > have or k < 0]
        if too_many:
            c = too_many[0]
            raise DataError(f"random_indices_per_class: {counts[c]} images asked of class {c} of {self.info.name}, "
                            f"which has {self.class_counts[c]}")
        k = max(counts, default=0)
        if k == 0:
            return torch.empty(0, dtype=torch.int64, device=self.device)
        keys = self._class_keys(generator)
        picks = torch.topk(keys, k, dim=1, sorted=True).indices + self.offsets[:, None]
        want = torch.as_tensor(list(counts), dtype=torch.int64, device=self.device)
        keep = torch.arange(k, device=self.device)[None, :] < want[:, None]
        return picks[keep]

    def sample_uniform(self, batch: int, generator: torch.Generator) -> RealBatch:
        """``batch`` distinct images drawn uniformly from the whole split (all of it when ``batch >= N``)."""
        n = min(int(batch), len(self))
        perm = torch.randperm(len(self), generator=generator, device=generator.device)[:n]
        return self.take(perm.to(self.device))

    def iterate(self, batch_size: int, generator: Optional[torch.Generator] = None) -> Iterator[RealBatch]:
        """All images in batches of ``batch_size`` (the last may be smaller); shuffled when a generator is given."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if generator is None:
            order = torch.arange(len(self), device=self.device)
        else:
            order = torch.randperm(len(self), generator=generator, device=generator.device).to(self.device)
        for start in range(0, len(self), batch_size):
            yield self.take(order[start:start + batch_size])
