"""What every built-in data source shares: the common options, and the post-processing they imply.

A source subclasses :class:`ProcessedSource` and implements three small readers (``native()``,
``read_labels(split)``, ``read_images(split, indices)``); the base class applies the common options in one
place, so every source treats ``classes``, ``train_per_class``/``test_per_class``, ``channels``, ``resize`` and
the normalisation constants identically:

1. labels are read first (cheap), the kept indices are chosen (first K classes; first n of each class in file
   order), and only those images are read/decoded;
2. gray images are replicated to RGB when ``channels = 3``;
3. images are resized (bilinear, antialiased when shrinking) when ``resize > 0``;
4. normalisation constants: ``mean``/``std`` options if given, else the dataset's standard constants (gray
   constants repeated for replicated channels; kept unchanged by ``classes``/limits/``resize``), else computed
   from the processed training split (population mean/std over all pixels, per channel).
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import attrs
import numpy as np
import torch

from ddcore.components import DataSource
from ddcore.config import OptionValueError, non_negative, option
from ddcore.data.constants import Stats
from ddcore.data.transforms import channel_stats, nhwc_to_nchw, replicate_channels, resize_uint8, select_indices
from ddcore.errors import DataError
from ddcore.types import DatasetInfo

__all__ = ["SPLITS", "CommonDataConfig", "DecodeConfig", "NativeLayout", "ProcessedSource", "Split", "path_candidates",
           "recipe_dir", "resolve_existing"]

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")


def _positive_floats(instance: Any, attribute: attrs.Attribute, value: tuple) -> None:
    if attribute.name == "std" and any(v <= 0 for v in value):
        raise OptionValueError(attribute.name, f"every std must be > 0, got {list(value)}")


@attrs.define(frozen=True, kw_only=True)
class CommonDataConfig:
    """Options every built-in data source accepts (source configs subclass this)."""

    classes: int = option(0, "Keep only the first K classes (labels 0..K-1); 0 keeps all.", validator=non_negative)
    train_per_class: int = option(
        0, "Keep at most this many training images per class (the first ones in file order); 0 keeps all.",
        validator=non_negative,
    )
    test_per_class: int = option(
        0, "Keep at most this many test images per class (the first ones in file order); 0 keeps all.",
        validator=non_negative,
    )
    resize: int = option(0, "Resize images to resize x resize pixels (bilinear); 0 keeps the native size.",
                         validator=non_negative)
    channels: int = option(0, "0 keeps the native channels; 3 replicates gray images to RGB.", choices=(0, 3))
    mean: tuple[float, ...] = option(
        (), "Per-channel mean override in [0, 1] pixel units (one value or one per channel); empty = automatic.",
        validator=_positive_floats,
    )
    std: tuple[float, ...] = option(
        (), "Per-channel std override (one value or one per channel); empty = automatic.",
        validator=_positive_floats,
    )
    store: str = option(
        "auto", "Where the split's uint8 pixels live: 'device' (the run's device), 'host' (host memory, pinned "
        "on CUDA; each step's batch is copied over), 'mmap' (a class-sorted file in $DDCORE_CACHE/stores, "
        "memory-mapped: ranks on one host share one page cache and resident memory does not grow with the "
        "dataset), or 'auto': device when the split takes at most 1/4 of the device's free memory, else host "
        "(CUDA, when the host has room) or mmap. Every placement draws the same batches. See docs/scaling.md.",
        choices=("auto", "device", "host", "mmap"))


@attrs.define(frozen=True, kw_only=True)
class DecodeConfig(CommonDataConfig):
    """Options of sources that decode image files (imagefolder, npz with JPEG/PNG payloads)."""

    cache: bool = option(True, "Cache the decoded splits as .npy under $DDCORE_CACHE (~/.cache/ddcore).")
    decode_workers: int = option(
        0, "Processes decoding images into the cache (a progress line shows images/s and the ETA; an "
        "interrupted decode resumes where it stopped); 0 = every core this process may use, 1 = in-process.",
        validator=non_negative)
    unreadable: str = option(
        "fail", "An image file that cannot be decoded: 'fail' stops with one line naming it; 'skip' names it "
        "and leaves it out together with its label.", choices=("fail", "skip"))


@attrs.define(frozen=True)
class NativeLayout:
    """What a source knows about its images before any post-processing."""

    name: str
    channels: int
    height: int
    width: int
    num_classes: int
    class_names: tuple[str, ...] = ()
    #: standard constants of the native images, or ``None`` to compute them from the training split
    stats: Optional[Stats] = None


# ---------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------


def recipe_dir(build: Any) -> Optional[Path]:
    """Directory of the recipe file, when known.

    ``build`` is a :class:`~ddcore.context.BuildContext` (or anything with a ``recipe`` attribute), or the recipe
    itself; the recipe's ``file`` (or ``directory``/``base_dir``/``path``) attribute names the file or folder.
    """
    if build is None:
        return None
    recipe = getattr(build, "recipe", build)
    for attr in ("directory", "base_dir", "path", "file", "source"):
        value = getattr(recipe, attr, None)
        if isinstance(value, (str, os.PathLike)) and str(value):
            p = Path(value).expanduser()
            return p if p.is_dir() else p.parent
    return None


def path_candidates(path: str, build: Any) -> list[Path]:
    """Where a (possibly relative) dataset path may live, in lookup order.

    Absolute (or ``~``) paths are used as they are. Relative ones are tried under ``$DDCORE_DATA``, then under
    the recipe's directory; when no recipe directory is known, under the working directory.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p]
    out: list[Path] = []
    env = os.environ.get("DDCORE_DATA")
    if env:
        out.append(Path(env).expanduser() / p)
    base = recipe_dir(build)
    out.append((base / p) if base is not None else Path.cwd() / p)
    return out


