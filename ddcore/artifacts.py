"""Writing run artefacts safely: atomic files, checkpoints, safetensors synsets, PNG grids.

Every file is written to a temporary sibling and moved into place with ``os.replace``, so an interrupted
run never leaves a half-written checkpoint or synset behind. Loading never unpickles arbitrary objects
(``torch.load(weights_only=True)``, safetensors).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ddcore.types import DatasetInfo, SynBatch

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "denormalize", "load_checkpoint", "save_checkpoint", "save_grid",
    "save_synset"
]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artefacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(_to_cpu(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)

    def move(obj):
        if isinstance(obj, torch.Tensor):
            # RNG states must stay CPU ByteTensors.
            return obj if obj.dtype == torch.uint8 else obj.to(device)
        if isinstance(obj, dict):
            return {k: move(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [move(v) for v in obj]
        return obj

    return move(state)


def save_synset(path: Path, params: dict[str, torch.Tensor], syn: SynBatch) -> None:
    """``param/<name>`` tensors (what ``load_state_dict`` needs) plus the materialised images/labels/targets."""
    from safetensors.torch import save

    tensors = {f"param/{k}": v.detach().cpu().contiguous().clone() for k, v in params.items()}
    tensors["images"] = syn.images.detach().cpu().contiguous().clone()
    if syn.labels is not None:
        tensors["labels"] = syn.labels.detach().cpu().contiguous().clone()
    if syn.targets is not None:
        tensors["targets"] = syn.targets.detach().cpu().contiguous().clone()
    atomic_write_bytes(path, save(tensors))


def denormalize(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    mean = torch.tensor(info.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=images.device).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


def save_grid(path: Path, syn: SynBatch, info: DatasetInfo, max_per_class: int = 10, max_images: int = 400) -> None:
    """A PNG grid: one row per class (at most ``max_per_class`` each) when labels are class-major."""
    from torchvision.utils import make_grid
    from PIL import Image

    images = syn.images.detach().float().cpu()
    if images.ndim != 4 or images.shape[1] != info.channels:
        return
    nrow = 10
    labels = syn.labels
    if labels is not None and labels.ndim == 1 and len(labels):
        counts = torch.bincount(labels.cpu(), minlength=info.num_classes)
        per_class = int(counts.max())
        take = min(per_class, max_per_class)
        order = torch.argsort(labels.cpu(), stable=True)
        rows = []
        start = 0
        for c in range(info.num_classes):  # host-side, once per run: not in the loop
            n = int(counts[c])
            rows.append(order[start:start + min(n, take)])
            start += n
        idx = torch.cat(rows)
        images, nrow = images[idx], take
    images = denormalize(images[:max_images], info)
    if info.channels == 1:
        images = images.repeat(1, 3, 1, 1)
    scale = max(1, 32 // max(info.height, 1))
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    grid = make_grid(images, nrow=max(nrow, 1), padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
