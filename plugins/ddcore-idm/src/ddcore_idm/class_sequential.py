"""IDM's class-sequential SGD update in closed form (``class_sequential_sgd``).

The official IDM loop (IDM_cifar10.py l.280-331) takes one ``SGD(lr, momentum=0.5)`` step **per class** on the
single synthetic tensor: for ``c = 0..C-1``: ``zero_grad; loss_c(S).backward(); step()``. Class ``c``'s loss
only touches class ``c``'s rows, but every step decays and applies the momentum buffer of *all* rows. With
momentum ``mu`` and learning rate ``eta``, a row of class ``c`` with buffer ``b0`` and position ``x0`` at the
start of an iteration therefore goes through

* ``c`` zero-gradient steps:  ``x_eval = x0 - eta * (mu + ... + mu^c) * b0``   <- where loss_c is evaluated;
* its own step:             ``b_c = mu^(c+1) * b0 + g_c``,  ``x = x_eval - eta * b_c``;
* ``C-1-c`` zero-gradient steps: ``x_final = x_eval - eta * (1 + mu + ... + mu^(C-1-c)) * b_c``,
  ``b_final = mu^(C-1-c) * b_c``.

:meth:`prepare` (called by the engine before ``materialize()``) moves every class's rows to ``x_eval``; the
objective terms are then computed for all classes in one batched forward; :meth:`step` applies the closed-form
final position and momentum. This reproduces the per-class loop exactly whenever each class's loss depends only
on its own rows (all terms ``separable``: DM / class-aware CE / IID with instance norm), with C forward passes
replaced by one. It is *not* one summed SGD step: with momentum 0.5 the classes see different look-ahead points
and the buffers decay C times per iteration.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from ddcore.components import SynOptimizer
from ddcore.config import non_negative, option, positive
from ddcore.errors import RecipeError


@attrs.define(frozen=True, kw_only=True)
class ClassSequentialSGDConfig:
    """Options of ``class_sequential_sgd`` (IDM: lr_img 0.2, momentum 0.5, no weight decay, constant lr)."""

    lr: float = option(0.2, "Learning rate of every per-class step (IDM command.txt: --lr_img 0.2).", validator=positive)
    momentum: float = option(0.5, "SGD momentum shared by all rows (IDM: 0.5).", validator=non_negative)


def _powers(mu: float, n: int) -> list[float]:
    return [mu**k for k in range(n + 1)]


class ClassSequentialSGD(SynOptimizer):
    """One SGD-with-momentum step per class, in class order, as IDM's loop does — applied in closed form.

    Needs ``parameterization.class_index(param)`` for every optimised tensor (rows per class; e.g. ``pixels``).
    """

    def __init__(self, config: ClassSequentialSGDConfig, build, *, param_groups, parameterization, total_steps=1):
        super().__init__(config, build)
        self.num_classes = int(build.num_classes)
        self.params: list[torch.nn.Parameter] = []
        self.lrs: list[float] = []
        coefs = []
        for group in param_groups:
            for p in group["params"]:
                cls = parameterization.class_index(p) if parameterization is not None else None
                if cls is None:
                    raise RecipeError(
                        f"optimizer 'class_sequential_sgd' needs per-class rows, but parameter group "
                        f"'{group.get('name', '?')}' of the parameterization has none (class_index is None)",
                        key="optimizer.name",
                    )
                self.params.append(p)
                self.lrs.append(config.lr * float(group.get("lr_scale", 1.0)))
                coefs.append(self._row_coefficients(cls.to(p.device), p))
        self.coefs = coefs
        self.buffers: list[torch.Tensor] = [torch.zeros_like(p) for p in self.params]

    def _row_coefficients(self, cls: torch.Tensor, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-row closed-form coefficients, shaped ``[rows, 1, 1, ...]`` to broadcast over the row's entries."""
        mu, c_total = self.config.momentum, self.num_classes
        pw = _powers(mu, c_total + 1)
        shift = torch.tensor([sum(pw[1 : c + 1]) for c in range(c_total)], dtype=p.dtype)  # mu + .. + mu^c
        pre = torch.tensor([pw[c + 1] for c in range(c_total)], dtype=p.dtype)  # mu^(c+1)
        move = torch.tensor([sum(pw[: c_total - c]) for c in range(c_total)], dtype=p.dtype)  # 1 + .. + mu^(C-1-c)
        post = torch.tensor([pw[c_total - 1 - c] for c in range(c_total)], dtype=p.dtype)  # mu^(C-1-c)
        view = (-1,) + (1,) * (p.dim() - 1)
        return {k: v.to(p.device)[cls].view(view) for k, v in
                {"shift": shift, "pre": pre, "move": move, "post": post}.items()}

    def prepare(self) -> None:
        """Move each class's rows to the point where the sequential loop evaluates that class's gradient."""
        with torch.no_grad():
            for p, b, k, lr in zip(self.params, self.buffers, self.coefs, self.lrs):
                p.sub_(lr * k["shift"] * b)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Final positions and momentum after the C per-class steps (gradients taken at the prepared point)."""
        with torch.no_grad():
            for i, (p, k, lr) in enumerate(zip(self.params, self.coefs, self.lrs)):
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                b_c = k["pre"] * self.buffers[i] + g
                p.sub_(lr * k["move"] * b_c)
                self.buffers[i] = k["post"] * b_c

    @property
    def lr(self) -> float:
        return self.lrs[0] if self.lrs else self.config.lr

    def state_dict(self) -> dict[str, Any]:
        return {"momentum_buffers": [b.clone() for b in self.buffers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        bufs = state["momentum_buffers"]
        if len(bufs) != len(self.params):
            raise ValueError(f"checkpoint holds {len(bufs)} momentum buffers, optimizer has {len(self.params)} params")
        self.buffers = [b.to(p.device, p.dtype).clone() for b, p in zip(bufs, self.params)]
