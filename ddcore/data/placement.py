"""Where a split's pixels live (``[data] store``) and how the engine opens a split there (public).

``auto`` picks by size: the split stays on the run's device when it takes at most a quarter of that device's
free memory (on a CPU: of the available RAM, counted once per rank on the host); otherwise, on CUDA, in host
memory when all ranks' copies take at most half the available RAM; otherwise memory-mapped. Sources that cannot
be mapped (no on-disk identity) fall back to ``host``/``device`` under ``auto``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch

from ddcore.data.store import PLACEMENTS, ClassIndexedData
from ddcore.errors import DataError
from ddcore.types import DatasetInfo

__all__ = ["STORE_CHOICES", "available_ram", "choose_placement", "open_split"]

STORE_CHOICES = ("auto", *PLACEMENTS)


def available_ram() -> int:
    """Bytes of RAM the kernel can give without swapping (``MemAvailable``), or total RAM where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _ranks_on_host() -> int:
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def choose_placement(nbytes: int, device: torch.device, *, mappable: bool = True,
                     ranks_on_host: Optional[int] = None) -> str:
    """The ``auto`` placement of a split of ``nbytes`` uint8 pixels for a run on ``device``."""
    ranks = ranks_on_host or _ranks_on_host()
    ram = available_ram()
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        if nbytes <= free // 4:
            return "device"
        if nbytes * ranks <= ram // 2 or not mappable:
            return "host"
        return "mmap"
    if nbytes * ranks <= ram // 4 or not mappable:
        return "device"
    return "mmap"


def open_split(source: Any, split: str, info: DatasetInfo, device: torch.device, store: str = "auto",
               *, log=None) -> ClassIndexedData:
    """Split ``split`` of ``source`` as a :class:`ClassIndexedData` under placement ``store`` (or ``auto``).

    ``mmap`` needs a :class:`~ddcore.data.source.ProcessedSource` with a :meth:`data_key`; the store file is
    built into the cache on first use (``ddcore/data/_mapped.py``).
    """
    from ddcore.data.source import ProcessedSource

    if store not in STORE_CHOICES:
        raise DataError(f"data.store = {store!r}; expected one of {', '.join(STORE_CHOICES)}")
    mappable = isinstance(source, ProcessedSource) and source.data_key(split) is not None
    if store == "auto":
        if isinstance(source, ProcessedSource):
            count = len(source.kept(split)[0])
            store = choose_placement(count * int(np.prod(info.image_shape)), device, mappable=mappable)
        else:
            store = "device"
    if store == "mmap":
        if not mappable:
            name = getattr(source, "source_name", type(source).__name__)
            raise DataError(f"data.store = 'mmap': data source '{name}' has no on-disk identity to map "
                            f"(npz, imagefolder and digits have one); use store = 'host' or 'device'")
        from ddcore.data._mapped import map_split

        mapped, labels, source_index = map_split(source, split)
        if log is not None:
            log(f"data {split}: {mapped.shape[0]} images memory-mapped from {mapped.path}")
        return ClassIndexedData(mapped.tensor(), torch.from_numpy(labels), info, device, placement="mmap",
                                source_index=torch.from_numpy(source_index), mapping=mapped)
    images, labels = source.load(split)
    return ClassIndexedData(images, labels, info, device, placement=store)
