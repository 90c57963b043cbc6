"""Using a finished run's synthetic set outside ddcore: :func:`load_synset` and :func:`export_synset`.

``synset.safetensors`` holds the parameterization's tensors and its *materialised* output, in normalised space
and before the run's expansion augmentations (IDM's partition turns one stored image into several). What an
evaluator trains on is ``expand(materialize())``; :func:`load_synset` rebuilds exactly that from the run's
``recipe.toml``: the data source (for the dataset facts and any data-dependent buffer), the augmentations
and the parameterization, never the sampler or the objectives (which may pre-train teachers).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ddcore.artifacts import atomic_write_bytes, atomic_write_text
from ddcore.errors import UserError
from ddcore.types import DatasetInfo, SynBatch

__all__ = ["EXPORT_FORMATS", "SynsetDataset", "export_synset", "load_synset"]

EXPORT_FORMATS = ("imagefolder", "npz", "pt")


class SynsetDataset(Dataset):
    """A distilled set as a map-style dataset.

    Item ``i`` is a tuple of the tensors the set has, in this order: the image ``[C, H, W]``, its label (an int64
    scalar for hard labels, a float ``[K]`` vector for soft labels) and its target ``[D]`` (methods that learn
    target representations). ``images``/``labels``/``targets`` hold the whole set; ``info`` the dataset facts
    (normalisation ``mean``/``std``, ``class_names``, ``num_classes``).

    :ivar normalized: images are in the normalised space networks see (else ``[0, 1]``-scale pixels, unclipped).
    :ivar expanded: the run's expansion augmentations were applied (what the evaluator trains on).
    """

    def __init__(self, images: torch.Tensor, labels: Optional[torch.Tensor], targets: Optional[torch.Tensor],
                 info: DatasetInfo, *, normalized: bool, expanded: bool):
        self.images, self.labels, self.targets, self.info = images, labels, targets, info
        self.normalized, self.expanded = normalized, expanded
        self._fields = [t for t in (images, labels, targets) if t is not None]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self._fields)

    @property
    def hard_labels(self) -> bool:
        return self.labels is not None and self.labels.dtype == torch.int64 and self.labels.ndim == 1

    def synbatch(self) -> SynBatch:
        return SynBatch(self.images, self.labels, self.targets)


def _finished_run(run_dir: Path) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    recipe, synset = run_dir / "recipe.toml", run_dir / "synset.safetensors"
    if not recipe.is_file() or not synset.is_file():
        raise UserError(f"{run_dir}: not a finished run (needs recipe.toml and synset.safetensors)")
    return recipe, synset


def build_parameterization(recipe, device: str = "cpu"):
    """The recipe's data source, build context (augmentations included) and parameterization, on ``device``.

    The same construction as ``Run.build`` up to the parameterization (nothing after it is built).
    """
    from ddcore.context import BuildContext
    from ddcore.data.store import ClassIndexedData
    from ddcore.engine import Run, cache_dir

    import attrs

    # the evaluator plays no part in the set (and its plugin need not be installed to load it)
    run = Run(attrs.evolve(recipe, eval=None), out_dir=None, device=device, progress=False, log=lambda *_: None)
    reg, cfg = run.host.registry, run.configs
    source = reg.get("data", recipe.data.name).factory(cfg["data"], SimpleNamespace(recipe=recipe, file=recipe.file))
    info = source.info()
    images, labels = source.load("train")
    train = ClassIndexedData(images, labels, info, run.device)

    def load_test():
        x, y = source.load("test")
        return ClassIndexedData(x, y, info, run.device)

    build = BuildContext(
        recipe=recipe, registry=reg, info=info, device=run.device, seed=recipe.seed, train=train,
        test_loader=load_test, cache_dir=cache_dir(), out_dir=None, log=lambda *_: None, hot_path=run.hot_path,
    )
    build.augmentations = [
        reg.get("augmentation", a.name).factory(cfg[f"augment[{i}]"], build) for i, a in enumerate(recipe.augment)
    ]
    with build.seeded("parameterization"):
        parameterization = reg.get("parameterization", recipe.synset.name).factory(cfg["synset"], build)
    parameterization.to(run.device)
    return build, parameterization


def load_synset(run_dir: str | Path, *, expand: bool = True, normalized: bool = True,
                device: str = "cpu") -> SynsetDataset:
    """The synthetic set of a finished run, as its evaluator trains on it.

    :param run_dir: a run directory (``recipe.toml`` + ``synset.safetensors``).
    :param expand: apply the run's expansion augmentations (IDM partition, ...): what evaluators train on.
        ``False`` gives the parameterization's raw ``materialize()`` output.
    :param normalized: keep the normalised space networks see; ``False`` returns ``x * std + mean``
        (``[0, 1]`` pixel scale, not clipped: distilled pixels may lie outside).
    :param device: where the tensors (and the rebuilt components) live.
    :raises UserError: not a finished run, or a recipe whose plugins are not installed.
    """
    from safetensors.torch import load_file

    from ddcore.recipe import load_recipe

    recipe_path, synset_path = _finished_run(Path(run_dir))
    build, parameterization = build_parameterization(load_recipe(recipe_path), device)
    tensors = load_file(str(synset_path), device=str(build.device))
    parameterization.load_state_dict({k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")})
    with torch.no_grad():
        syn = parameterization.materialize()
        if expand:
            syn = build.expand(syn)
        syn = syn.detach()
    images = syn.images
    if not normalized:
        mean = torch.tensor(build.info.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(build.info.std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        images = images * std + mean
    return SynsetDataset(images, syn.labels, syn.targets, build.info, normalized=normalized, expanded=expand)


# -- export ------------------------------------------------------------------------------------------
def _info_json(data: SynsetDataset, fmt: str, extra: Optional[dict] = None) -> str:
    info = data.info
    return json.dumps({
        "format": fmt, "dataset": info.name, "num_classes": info.num_classes, "class_names": list(info.class_names),
        "shape": list(info.image_shape), "mean": list(info.mean), "std": list(info.std), "images": len(data),
        "normalized": data.normalized, "expanded": data.expanded,
        "labels": None if data.labels is None else ("hard" if data.hard_labels else "soft"),
        "targets": data.targets is not None, **(extra or {}),
    }, indent=2)


def class_folder_names(info: DatasetInfo) -> list[str]:
    """Folder of each class: zero-padded index first, so ImageFolder's sorted order is the class order."""
    digits = len(str(max(info.num_classes - 1, 0)))
    names = []
    for c in range(info.num_classes):
        name = info.class_names[c] if c < len(info.class_names) else ""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._")
        names.append(f"{c:0{digits}d}_{safe}" if safe else f"{c:0{digits}d}")
    return names