def resolve_existing(path: str, build: Any, *, option_name: str, source: str) -> Path:
    """The first existing candidate of :func:`path_candidates`, or a :class:`DataError` listing them all."""
    candidates = path_candidates(path, build)
    for c in candidates:
        if c.exists():
            return c
    tried = ", ".join(str(c) for c in candidates)
    hint = ("$DDCORE_DATA is set to " + repr(os.environ["DDCORE_DATA"])) if os.environ.get("DDCORE_DATA") else \
        "$DDCORE_DATA is not set (set it to the folder holding your datasets, e.g. shared/datasets)"
    raise DataError(f"data source '{source}': {option_name} = {path!r} not found (looked in: {tried}); {hint}")


# ---------------------------------------------------------------------------------------------------------
# The base class
# ---------------------------------------------------------------------------------------------------------


class ProcessedSource(DataSource):
    """A :class:`DataSource` whose ``info()``/``load()`` apply the :class:`CommonDataConfig` options.

    Subclasses implement :meth:`native`, :meth:`read_labels` and :meth:`read_images`.
    """

    #: registry name, used in error messages
    source_name: str = "data"

    def __init__(self, config: CommonDataConfig, build: Any = None):
        super().__init__(config, build)
        self._info: Optional[DatasetInfo] = None
        self._pending_train: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._split_sizes: dict[str, int] = {}  # images per split before the options select (set by kept())

    # -- what subclasses provide ----------------------------------------------------------------------
    @abc.abstractmethod
    def native(self) -> NativeLayout:
        """Native layout and standard constants (should not decode all pixels)."""

    @abc.abstractmethod
    def read_labels(self, split: Split) -> np.ndarray:
        """All labels of ``split`` in file order (int64)."""

    @abc.abstractmethod
    def read_images(self, split: Split, indices: Optional[np.ndarray]) -> np.ndarray:
        """uint8 ``[n, H, W, C]`` images of ``split`` at ``indices`` (file order), or all when ``None``."""

    # -- optional: what the mmap store and skipped images need ---------------------------------------------
    def data_key(self, split: Split) -> Optional[str]:
        """A string that changes whenever the source's images or labels of ``split`` change (file sizes, mtimes,
        options), or ``None`` when the source has no such identity (then ``store = "mmap"`` is refused)."""
        return None

    def read_all(self, split: Split) -> np.ndarray:
        """Every image of ``split`` in file order, ``[N, H, W, C]``; a memory map where the source has a decoded
        cache on disk, so the mmap store is built in bounded memory. Default: :meth:`read_images` of all."""
        return self.read_images(split, None)

    def dropped(self, split: Split) -> np.ndarray:
        """File-order indices of images that could not be decoded and were skipped (known after reading)."""
        return np.empty(0, dtype=np.int64)

    # -- the DataSource API -----------------------------------------------------------------------------
    def info(self) -> DatasetInfo:
        if self._info is None:
            nat = self.native()
            cfg = self.config
            if cfg.classes > nat.num_classes:
                raise DataError(f"data source '{self.source_name}' ({nat.name}): classes = {cfg.classes} but the "
                                f"dataset has only {nat.num_classes} classes")
            num_classes = cfg.classes or nat.num_classes
            channels = 3 if cfg.channels == 3 else nat.channels
            height, width = (cfg.resize, cfg.resize) if cfg.resize else (nat.height, nat.width)
            mean, std = self._stats(nat, channels)
            names = tuple(nat.class_names[:num_classes]) if nat.class_names else ()
            self._info = DatasetInfo(name=nat.name, num_classes=num_classes, channels=channels, height=height,
                                     width=width, mean=mean, std=std, class_names=names)
        return self._info

    def load(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in SPLITS:
            raise DataError(f"data source '{self.source_name}': unknown split {split!r} (expected train or test)")
        if split == "train" and self._pending_train is not None:
            out, self._pending_train = self._pending_train, None
            return out
        return self._load_processed(split)

    # -- internals ----------------------------------------------------------------------------------------
    def kept(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """(file-order indices, labels) of the images the ``classes``/``*_per_class`` options keep."""
        cfg = self.config
        nat = self.native()
        labels = np.asarray(self.read_labels(split)).astype(np.int64, copy=False)
        if labels.size and (labels.min() < 0 or labels.max() >= nat.num_classes):
            raise DataError(f"data source '{self.source_name}' ({nat.name}, {split}): labels outside "
                            f"[0, {nat.num_classes - 1}] (found {labels.min()}..{labels.max()})")
        per_class = cfg.train_per_class if split == "train" else cfg.test_per_class
        keep = select_indices(labels, classes=cfg.classes, per_class=per_class)
        self._split_sizes[split] = labels.shape[0]
        if keep is None:
            return np.arange(labels.shape[0]), labels
        return keep, labels[keep]

    def _load_processed(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        nat = self.native()
        keep, labels = self.kept(split)
        raw = self.read_images(split, None if len(keep) == self._split_sizes[split] else keep)
        dropped = self.dropped(split)
        if dropped.size:  # a skipped image leaves with its label, never shifting the others
            ok = ~np.isin(keep, dropped)
            raw, labels = raw[ok], labels[ok]
        images = nhwc_to_nchw(raw)
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"data source '{self.source_name}' ({nat.name}, {split}): {images.shape[0]} images but "
                            f"{labels.shape[0]} labels")
        images = replicate_channels(images, cfg.channels)
        images = resize_uint8(images, cfg.resize)
        return images, torch.from_numpy(np.ascontiguousarray(labels))

    def _stats(self, nat: NativeLayout, channels: int) -> Stats:
        cfg = self.config
        if cfg.mean or cfg.std:
            if not (cfg.mean and cfg.std):
                raise DataError(f"data source '{self.source_name}': give both mean and std, or neither")
            return _broadcast(cfg.mean, channels, "mean", self.source_name), \
                _broadcast(cfg.std, channels, "std", self.source_name)
        if nat.stats is not None:
            mean, std = nat.stats
            if len(mean) == channels:
                return tuple(mean), tuple(std)
            if len(mean) == 1:
                return tuple(mean) * channels, tuple(std) * channels
        # computed from the processed training split; keep the pixels for the load("train") that follows
        train = self._load_processed("train")
        self._pending_train = train
        return channel_stats(train[0])


def _broadcast(values: Sequence[float], channels: int, what: str, source: str) -> tuple[float, ...]:
    if len(values) == channels:
        return tuple(float(v) for v in values)
    if len(values) == 1:
        return (float(values[0]),) * channels
    raise DataError(f"data source '{source}': {what} has {len(values)} values but the images have {channels} "
                    f"channels")
