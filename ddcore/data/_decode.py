"""Parallel, resumable decoding of image files (or npz JPEG payloads) into the decode cache (internal).

The images of a split are cut into chunks of :data:`CHUNK` images. Worker processes decode chunks
with Pillow and send the pixels back; the parent writes each chunk at its offset of ``<name>.npy.part`` and
records it in ``<name>.state.json`` (atomically), so a decode that is interrupted (Ctrl-C, a killed job) resumes
with the chunks still missing. When every chunk is in, the part file is renamed to ``<name>.npy``. An image that
cannot be decoded is one line naming its file: ``unreadable = "fail"`` stops there (the chunks already decoded
are kept for the resume), ``"skip"`` reports it and drops it together with its label (listed in
``<name>.skipped.json``, so a later run drops the same images).
"""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import attrs
import numpy as np

from ddcore.errors import DataError

__all__ = ["BlobItems", "CHUNK", "DecodeSpec", "FileItems", "decode_all", "decode_indices", "default_workers"]

CHUNK = 256
#: fewer images than this are decoded in-process (starting workers costs more than it saves)
POOL_MIN = 2048


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@attrs.frozen
class DecodeSpec:
    """How every image of a split is decoded: Pillow ``mode`` (``L``/``RGB``), ``(height, width)``, whether an
    image of another size is resized bilinearly (imagefolder) or is an error (npz archives), and ``where`` (the
    source, for messages)."""

    mode: str
    size: tuple[int, int]
    resize_mismatched: bool
    where: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size[0], self.size[1], 1 if self.mode == "L" else 3)


@attrs.frozen
class FileItems:
    """Image ``i`` is the file ``paths[i]``."""

    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, i: int) -> str:
        return self.paths[i]

    def read(self, i: int) -> bytes:
        with open(self.paths[i], "rb") as fh:
            return fh.read()


#: per process: (npz path, stamp) -> (blob, offsets), so each archive is read once per worker
_BLOBS: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


@attrs.frozen
class BlobItems:
    """Image ``i`` is a slice of the ``jpeg`` blob of one of ``archives`` (npz files holding ``counts`` images)."""

    archives: tuple[str, ...]
    counts: tuple[int, ...]
    #: each archive's identity (size, mtime, head hash): a rewritten archive is read again, never served stale
    stamps: tuple[str, ...]

    def __len__(self) -> int:
        return int(sum(self.counts))

    def _locate(self, i: int) -> tuple[int, int]:
        for k, n in enumerate(self.counts):
            if i < n:
                return k, i
            i -= n
        raise IndexError(i)

    def describe(self, i: int) -> str:
        k, local = self._locate(i)
        return f"{self.archives[k]} image {local}"

    def read(self, i: int) -> bytes:
        k, local = self._locate(i)
        key = (self.archives[k], self.stamps[k])
        if key not in _BLOBS:
            _BLOBS.clear()
            with np.load(key[0], allow_pickle=False) as z:
                _BLOBS[key] = (np.asarray(z["jpeg"]), np.asarray(z["offsets"]))
        blob, offsets = _BLOBS[key]
        return blob[int(offsets[local]):int(offsets[local + 1])].tobytes()


def _decode_one(data: bytes, spec: DecodeSpec) -> np.ndarray:
    from PIL import Image

    height, width = spec.size
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != spec.mode:
            img = img.convert(spec.mode)
        if img.size != (width, height):
            if not spec.resize_mismatched:
                raise ValueError(f"is {img.size[0]}x{img.size[1]}, expected {width}x{height} (all images of an "
                                 f"archive must have one size)")
            img = img.resize((width, height), Image.BILINEAR)
        return np.asarray(img).reshape(spec.shape)


