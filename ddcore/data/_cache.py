"""The on-disk decode cache of the built-in sources (internal: the layout under ``decoded/`` may change)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ddcore.data._decode import decode_all, decode_indices, default_workers, read_skipped
from ddcore.data._mapped import file_lock
from ddcore.files import cache_root

__all__ = ["CachedDecoder", "cache_file", "decode_cached", "file_fingerprint"]


def file_fingerprint(path: Path, *, head_bytes: int = 1 << 20) -> str:
    """A cheap identity of a file: size, mtime and the sha256 of its first MiB (hex, 20 chars)."""
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(head_bytes))
    return h.hexdigest()[:20]


def cache_file(name: str) -> Path:
    """Path of the cached decoded array called ``name`` (see :func:`cached_array`)."""
    return cache_root() / "decoded" / f"{name}.npy"


def _load_full(name: str, items, spec, *, enabled: bool, workers: int, unreadable: str, progress: bool,
               log: Callable, mmap: bool) -> tuple[np.ndarray, np.ndarray]:
    """(every image of the split, skipped indices): from ``<cache>/decoded/<name>.npy``, decoding it first (in
    parallel, resumably, under a lock so concurrent ranks decode once) when it is missing.

    A cache that cannot be written (read-only home, full disk) only costs the decode; it never fails the load.
    """
    if enabled:
        target = cache_file(name)
        try:
            with file_lock(target.with_name(target.name + ".lock")):
                for attempt in (0, 1):
                    if not target.is_file():
                        decode_all(target, items, spec, workers=workers, unreadable=unreadable, progress=progress,
                                   log=log)
                    try:
                        images = np.load(target, mmap_mode="r" if mmap else None, allow_pickle=False)
                        if images.shape == (len(items), *spec.shape):
                            return images, read_skipped(target)
                    except (OSError, ValueError):
                        pass
                    target.unlink(missing_ok=True)  # truncated or foreign file: decode again
        except OSError:
            pass
    return decode_indices(items, spec, np.arange(len(items)), workers=workers, unreadable=unreadable,
                          progress=progress, log=log)


def decode_cached(name: str, items, spec, indices: Optional[np.ndarray], *, enabled: bool = True,
                  workers: int = 0, unreadable: str = "fail", progress: bool = False, log: Callable = print,
                  mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images ``indices`` of a split whose decoding is expensive (all when ``None``), file-order indices that
    were skipped as unreadable).

    The full decode is cached under ``name``. When no cache exists yet and fewer than half of the images are
    asked for, only those are decoded and nothing is cached, so a quick run with ``*_per_class`` limits does not
    pay for the whole split. ``mmap``: return the cached split as a read-only memory map (``indices`` None).
    ``workers``: decoding processes (0 = every core this process may use).
    """
    workers = workers or default_workers()
    options = dict(workers=workers, unreadable=unreadable, progress=progress, log=log)
    total = len(items)
    if indices is not None and len(indices) * 2 < total and not (enabled and cache_file(name).is_file()):
        order = np.argsort(indices, kind="stable")
        decoded, skipped = decode_indices(items, spec, indices[order], **options)
        out = np.empty_like(decoded)
        out[order] = decoded
        return out, skipped
    images, skipped = _load_full(name, items, spec, enabled=enabled, mmap=mmap and indices is None, **options)
    return (images if indices is None else images[indices]), skipped


class CachedDecoder:
    """:func:`decode_cached` with a source's options (``config.cache``, ``decode_workers``, ``unreadable``; the
    build's progress switch and log), remembering which file-order indices of each split were skipped as
    unreadable so that the source can report them (``dropped``)."""

    def __init__(self, config, build) -> None:
        self.config = config
        self.build = build
        self._skipped: dict[str, np.ndarray] = {}

    def decode(self, split: str, plan: tuple, indices: Optional[np.ndarray], *, mmap: bool = False) -> np.ndarray:
        """The images ``indices`` (all when ``None``) of ``split``; ``plan`` is ``(cache name, items, spec)``."""
        name, items, spec = plan
        cfg = self.config
        images, skipped = decode_cached(
            name, items, spec, indices, enabled=cfg.cache, workers=cfg.decode_workers, unreadable=cfg.unreadable,
            progress=bool(getattr(self.build, "progress", False)), log=getattr(self.build, "log", None) or print,
            mmap=mmap)
        self._skipped[split] = np.union1d(self._skipped.get(split, np.empty(0, np.int64)), skipped)
        return images

    def dropped(self, split: str) -> np.ndarray:
        """File-order indices of ``split`` skipped so far."""
        return self._skipped.get(split, np.empty(0, np.int64))
