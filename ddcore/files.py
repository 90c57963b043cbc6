"""Files a component writes: atomic writes and ddcore's cache directories (public).

A component that caches something expensive (a trained teacher, a pool of networks) writes it under
:func:`cache_dir` with :func:`atomic_write_bytes` / :func:`atomic_write_text`, so that an interrupted process
never leaves a truncated file that a later run would read.
"""

from __future__ import annotations

import os
from pathlib import Path

from ddcore.artifacts import atomic_write_bytes, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text", "cache_dir", "cache_root"]


def cache_root() -> Path:
    """ddcore's on-disk cache: ``$DDCORE_CACHE`` or ``~/.cache/ddcore`` (not created)."""
    env = os.environ.get("DDCORE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ddcore"


def cache_dir(*parts: str, create: bool = True) -> Path:
    """``cache_root() / parts...``, created unless ``create`` is false: a plugin's own cache folder.

    Name the first part after your distribution (``cache_dir("ddcore-krr", "teachers")``) so plugins never
    share files by accident.
    """
    path = cache_root().joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
