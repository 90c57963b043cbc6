"""The ``mmap`` store file: one split, processed and class-sorted, as raw uint8 ``[N, C, H, W]`` (internal).

``<cache>/stores/<key>.u8`` holds the pixels; ``<key>.index.npz`` (written last: its presence means the pixels
are complete) holds the class-sorted labels, each image's position in the source's order, and the shape. The key
covers the source's data identity, the split and every option that changes pixels or selection, so a changed
dataset or option gets a new file. Building streams the source in chunks (bounded memory) under a file lock, so
concurrent ranks on one host build it once and then all map the same file.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from ddcore.errors import DataError
from ddcore.files import cache_root

if TYPE_CHECKING:
    from ddcore.data.source import ProcessedSource

__all__ = ["MappedFile", "file_lock", "map_split", "store_paths"]

#: bump when the file layout changes, so old files are never read with a new meaning
FORMAT = 1
CHUNK = 4096


class MappedFile:
    """A read-only view of raw uint8 ``shape`` in ``path`` (copy-on-write map: a stray in-place write stays
    private instead of crashing or corrupting the cache)."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = Path(path), tuple(int(s) for s in shape)
        self.array = np.memmap(self.path, dtype=np.uint8, mode="c", shape=self.shape) if self.shape[0] else None

    def tensor(self) -> torch.Tensor:
        if self.array is None:
            return torch.empty(self.shape, dtype=torch.uint8)
        return torch.from_numpy(self.array)

    def release(self) -> None:
        """Drop this process's mapped pages (the page cache keeps them for the next gather, here or elsewhere)."""
        if self.array is not None:
            self.array._mmap.madvise(mmap.MADV_DONTNEED)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created): one process per host builds a shared cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def store_paths(key: str) -> tuple[Path, Path]:
    folder = cache_root() / "stores"
    return folder / f"{key}.u8", folder / f"{key}.index.npz"


def _key(source: "ProcessedSource", split: str) -> str:
    data_key = source.data_key(split)
    if data_key is None:
        raise DataError(f"data source '{source.source_name}': store = 'mmap' needs a data source with an on-disk "
                        f"identity (npz, imagefolder, digits); use store = 'host' or 'device'")
    cfg = source.config
    per_class = cfg.train_per_class if split == "train" else cfg.test_per_class
    spec = f"{FORMAT}|{data_key}|{split}|{cfg.classes}|{per_class}|{cfg.channels}|{cfg.resize}"
    return f"{source.source_name}-{split}-{hashlib.sha256(spec.encode()).hexdigest()[:24]}"


def _read_index(index_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    with np.load(index_path, allow_pickle=False) as z:
        return z["labels"], z["source_index"], tuple(int(v) for v in z["shape"])


def map_split(source: "ProcessedSource", split: str) -> tuple[MappedFile, np.ndarray, np.ndarray]:
    """The split as a :class:`MappedFile` (built into the cache first if needed), its class-sorted labels and
    the source positions of its rows."""
    key = _key(source, split)
    pixels, index = store_paths(key)
    with file_lock(pixels.with_suffix(".lock")):
        if not index.is_file():
            _build(source, split, pixels, index)
    try:
        labels, source_index, shape = _read_index(index)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"data source '{source.source_name}': damaged store index {index} ({exc}); delete it and "
                        f"its .u8 file to rebuild") from exc
    want = int(np.prod(shape, dtype=np.int64))
    if not pixels.is_file() or pixels.stat().st_size != want or len(labels) != shape[0]:
        raise DataError(f"data source '{source.source_name}': store file {pixels} does not match its index "
                        f"(expected {want} bytes); delete both to rebuild")
    return MappedFile(pixels, shape), labels, source_index


def _build(source: "ProcessedSource", split: str, pixels: Path, index: Path) -> None:
    from ddcore.data.transforms import nhwc_to_nchw, replicate_channels, resize_uint8

    cfg = source.config
    file_idx, labels = source.kept(split)
    images = source.read_all(split)
    dropped = source.dropped(split)
    if dropped.size:
        ok = ~np.isin(file_idx, dropped)
        file_idx, labels = file_idx[ok], labels[ok]
    order = np.argsort(labels, kind="stable")
    rows, labels = file_idx[order], labels[order]
    info = source.info()
    shape = (len(rows), info.channels, info.height, info.width)
    pixels.parent.mkdir(parents=True, exist_ok=True)
    tmp = pixels.with_name(pixels.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            for start in range(0, len(rows), CHUNK):
                block = nhwc_to_nchw(np.asarray(images[np.sort(rows[start:start + CHUNK])]))
                # rows were sorted for a sequential read; put them back in class-sorted order
                back = np.argsort(np.argsort(rows[start:start + CHUNK], kind="stable"), kind="stable")
                block = resize_uint8(replicate_channels(block, cfg.channels), cfg.resize)[torch.from_numpy(back)]
                if tuple(block.shape[1:]) != shape[1:]:
                    raise DataError(f"data source '{source.source_name}': processed images are "
                                    f"{list(block.shape[1:])}, the dataset info says {list(shape[1:])}")
                fh.write(block.contiguous().numpy().tobytes())
                if isinstance(images, np.memmap):  # the decoded cache: keep this process's footprint flat
                    images._mmap.madvise(mmap.MADV_DONTNEED)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, pixels)
        tmp_index = index.with_name(index.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp_index, labels=labels.astype(np.int64), source_index=order.astype(np.int64),
                 shape=np.asarray(shape, dtype=np.int64))
        os.replace(tmp_index, index)
    except OSError as exc:
        raise DataError(f"data source '{source.source_name}': cannot write the mmap store under {pixels.parent} "
                        f"({exc}); set $DDCORE_CACHE to a writable folder with room for it") from exc
    finally:
        tmp.unlink(missing_ok=True)
