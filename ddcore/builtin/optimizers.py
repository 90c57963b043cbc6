"""Built-in optimisers of synthetic parameters: ``sgd``, ``adam``, ``adamw`` with an lr schedule."""

from __future__ import annotations

import math

import attrs
import torch

import ddcore
from ddcore.components import SynOptimizer
from ddcore.config import non_negative, option, positive

__all__ = ["Adam", "AdamW", "OptimizerConfig", "schedule_factor", "SGD", "TorchOptimizer"]


@attrs.define(frozen=True, kw_only=True)
class OptimizerConfig:
    lr: float = option(1.0, "Learning rate of the synthetic parameters.", validator=positive)
    momentum: float = option(0.5, "SGD momentum (DC family: 0.5). Ignored by Adam(W).", validator=non_negative)
    betas: list[float] = option(factory=lambda: [0.9, 0.999], doc="Adam(W) betas.")
    weight_decay: float = option(0.0, "Weight decay.", validator=non_negative)
    schedule: str = option(
        "constant", "Learning-rate schedule over the run's iterations.", choices=("constant", "linear", "cosine", "step")
    )
    step_at: list[float] = option(factory=lambda: [0.5], doc="schedule = 'step': fractions of the run where lr ×= gamma.")
    gamma: float = option(0.1, "schedule = 'step': multiplicative decay.", validator=positive)
    warmup: int = option(0, "Linear warm-up steps.", validator=non_negative)
    end_factor: float = option(
        0.0, "schedule = 'linear': lr factor reached at the last step (torch LinearLR end_factor; KRR-ST code: 1e-3).",
        validator=attrs.validators.and_(non_negative, attrs.validators.le(1.0)))


def schedule_factor(config: OptimizerConfig, step: int, total: int) -> float:
    """Multiplier of the base lr at ``step`` (0-based) of ``total``."""
    total = max(total, 1)
    if config.warmup and step < config.warmup:
        return (step + 1) / config.warmup
    t = min(step / total, 1.0)
    if config.schedule == "linear":
        return 1.0 - t * (1.0 - config.end_factor)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if config.schedule == "step":
        return config.gamma ** sum(t >= s for s in config.step_at)
    return 1.0


class TorchOptimizer(SynOptimizer):
    """Wraps a ``torch.optim`` optimiser; param groups may carry an ``lr_scale``."""

    kind = "sgd"

    def __init__(self, config: OptimizerConfig, build, *, param_groups, parameterization=None, total_steps=1):
        super().__init__(config, build)
        self.total_steps = total_steps
        groups = []
        for g in param_groups:
            g = dict(g)
            scale = g.pop("lr_scale", 1.0)
            g.pop("name", None)
            g["lr"] = config.lr * scale
            g["base_lr"] = config.lr * scale
            groups.append(g)
        if self.kind == "sgd":
            self.optim = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        elif self.kind == "adam":
            self.optim = torch.optim.Adam(groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
        else:
            self.optim = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
        self._step = 0

    def _set_lr(self) -> None:
        f = schedule_factor(self.config, self._step, self.total_steps)
        for g in self.optim.param_groups:
            g["lr"] = g["base_lr"] * f

    def zero_grad(self):
        self.optim.zero_grad(set_to_none=True)

    def step(self):
        self._set_lr()
        self.optim.step()
        self._step += 1

    @property
    def lr(self):
        return self.optim.param_groups[0]["lr"]

    def state_dict(self):
        return {"optim": self.optim.state_dict(), "step": self._step}

    def load_state_dict(self, state):
        self.optim.load_state_dict(state["optim"])
        self._step = int(state["step"])


class SGD(TorchOptimizer):
    """torch.optim.SGD (momentum, weight decay) plus a schedule."""

    kind = "sgd"


class Adam(TorchOptimizer):
    """torch.optim.Adam plus a schedule."""

    kind = "adam"


class AdamW(TorchOptimizer):
    """torch.optim.AdamW plus a schedule."""

    kind = "adamw"


@ddcore.hookimpl
def ddcore_register_optimizers(registry):
    registry.add("sgd", SGD, config=OptimizerConfig)
    registry.add("adam", Adam, config=OptimizerConfig)
    registry.add("adamw", AdamW, config=OptimizerConfig)
