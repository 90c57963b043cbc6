"""Barlow Twins training of the teacher g_φ: loss, kornia augmentations, LARS, warmup-cosine schedule.

The KRR-ST repository does not ship its teacher-training code (facts §6); the teacher stem and the released
checkpoints point to solo-learn, so this follows solo-learn's CIFAR Barlow Twins recipe
(``scripts/pretrain/cifar/barlow.yaml`` + ``augmentations/asymmetric.yaml``): projector 2048-2048-2048,
λ_offdiag 0.0051, loss scale 0.1, LARS (η 0.02, clip_lr, bias/norm excluded) lr 0.3 · batch/256, wd 1e-4,
10 warm-up epochs then cosine; views: RandomResizedCrop(0.08–1), colour jitter p 0.8 (0.4, 0.4, 0.2, 0.1),
grayscale p 0.2, h-flip 0.5, solarization p 0.2 on the second view only. Augmentations run batched on the
device (kornia), in [0, 1] pixel space; the trunk sees normalised views, like every other network in ddcore.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import kornia.augmentation as KA
import torch
import torch.nn.functional as F
from torch import nn


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, scale: float = 0.1) -> torch.Tensor:
    """solo-learn's ``barlow_loss_func``: cross-correlation of batch-standardised embeddings pushed to I."""
    n = z1.shape[0]
    z1 = (z1 - z1.mean(0)) / (z1.std(0, unbiased=False) + 1e-5)  # BatchNorm1d(affine=False) in train mode
    z2 = (z2 - z2.mean(0)) / (z2.std(0, unbiased=False) + 1e-5)
    corr = z1.T @ z2 / n
    diag = torch.diagonal(corr)
    on_diag = (diag - 1).pow(2).sum()
    off_diag = corr.pow(2).sum() - diag.pow(2).sum()
    return scale * (on_diag + lambd * off_diag)


def projector(in_dim: int, dims: Sequence[int]) -> nn.Sequential:
    """MLP projector: (Linear → BN → ReLU) for every hidden width, then a final Linear."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in dims[:-1]:
        layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, dims[-1]))
    return nn.Sequential(*layers)


def make_view_augmentations(size: tuple[int, int], min_scale: float = 0.08) -> tuple[nn.Module, nn.Module]:
    """The two asymmetric views (solarization only on the second), as kornia modules on [0, 1] images."""

    def view(solarize_p: float) -> nn.Module:
        ops: list[nn.Module] = [
            KA.RandomResizedCrop(size, scale=(min_scale, 1.0)),
            KA.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
            KA.RandomGrayscale(p=0.2),
        ]
        if solarize_p > 0:
            ops.append(KA.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p))  # threshold 0.5 = PIL's 128
        ops.append(KA.RandomHorizontalFlip())
        return nn.Sequential(*ops)

    return view(0.0), view(0.2)


class LARS(torch.optim.Optimizer):
    """SGD with momentum and LARS trust ratios (solo-learn's ``LARS``: η, ``clip_lr``, bias/norm excluded).

    Parameters with ``ndim == 1`` (biases, norm affine) get plain SGD without weight decay when
    ``exclude_bias_n_norm``. The trust ratio is computed with tensor ops only (no host sync).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4, eta: float = 0.02,
                 clip_lr: bool = True, exclude_bias_n_norm: bool = True, eps: float = 1e-8):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr,
                        exclude_bias_n_norm=exclude_bias_n_norm, eps=eps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim API
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if p.ndim != 1 or not group["exclude_bias_n_norm"]:
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d_p)
                    ratio = group["eta"] * p_norm / (g_norm + p_norm * group["weight_decay"] + group["eps"])
                    if group["clip_lr"]:
                        ratio = torch.clamp(ratio / group["lr"], max=1.0)
                    ratio = torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
                    d_p = (d_p + group["weight_decay"] * p) * ratio
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])
        return None


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, start_lr: float = 3e-5,
                  min_lr: float = 0.0) -> float:
    """Learning rate at ``step``: linear warm-up from ``start_lr`` for ``warmup`` steps, then cosine to ``min_lr``."""
    if warmup > 0 and step < warmup:
        return start_lr + (base_lr - start_lr) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def train_barlow_twins(
    trunk: nn.Module,
    images: torch.Tensor,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "lars",
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    lars_eta: float = 0.02,
    warmup_epochs: int = 10,
    projector_dims: Sequence[int] = (2048, 2048, 2048),
    lambd: float = 0.0051,
    scale_loss: float = 0.1,
    min_scale: float = 0.08,
    amp: bool = True,
    log: Callable[[str], None] = print,
    on_epoch_end: Optional[Callable[[int], None]] = None,
) -> list[float]:
    """Train ``trunk`` in place with Barlow Twins on uint8 ``images`` ``[N, C, H, W]``; returns epoch losses.

    Views are augmented in [0, 1] pixel space and then normalised with ``mean``/``std`` (the run's constants).

    Uses the global torch RNG (callers seed it); drops the last incomplete batch like solo-learn.
    ``lr`` is the base learning rate for batch 256 (scaled linearly by ``batch_size / 256``).
    """
    device = images.device
    n = int(images.shape[0])
    batch_size = min(batch_size, n)
    steps_per_epoch = max(1, n // batch_size)
    total = epochs * steps_per_epoch
    head = projector(trunk.out_dim, projector_dims).to(device)
    view1, view2 = (v.to(device) for v in make_view_augmentations(tuple(images.shape[-2:]), min_scale))
    params = list(trunk.parameters()) + list(head.parameters())
    base_lr = lr * batch_size / 256
    if optimizer == "lars":
        opt: torch.optim.Optimizer = LARS(params, lr=base_lr, momentum=momentum, weight_decay=weight_decay,
                                          eta=lars_eta)
    else:
        opt = torch.optim.SGD(params, lr=base_lr, momentum=momentum, weight_decay=weight_decay)
    mean = mean.view(1, -1, 1, 1).to(device)
    std = std.view(1, -1, 1, 1).to(device)
    use_amp = amp and device.type == "cuda"
    trunk.train()
    head.train()
    losses: list[float] = []
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, device=device)
        total_loss = torch.zeros((), device=device)
        for b in range(steps_per_epoch):
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step, total, warmup_epochs * steps_per_epoch, base_lr)
            x = images[order[b * batch_size:(b + 1) * batch_size]].float() / 255.0
            with torch.no_grad():
                v1 = (view1(x) - mean) / std
                v2 = (view2(x) - mean) / std
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                z1 = head(trunk(v1)).float()  # views forwarded separately: per-view BN statistics (solo-learn)
                z2 = head(trunk(v2)).float()
            loss = barlow_twins_loss(z1, z2, lambd, scale_loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss = total_loss + loss.detach()
            step += 1
        losses.append(float(total_loss / steps_per_epoch))  # one host sync per epoch
        if epoch == 0 or (epoch + 1) % max(1, epochs // 10) == 0 or epoch + 1 == epochs:
            log(f"[krr teacher] Barlow Twins epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
        if on_epoch_end is not None:  # progress (done epochs)
            on_epoch_end(epoch + 1)
    return losses
