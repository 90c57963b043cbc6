"""The ``imagefolder`` data source: ``root/train/<class>/…`` and ``root/test/<class>/…`` (or ``val/``) image files.

For TinyImageNet, ImageNette, fine-grained sets and anything a user has as class folders. Details:

* classes are the sub-folders of ``train/``, sorted by name; images are found recursively inside each class folder
  (TinyImageNet's ``train/<wnid>/images/*.JPEG`` works) and ordered by path;
* the test split is ``test/`` when present, else ``val/`` (option ``test_split``); a ``val/`` holding
  ``val_annotations.txt`` + ``images/`` (TinyImageNet's layout) is read through the annotations file;
* class names come from the folder names, mapped through ``root/words.txt`` (``wnid<TAB>name, …``) when present;
* the colour mode (gray or RGB) and size are those of the first training image; every image is converted to that
  mode and, when its size differs, resized bilinearly to it (or to ``resize x resize`` when ``resize`` is set);
* the decoded split is cached as ``.npy`` (keyed by the file list with sizes and mtimes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import attrs
import numpy as np
from PIL import Image

from ddcore.config import option
from ddcore.data._cache import CachedDecoder
from ddcore.data._decode import DecodeSpec, FileItems
from ddcore.data.source import DecodeConfig, NativeLayout, ProcessedSource, Split, resolve_existing
from ddcore.data.constants import stats_for_folder
from ddcore.data.npz import image_mode
from ddcore.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageFolderConfig", "ImageFolderSource"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


@attrs.define(frozen=True, kw_only=True)
class ImageFolderConfig(DecodeConfig):
    """Options of the ``imagefolder`` source."""

    root: str = option(doc="Folder with train/ and test/ (or val/) sub-folders of class folders. A relative path "
                           "is looked up under $DDCORE_DATA, then next to the recipe.")
    test_split: str = option("auto", "Folder used as the test split: auto (test/, else val/), test or val.",
                             choices=("auto", "test", "val"))


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class ImageFolderSource(ProcessedSource):
    """Class-folder image datasets (TinyImageNet, ImageNette, fine-grained sets, your own)."""

    source_name = "imagefolder"

    def __init__(self, config: ImageFolderConfig, build: Any = None):
        super().__init__(config, build)
        self.root = resolve_existing(config.root, build, option_name="root", source="imagefolder")
        train = self.root / "train"
        if not train.is_dir():
            raise DataError(f"data source 'imagefolder': {self.root} has no train/ folder of class folders")
        self.class_folders = tuple(sorted(p.name for p in train.iterdir() if p.is_dir()))
        if not self.class_folders:
            raise DataError(f"data source 'imagefolder': {train} holds no class folders")
        self._lists: dict[str, tuple[list[Path], np.ndarray]] = {}
        self._native: Optional[NativeLayout] = None
        self._plans: dict[str, tuple] = {}
        self._decoder = CachedDecoder(config, build)

    # -- file lists -------------------------------------------------------------------------------------
    def _split_folder(self, split: Split) -> Path:
        if split == "train":
            return self.root / "train"
        choice = self.config.test_split
        names = ("test", "val") if choice == "auto" else (choice,)
        for name in names:
            if (self.root / name).is_dir():
                return self.root / name
        raise DataError(f"data source 'imagefolder': {self.root} has no {' or '.join(n + '/' for n in names)} "
                        f"folder for the test split")

    def file_list(self, split: Split) -> tuple[list[Path], np.ndarray]:
        """Image paths of ``split`` in file order and their labels."""
        if split not in self._lists:
            folder = self._split_folder(split)
            index = {name: i for i, name in enumerate(self.class_folders)}
            paths: list[Path] = []
            labels: list[int] = []
            annotations = folder / "val_annotations.txt"
            if annotations.is_file() and (folder / "images").is_dir():
                for line in annotations.read_text(encoding="utf-8").splitlines():
                    parts = line.split("\t")
                    if len(parts) < 2:
                        continue
                    if parts[1] not in index:
                        raise DataError(f"data source 'imagefolder': {annotations} names class {parts[1]!r} "
                                        f"that train/ does not have")
                    paths.append(folder / "images" / parts[0])
                    labels.append(index[parts[1]])
                order = sorted(range(len(paths)), key=lambda i: (labels[i], str(paths[i])))
                paths, labels = [paths[i] for i in order], [labels[i] for i in order]
            else:
                for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
                    if sub.name not in index:
                        raise DataError(f"data source 'imagefolder': {sub} is a class folder that train/ lacks")
                    found = _images_under(sub)
                    paths.extend(found)
                    labels.extend([index[sub.name]] * len(found))
            if not paths:
                raise DataError(f"data source 'imagefolder': no image files under {folder}")
            self._lists[split] = (paths, np.asarray(labels, dtype=np.int64))
        return self._lists[split]

    def _class_names(self) -> tuple[str, ...]:
        words = self.root / "words.txt"
        if not words.is_file():
            return self.class_folders
        mapping = {}
        for line in words.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition("\t")
            if value:
                mapping[key.strip()] = value.split(",")[0].strip()
        return tuple(mapping.get(name, name) for name in self.class_folders)

    # -- ProcessedSource readers ------------------------------------------------------------------------
    def native(self) -> NativeLayout:
        if self._native is None:
            first = self.file_list("train")[0][0]
            try:
                with Image.open(first) as img:
                    width, height = img.size
                    channels = 1 if image_mode(img) == "L" else 3
            except OSError as exc:
                raise DataError(f"data source 'imagefolder': cannot read {first}: {exc}") from exc
            self._native = NativeLayout(name=self.root.name, channels=channels, height=height, width=width,
                                        num_classes=len(self.class_folders), class_names=self._class_names(),
                                        stats=stats_for_folder(self.root.name))
        return self._native

    def read_labels(self, split: Split) -> np.ndarray:
        return self.file_list(split)[1]

    def _decode_plan(self, split: Split) -> tuple[str, FileItems, DecodeSpec]:
        """(cache name, the files, how to decode them) of ``split``; the name covers every file's size and mtime."""
        if split not in self._plans:
            paths, _ = self.file_list(split)
            nat = self.native()
            mode = "L" if nat.channels == 1 else "RGB"
            size = (self.config.resize, self.config.resize) if self.config.resize else (nat.height, nat.width)
            listing = hashlib.sha256()
            for p in paths:
                st = p.stat()
                listing.update(f"{p.relative_to(self.root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            name = f"imagefolder-{self.root.name}-{split}-{mode}-{size[0]}x{size[1]}-{listing.hexdigest()[:20]}"
            spec = DecodeSpec(mode=mode, size=size, resize_mismatched=True, where="data source 'imagefolder'")
            self._plans[split] = (name, FileItems(tuple(str(p) for p in paths)), spec)
        return self._plans[split]

    def _decode(self, split: Split, indices: Optional[np.ndarray], *, mmap: bool = False) -> np.ndarray:
        return self._decoder.decode(split, self._decode_plan(split), indices, mmap=mmap)

    def read_images(self, split: Split, indices: Optional[np.ndarray]) -> np.ndarray:
        return self._decode(split, indices)

    def read_all(self, split: Split) -> np.ndarray:
        return self._decode(split, None, mmap=True)

    def dropped(self, split: Split) -> np.ndarray:
        return self._decoder.dropped(split)

    def data_key(self, split: Split) -> Optional[str]:
        return self._decode_plan(split)[0]
