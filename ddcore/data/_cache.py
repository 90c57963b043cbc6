"""The on-disk decode cache of the built-in sources (internal: the layout under ``decoded/`` may change)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ddcore.files import cache_root

__all__ = ["cache_file", "cached_array", "decode_cached", "file_fingerprint"]


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


def cached_array(name: str, produce: Callable[[], np.ndarray], *, enabled: bool = True) -> np.ndarray:
    """Load ``<cache>/decoded/<name>.npy``, or call ``produce()`` and store its result there (atomically).

    A cache that cannot be written (read-only home, full disk) only costs the decode; it never fails the load.
    """
    if not enabled:
        return produce()
    target = cache_file(name)
    if target.is_file():
        try:
            return np.load(target, allow_pickle=False)
        except (OSError, ValueError):  # truncated or foreign file: decode again and overwrite
            pass
    arr = produce()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(tmp, target)
    except OSError:
        pass
    return arr


def decode_cached(name: str, total: int, indices: Optional[np.ndarray],
                  decode: Callable[[Optional[np.ndarray]], np.ndarray], *, enabled: bool = True) -> np.ndarray:
    """Images ``indices`` (all when ``None``) of a split whose decoding is expensive.

    The full decode is cached under ``name`` (:func:`cached_array`). When no cache exists yet and fewer than half
    of the ``total`` images are asked for, only those are decoded (``decode(sorted indices)``) and nothing is
    cached, so a quick run with ``*_per_class`` limits does not pay for the whole split.
    """
    if indices is not None and len(indices) * 2 < total and not (enabled and cache_file(name).is_file()):
        order = np.argsort(indices, kind="stable")
        decoded = decode(indices[order])
        out = np.empty_like(decoded)
        out[order] = decoded
        return out
    images = cached_array(name, lambda: decode(None), enabled=enabled)
    return images if indices is None else images[indices]