def to_uint8_pixels(images_01: torch.Tensor) -> tuple[np.ndarray, int]:
    """``[N, C, H, W]`` ``[0, 1]``-scale floats → uint8 ``[N, H, W, C]`` and the number of clipped values."""
    clipped = int(((images_01 < 0) | (images_01 > 1)).sum())
    pixels = (images_01.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return pixels, clipped


def export_synset(run_dir: str | Path, out: str | Path, fmt: str, *, expand: bool = True,
                  normalized: bool = True, device: str = "cpu") -> list[Path]:
    """Write a finished run's synthetic set for tools outside ddcore; returns the files written.

    * ``imagefolder``: ``out/<class folder>/<index>.png`` (8-bit, values outside ``[0, 1]`` clipped; hard
      labels only) that ``torchvision.datasets.ImageFolder`` reads in class order;
    * ``npz``: ``out/synset.npz`` with ``images`` (float32), ``labels``, ``targets`` (when present), ``mean``,
      ``std``, ``class_names``;
    * ``pt``: ``out/synset.pt``, the same as a dict of tensors and lists (``torch.load(weights_only=True)``).

    Every format also writes ``out/dataset.json`` (normalisation, classes, what the tensors are). ``out`` must
    not exist or be empty: nothing already there is overwritten.
    """
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"export: --format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"export: --out {out} exists and is not an empty directory (nothing is overwritten)")
    data = load_synset(run_dir, expand=expand, normalized=normalized and fmt != "imagefolder", device=device)
    written: list[Path] = []
    if fmt == "imagefolder":
        if not data.hard_labels:
            raise UserError("export: --format imagefolder needs hard class labels; this set has "
                            f"{'no labels' if data.labels is None else 'soft labels'} (use --format npz or pt)")
        from PIL import Image

        pixels, clipped = to_uint8_pixels(data.images.float())
        folders = class_folder_names(data.info)
        labels = data.labels.cpu().tolist()
        digits = len(str(max(len(data) - 1, 0)))
        for i, (array, label) in enumerate(zip(pixels, labels)):
            image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array,
                                    mode="L" if array.shape[-1] == 1 else "RGB")
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            path = out / folders[label] / f"{i:0{digits}d}.png"
            atomic_write_bytes(path, buffer.getvalue())
            written.append(path)
        extra = {"clipped_values": clipped, "class_folders": folders,
                 "pixels": "uint8 PNG of clamp(x * std + mean, 0, 1); single-channel sets are grayscale PNGs"}
    else:
        arrays: dict[str, Any] = {"images": data.images.float().cpu()}
        if data.labels is not None:
            arrays["labels"] = data.labels.cpu()
        if data.targets is not None:
            arrays["targets"] = data.targets.float().cpu()
        path = out / f"synset.{fmt}"
        buffer = io.BytesIO()
        if fmt == "npz":
            np.savez(buffer, **{k: v.numpy() for k, v in arrays.items()}, mean=np.asarray(data.info.mean, np.float32),
                     std=np.asarray(data.info.std, np.float32), class_names=np.asarray(list(data.info.class_names), str))
        else:
            torch.save({**arrays, "mean": list(data.info.mean), "std": list(data.info.std),
                        "class_names": list(data.info.class_names), "normalized": data.normalized,
                        "expanded": data.expanded}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
        extra = {}
    atomic_write_text(out / "dataset.json", _info_json(data, fmt, extra))
    written.append(out / "dataset.json")
    return written