def _decode_rows(items: Any, spec: DecodeSpec, rows: Sequence[int]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode images ``rows``: (pixels, [(image index, reason), ...] of those that failed; their pixels are 0)."""
    out = np.zeros((len(rows), *spec.shape), dtype=np.uint8)
    bad = []
    for k, i in enumerate(rows):
        try:
            out[k] = _decode_one(items.read(int(i)), spec)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged files; each is reported
            bad.append((int(i), " ".join(f"{type(exc).__name__}: {exc}".split())))
    return out, bad


def _report(bad: list[tuple[int, str]], items: Any, spec: DecodeSpec, unreadable: str, log: Callable) -> None:
    if not bad:
        return
    i, reason = min(bad)
    if unreadable == "fail":
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"{spec.where}: cannot decode {items.describe(i)}: {reason}{more}; fix or remove the file, "
                        f"or set unreadable = \"skip\" to leave it out")
    for i, reason in sorted(bad):
        log(f"{spec.where}: skipping unreadable image {items.describe(i)} ({reason})")


class _Progress:
    def __init__(self, label: str, total: int, done: int, enabled: bool, log: Callable):
        from ddcore._progress import TaskProgress

        self.task = TaskProgress(label, total, enabled=enabled, log=log, unit="images", interval_s=10.0,
                                 rate=True)
        if done:
            self.task.advance(done, count_rate=False)

    def __enter__(self):
        return self.task

    def __exit__(self, *exc):
        self.task.close()


def _run_chunks(items: Any, spec: DecodeSpec, chunks: list[np.ndarray], workers: int,
                on_chunk: Callable[[int, np.ndarray, list], None]) -> None:
    """Decode every chunk (rows of images), in-process or on ``workers`` processes; ``on_chunk(k, pixels, bad)``
    runs in this process as each finishes."""
    total = sum(len(c) for c in chunks)
    if workers <= 1 or total < POOL_MIN:
        for k, rows in enumerate(chunks):
            on_chunk(k, *_decode_rows(items, spec, rows))
        return
    import multiprocessing

    # fork where there is one: a worker only runs Pillow and numpy, and skips re-importing torch (seconds each)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    try:
        pending: dict[Any, int] = {}
        queue = iter(range(len(chunks)))
        for k in queue:  # at most 2 chunks per worker in flight: bounded memory
            pending[pool.submit(_decode_rows, items, spec, chunks[k])] = k
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                k = pending.pop(fut)
                on_chunk(k, *fut.result())
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(_decode_rows, items, spec, chunks[nxt])] = nxt
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def decode_indices(items: Any, spec: DecodeSpec, indices: np.ndarray, *, workers: int, unreadable: str,
                   progress: bool, log: Callable) -> tuple[np.ndarray, np.ndarray]:
    """Images ``indices`` decoded in memory: (pixels in the order of ``indices``, indices that were skipped)."""
    indices = np.asarray(indices, dtype=np.int64)
    out = np.zeros((len(indices), *spec.shape), dtype=np.uint8)
    chunks = [np.arange(s, min(s + CHUNK, len(indices))) for s in range(0, len(indices), CHUNK)]
    bad_all: list[tuple[int, str]] = []
    with _Progress(f"decode {spec.where}", len(indices), 0, progress, log) as bar:
        def store(k: int, pixels: np.ndarray, bad: list) -> None:
            out[chunks[k]] = pixels
            bad_all.extend(bad)
            _report(bad, items, spec, unreadable, log)
            bar.advance(len(pixels))

        _run_chunks(items, spec, [indices[c] for c in chunks], workers, store)
    return out, np.asarray(sorted(i for i, _ in bad_all), dtype=np.int64)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def decode_all(target: Path, items: Any, spec: DecodeSpec, *, workers: int, unreadable: str, progress: bool,
               log: Callable) -> None:
    """Decode every image into ``target`` (``.npy``), resuming a part file an earlier attempt left."""
    n = len(items)
    part = target.with_name(target.name + ".part")
    state_file = target.with_name(target.name.removesuffix(".npy") + ".state.json")
    skipped_file = skipped_path(target)
    shape = (n, *spec.shape)
    state = None
    if part.is_file() and state_file.is_file():
        try:
            state = json.loads(state_file.read_text())
            if state.get("shape") != list(shape) or state.get("chunk") != CHUNK:
                state = None
        except (OSError, ValueError):
            state = None
    if state is None:
        np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8, shape=shape)._mmap.close()
        state = {"shape": list(shape), "chunk": CHUNK, "done": [], "bad": {}}
        _write_json(state_file, state)
    row_bytes = int(np.prod(spec.shape))
    header = part.stat().st_size - n * row_bytes
    done = set(state["done"])
    chunks = [k for k in range(-(-n // CHUNK)) if k not in done]
    if done:
        log(f"{spec.where}: resuming the decode into {target.name}: {min(len(done) * CHUNK, n)}/{n} images done")
    rows = [np.arange(k * CHUNK, min((k + 1) * CHUNK, n)) for k in chunks]
    fd = os.open(part, os.O_WRONLY)
    last_save = time.monotonic()
    try:
        with _Progress(f"decode {spec.where}", n, n - sum(len(r) for r in rows), progress, log) as bar:
            def store(j: int, pixels: np.ndarray, bad: list) -> None:
                nonlocal last_save
                _report(bad, items, spec, unreadable, log)
                os.pwrite(fd, pixels.tobytes(), header + int(rows[j][0]) * row_bytes)
                state["done"].append(chunks[j])
                state["bad"].update({str(i): reason for i, reason in bad})
                now = time.monotonic()
                if now - last_save > 2.0 or len(state["done"]) * CHUNK >= n:
                    os.fsync(fd)  # the pixels reach the disk before the state that vouches for them
                    _write_json(state_file, state)
                    last_save = now
                bar.advance(len(pixels))

            _run_chunks(items, spec, rows, workers, store)
    finally:
        os.fsync(fd)  # what an interrupted decode keeps: the pixels first, then the state that lists them
        os.close(fd)
        if len(state["done"]) * CHUNK < n:
            _write_json(state_file, state)
    skipped = sorted(int(i) for i in state["bad"])
    if skipped:
        _write_json(skipped_file, skipped)
    else:
        skipped_file.unlink(missing_ok=True)
    os.replace(part, target)
    state_file.unlink(missing_ok=True)


def skipped_path(target: Path) -> Path:
    return target.with_name(target.name.removesuffix(".npy") + ".skipped.json")


def read_skipped(target: Path) -> np.ndarray:
    path = skipped_path(target)
    if not path.is_file():
        return np.empty(0, dtype=np.int64)
    return np.asarray(json.loads(path.read_text()), dtype=np.int64)
