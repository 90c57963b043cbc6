"""The ``npz`` data source: the offline dataset folders of ``$DDCORE_DATA`` (shared/datasets).

A dataset folder holds ``train.npz`` and ``test.npz`` (or shards ``train-0.npz``, ``train-1.npz``, …,
concatenated in numeric order) and optionally ``classes.txt`` (line i = name of label i). Two layouts:

* decoded: keys ``x`` (uint8 ``[N, H, W, C]`` or ``[N, H, W]``) and ``y`` (int64 ``[N]``);
* encoded: keys ``jpeg`` (uint8, all image files concatenated — any format Pillow reads), ``offsets`` (int64
  ``[N+1]``: image i is ``jpeg[offsets[i]:offsets[i+1]]``) and ``y``.

Encoded archives are decoded once with Pillow and cached as ``.npy`` under ``$DDCORE_CACHE`` (default
``~/.cache/ddcore``), keyed by each file's size, mtime and the sha256 of its first MiB. Small subsets
(``*_per_class`` keeping under half of a split) are decoded directly when no cache exists yet.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, Optional

import attrs
import numpy as np
from PIL import Image

from ddcore.config import option
from ddcore.data._cache import CachedDecoder, file_fingerprint
from ddcore.data._decode import BlobItems, DecodeSpec
from ddcore.data.source import DecodeConfig, NativeLayout, ProcessedSource, Split, resolve_existing
from ddcore.data.constants import stats_for_folder
from ddcore.errors import DataError

__all__ = [
    "decode_blobs", "image_mode", "npy_header_shape", "npy_prefix_bytes", "NpzConfig", "NpzSource", "split_files"
]


@attrs.define(frozen=True, kw_only=True)
class NpzConfig(DecodeConfig):
    """Options of the ``npz`` source (``cache``, ``decode_workers`` and ``unreadable`` apply to archives of
    encoded JPEG/PNG images)."""

    path: str = option(doc="Dataset folder (train.npz, test.npz, classes.txt). A relative path is looked up under "
                           "$DDCORE_DATA, then next to the recipe.")


def split_files(folder: Path, split: str) -> list[Path]:
    """``<split>.npz`` and/or shards ``<split>-<k>.npz`` of ``folder``, in numeric order."""
    pattern = re.compile(rf"^{re.escape(split)}(?:-(\d+))?\.npz$")
    found = []
    for p in folder.iterdir():
        m = pattern.match(p.name)
        if m:
            found.append((-1 if m.group(1) is None else int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _read_npy_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape), dtype


#: what reading a damaged archive raises (a CRC mismatch is a BadZipFile, a cut stream an EOFError or zlib.error)
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def npy_header_shape(npz_path: Path, key: str) -> tuple[int, ...]:
    """Shape of array ``key`` in an npz archive, read from its .npy header (no pixel is decompressed)."""
    try:
        with zipfile.ZipFile(npz_path) as zf, zf.open(f"{key}.npy") as fh:
            return _read_npy_header(fh)[0]
    except READ_ERRORS as exc:
        raise DataError(f"data source 'npz': cannot read {npz_path} (key {key}): {exc}") from exc


def npy_prefix_bytes(npz_path: Path, key: str, nbytes: int) -> bytes:
    """The first ``nbytes`` data bytes of 1-D uint8 array ``key`` of an npz archive (without reading the rest)."""
    try:
        with zipfile.ZipFile(npz_path) as zf, zf.open(f"{key}.npy") as fh:
            _read_npy_header(fh)
            return fh.read(nbytes)
    except READ_ERRORS as exc:
        raise DataError(f"data source 'npz': cannot read {npz_path} (key {key}): {exc}") from exc


def image_mode(img: Image.Image) -> str:
    """Pillow mode the decoded array uses: ``L`` for gray images, ``RGB`` otherwise."""
    return "L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB"


def decode_blobs(blob: np.ndarray, offsets: np.ndarray, indices: np.ndarray, *, mode: str,
                 size: tuple[int, int], where: str) -> np.ndarray:
    """Decode images ``indices`` of a concatenated-files blob into uint8 ``[n, H, W, C]`` (Pillow)."""
    height, width = size
    channels = 1 if mode == "L" else 3
    out = np.empty((len(indices), height, width, channels), dtype=np.uint8)
    for row, i in enumerate(indices):
        start, stop = int(offsets[i]), int(offsets[i + 1])
        try:
            with Image.open(io.BytesIO(blob[start:stop].tobytes())) as img:
                if img.mode != mode:
                    img = img.convert(mode)
                arr = np.asarray(img)
        except (OSError, ValueError) as exc:
            raise DataError(f"{where}: image {i} (bytes {start}:{stop}) cannot be decoded: {exc}") from exc
        if arr.shape[:2] != (height, width):
            raise DataError(f"{where}: image {i} is {arr.shape[1]}x{arr.shape[0]}, expected {width}x{height} "
                            f"(all images of an archive must have one size)")
        out[row] = arr.reshape(height, width, channels)
    return out


class NpzSource(ProcessedSource):
    """Image-classification splits from a folder of ``.npz`` archives (decoded pixels or JPEG/PNG bytes)."""

    source_name = "npz"

    def __init__(self, config: NpzConfig, build: Any = None):
        super().__init__(config, build)
        self.folder = resolve_existing(config.path, build, option_name="path", source="npz")
        if not self.folder.is_dir():
            raise DataError(f"data source 'npz': path {str(self.folder)!r} is not a folder")
        self._native: Optional[NativeLayout] = None
        self._files: dict[str, list[Path]] = {}
        self._decoder = CachedDecoder(config, build)

    # -- files --------------------------------------------------------------------------------------------
    def files(self, split: Split) -> list[Path]:
        if split not in self._files:
            found = split_files(self.folder, split)
            if not found:
                raise DataError(f"data source 'npz': no {split}.npz (or {split}-<k>.npz shards) in {self.folder} "
                                f"(set $DDCORE_DATA or 'path' to the dataset folder)")
            self._files[split] = found
        return self._files[split]

    def _archive(self, path: Path):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"data source 'npz': cannot read {path}: {exc}") from exc

    def _array(self, path: Path, key: str) -> np.ndarray:
        """Array ``key`` of archive ``path``, fully read (so a bad CRC or a cut file fails here, naming both)."""
        with self._archive(path) as z:
            try:
                return np.asarray(z[key])
            except READ_ERRORS as exc:
                raise DataError(f"data source 'npz': cannot read {path} (key {key}): {exc}") from exc

    def _layout(self, path: Path) -> str:
        with self._archive(path) as z:
            keys = set(z.files)
        if {"x", "y"} <= keys:
            return "decoded"
        if {"jpeg", "offsets", "y"} <= keys:
            return "encoded"
        raise DataError(f"data source 'npz': {path} has keys {sorted(keys)}; expected x and y (decoded pixels) "
                        f"or jpeg, offsets and y (encoded images)")

    # -- ProcessedSource readers ------------------------------------------------------------------------
    def native(self) -> NativeLayout:
        if self._native is None:
            first = self.files("train")[0]
            if self._layout(first) == "decoded":
                shape = npy_header_shape(first, "x")
                if len(shape) not in (3, 4):
                    raise DataError(f"data source 'npz': {first} key x has shape {list(shape)}; expected [N, H, W, C]")
                height, width = shape[1], shape[2]
                channels = shape[3] if len(shape) == 4 else 1
            else:
                offsets = self._array(first, "offsets")
                blob = npy_prefix_bytes(first, "jpeg", int(offsets[1]))[int(offsets[0]):]
                with Image.open(io.BytesIO(blob)) as img:
                    width, height = img.size
                    channels = 1 if image_mode(img) == "L" else 3
            names = self._class_names()
            labels = self.read_labels("train")
            if names:
                num_classes = len(names)
                if labels.size and int(labels.max()) >= num_classes:
                    raise DataError(f"data source 'npz': {first} has label {int(labels.max())} but "
                                    f"{self.folder / 'classes.txt'} names only {num_classes} classes (labels "
                                    f"0..{num_classes - 1}); add the missing names or fix the labels")
            else:
                num_classes = int(labels.max()) + 1 if labels.size else 0
            self._native = NativeLayout(name=self.folder.name, channels=int(channels), height=int(height),
                                        width=int(width), num_classes=num_classes, class_names=names,
                                        stats=stats_for_folder(self.folder.name))
        return self._native

    def _class_names(self) -> tuple[str, ...]:
        path = self.folder / "classes.txt"
        if not path.is_file():
            return ()
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return tuple(lines)

    def read_labels(self, split: Split) -> np.ndarray:
        parts = []
        for path in self.files(split):
            y = self._array(path, "y")
            if y.dtype.kind not in "iu":
                # a float label would be truncated silently (2.7 -> 2): the archive is wrong, not the reader
                raise DataError(f"data source 'npz': {path} key y has dtype {y.dtype}; expected integer class labels")
            parts.append(y.astype(np.int64, copy=False).reshape(-1))
        return np.concatenate(parts)

    def read_images(self, split: Split, indices: Optional[np.ndarray]) -> np.ndarray:
        paths = self.files(split)
        if self._layout(paths[0]) == "decoded":
            parts = [self._array(path, "x") for path in paths]
            images = parts[0] if len(parts) == 1 else np.concatenate(parts)
            return images if indices is None else images[indices]
        return self._read_encoded(split, indices)

    def _encoded_plan(self, split: Split) -> tuple[str, BlobItems, DecodeSpec]:
        paths = self.files(split)
        nat = self.native()
        mode = "L" if nat.channels == 1 else "RGB"
        stamps = tuple(file_fingerprint(p) for p in paths)
        key = hashlib.sha256("|".join(stamps).encode()).hexdigest()[:20]
        name = f"npz-{self.folder.name}-{split}-{mode}-{key}"
        counts = tuple(len(self._array(p, "offsets")) - 1 for p in paths)
        spec = DecodeSpec(mode=mode, size=(nat.height, nat.width), resize_mismatched=False,
                          where="data source 'npz'")
        return name, BlobItems(tuple(str(p) for p in paths), counts, stamps), spec

    def _read_encoded(self, split: Split, indices: Optional[np.ndarray], *, mmap: bool = False) -> np.ndarray:
        return self._decoder.decode(split, self._encoded_plan(split), indices, mmap=mmap)

    def read_all(self, split: Split) -> np.ndarray:
        paths = self.files(split)
        if self._layout(paths[0]) == "decoded":
            return self.read_images(split, None)
        return self._read_encoded(split, None, mmap=True)

    def dropped(self, split: Split) -> np.ndarray:
        return self._decoder.dropped(split)

    def data_key(self, split: Split) -> Optional[str]:
        paths = self.files(split)
        return f"npz-{self.folder.name}-" + hashlib.sha256("|".join(file_fingerprint(p) for p in paths).encode()
                                                          ).hexdigest()[:20]
