"""The pretrained ResNet18 pool of the class-centralization term (VincenDen/IID DM+ours/pre_model.py).

The official code trains ``num_premodels`` (1000) DC ResNet18s (instance norm) from scratch on the real training
set, 40 epochs each, SGD lr 0.01 momentum 0.9 weight decay 5e-4, batch 256, no augmentation, saves each one to
``./pre_dict_res18_40/buffer{i}.pth`` and ``torch.load``s a random file at every distillation iteration.

Here the pool is trained on first use, cached on disk as one safetensors file per member under
``build.cache_dir / "iid_pool" / <dataset>-<arch>-<hash of dataset facts + arch options + training settings>``
(members already on disk are reused, so an interrupted build resumes), loaded into memory once per process and
shared by every component through a module-level memo. Member ``i`` is seeded from (``seed``, ``i``) only, so the
cache does not depend on the run seed and any recipe on the same data and settings reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.config import ComponentRef, non_negative, option, positive
from ddcore.context import derive_seed

_MEMO: dict[str, list[nn.Module]] = {}


@attrs.define(frozen=True, kw_only=True)
class PoolConfig:
    """Pretrained pool settings (defaults: IID pre_model.py, except ``size``; see README)."""

    size: int = option(10, "Networks in the pool. The official code trains 1000 and comments that fewer is fine.",
                       validator=positive)
    epochs: int = option(40, "Training epochs per network on the real training split (code: 40; paper: 30).",
                         validator=positive)
    lr: float = option(0.01, "SGD learning rate (pre_model.py).", validator=positive)
    momentum: float = option(0.9, "SGD momentum (pre_model.py).", validator=non_negative)
    weight_decay: float = option(5e-4, "SGD weight decay (pre_model.py).", validator=non_negative)
    batch: int = option(256, "Training batch size (pre_model.py).", validator=positive)
    arch: ComponentRef = option(ComponentRef("ResNet18"), "Backbone of the pool (official: DC ResNet18, instance norm).",
                                  kind="backbone")
    seed: int = option(0, "Seed of the pool (member i uses (seed, i)); part of the cache key.")


def pool_key(config: PoolConfig, build) -> str:
    """Cache key: dataset facts + architecture (name and options) + every training setting."""
    info = build.info
    facts = {
        "dataset": [info.name, info.num_classes, list(info.image_shape), list(info.mean), list(info.std)],
        "train": [len(build.train), list(getattr(build.train, "class_counts", []))],
        "arch": [config.arch.name, config.arch.options],
        "settings": [config.epochs, config.lr, config.momentum, config.weight_decay, config.batch, config.seed],
        "format": 1,
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    safe_name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(info.name))
    return f"{safe_name}-{config.arch.name}-{digest}"


def _new_member(config: PoolConfig, build, index: int) -> nn.Module:
    devices = [build.device] if build.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed("ddcore_iid.pool", config.seed, index))
        return build.make_backbone(config.arch)


def train_member(config: PoolConfig, build, index: int, progress=None) -> nn.Module:
    """Train pool member ``index`` from scratch on the real training split (CE, SGD, no augmentation);
    ``progress.advance()`` after every batch when given."""
    net = _new_member(config, build, index)
    net.train()
    # first-order passes: compiled code where the run compiles them (``HotPath.first_order``), else ``net`` itself
    hot_path = getattr(build, "hot_path", None)
    forward = hot_path.first_order(net) if hot_path is not None else net
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    for epoch in range(config.epochs):
        g = torch.Generator(device=build.device)
        g.manual_seed(derive_seed("ddcore_iid.pool.batches", config.seed, index, epoch))
        for batch in build.train.iterate(config.batch, g):
            loss = F.cross_entropy(forward(batch.images), batch.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress.advance()
    return net


def _freeze(net: nn.Module) -> nn.Module:
    net.eval()  # instance norm: no effect; the official code calls train(), also without effect
    net.requires_grad_(False)
    for p in net.parameters():
        p.grad = None  # drop the last training step's gradients (memory, and nothing may read them)
    return net


def load_or_train_pool(config: PoolConfig, build, log=None) -> list[nn.Module]:
    """The pool's frozen networks: from memory, else from the disk cache, else trained now (and cached)."""
    from safetensors.torch import load_file, save_file

    key = pool_key(config, build)
    memo_key = f"{key}|{config.size}|{build.device}"
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    directory = Path(build.cache_dir) / "iid_pool" / key
    directory.mkdir(parents=True, exist_ok=True)
    log = log or getattr(build, "log", print)
    nets = []
    paths = [directory / f"member_{i:04d}.safetensors" for i in range(config.size)]
    to_train = sum(not p.exists() for p in paths)
    progress = None
    if to_train and hasattr(build, "progress_task"):
        # counted in batches: one member is hours of CPU at the official 40 epochs, so the ETA must move within it
        batches = to_train * config.epochs * -(-len(build.train) // config.batch)
        progress = build.progress_task(f"iid pool ({to_train} of {config.size} networks to train)", batches,
                                       unit="batches")
    for i, path in enumerate(paths):
        if path.exists():
            net = _new_member(config, build, i)
            net.load_state_dict(load_file(str(path), device=str(build.device)))
        else:
            log(f"ddcore-iid: training pretrained pool member {i + 1}/{config.size} ({config.arch.name}, "
                f"{config.epochs} epochs) -> {path}")
            net = train_member(config, build, i, progress)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(tmp))
            os.replace(tmp, path)
        nets.append(_freeze(net))
    if progress is not None:
        progress.close()
    _MEMO[memo_key] = nets
    return nets


def pick_member(pool: list[Any], seed: int, step: int) -> int:
    """Index of the pool member of ``step`` (host-side generator: no device sync)."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, "ddcore_iid.pool.pick", step))
    return int(torch.randint(len(pool), (1,), generator=g))


def clear_memo() -> None:
    """Forget the in-memory pools (tests)."""
    _MEMO.clear()


def cached_members(config: PoolConfig, build) -> Optional[list[Path]]:
    """Member files present on disk for this config (tests and diagnostics)."""
    directory = Path(build.cache_dir) / "iid_pool" / pool_key(config, build)
    return sorted(directory.glob("member_*.safetensors")) if directory.exists() else None
