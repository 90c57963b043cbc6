"""The ``inner_loop`` sampler: DC/DCC's bi-level loop expressed as engine steps.

One engine step is one synthetic update. Step ``s`` belongs to outer iteration ``ol = s // K_i`` (a fresh network,
built from the recipe's ``[backbone]`` seeded by ``(run seed, "inner_loop", ol)``) and inner iteration
``il = s % K_i``. Before every update the BatchNorm statistics of a BN network are refreshed from a real batch
(``bn_per_class`` images per class, train-mode forward) and frozen (BN modules in eval mode), as DC's
``BNSizePC = 16`` block. After every update except the last one of a network, the network is trained for ``T``
epochs on the current (expanded) synthetic set with SGD, mini-batches of ``batch_train``, and random (non-siamese)
augmentation by the run's siamese augmentations (DSA's ``epoch(..., aug=True)``); DC without DSA trains without
augmentation because its recipe has no ``[[augment]]``.

A recipe therefore sets ``run.iterations = K_o * K_i`` (e.g. DCC CIFAR-10 ipc 10: 1000 * 10 = 10000).
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.components import Sampler
from ddcore.config import non_negative, option, positive
from ddcore.errors import RecipeError

#: ipc -> (K_i synthetic updates per network, T network epochs between updates).
#: DC/DSA ``utils.get_loops`` (names there: outer_loop, inner_loop).
DC_LOOPS: dict[int, tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
#: Saehyung-Lee/DCC ``utils.get_loops`` (names there: inner_loop, T): differs from DC at ipc 1.
DCC_LOOPS: dict[int, tuple[int, int]] = {**DC_LOOPS, 1: (10, 5)}
LOOP_TABLES = {"dc": DC_LOOPS, "dcc": DCC_LOOPS}


@attrs.define(frozen=True, kw_only=True)
class InnerLoopConfig:
    """Options of ``inner_loop``. ``updates_per_net``/``train_epochs`` = -1 take the value of the ``loops`` table."""

    loops: str = option(
        "dcc", "Table giving (K_i, T) from ipc: 'dcc' (Saehyung-Lee/DCC get_loops: ipc 1 -> (10, 5)) or 'dc' "
        "(DC/DSA get_loops: ipc 1 -> (1, 1)); both: 10 -> (10, 50), 20 -> (20, 25), 30 -> (30, 20), 40 -> (40, 15), "
        "50 -> (50, 10).", choices=tuple(LOOP_TABLES))
    ipc: int = option(0, "Images per class used to look up the table; 0 = the recipe's synset.ipc.",
                      validator=non_negative)
    updates_per_net: int = option(-1, "K_i: synthetic updates per fresh network (DC: outer_loop); -1 = from the "
                                  "table.", validator=lambda i, a, v: _at_least(a, v, -1, zero_ok=False))
    train_epochs: int = option(-1, "T: epochs of network training on the synthetic set between updates (DC: "
                               "inner_loop); -1 = from the table.", validator=lambda i, a, v: _at_least(a, v, -1))
    lr_net: float = option(0.01, "SGD learning rate of the network training (lr_net).", validator=positive)
    momentum_net: float = option(0.0, "SGD momentum of the network training (official: none).",
                                 validator=non_negative)
    batch_train: int = option(256, "Mini-batch size of the network training (batch_train).", validator=positive)
    augment: bool = option(True, "Augment network-training batches with the run's siamese augmentations (random, "
                           "per-sample parameters), as DSA does; no effect without [[augment]].")
    bn_per_class: int = option(16, "Real images per class used to refresh and freeze BatchNorm statistics before "
                               "each update (BNSizePC); only for networks with BatchNorm.", validator=positive)


def _at_least(attribute, value: int, lo: int, zero_ok: bool = True) -> None:
    if value < lo or (value == 0 and not zero_ok):
        from ddcore.config import OptionValueError

        raise OptionValueError(attribute.name, f"expected -1 (from the table) or a {'non-negative' if zero_ok else 'positive'} "
                               f"integer, got {value!r}")


def has_batchnorm(net: nn.Module) -> bool:
    return bool(getattr(net, "has_running_stats", False)) or any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def resolve_loops(config: InnerLoopConfig, ipc: Optional[int]) -> tuple[int, int]:
    """(K_i, T) from explicit options, else from the ``loops`` table at ``ipc``."""
    k_i, t = config.updates_per_net, config.train_epochs
    if k_i == -1 or t == -1:
        table = LOOP_TABLES[config.loops]
        if ipc is None or ipc not in table:
            raise RecipeError(
                f"no {config.loops!r} loop constants for ipc {ipc} (defined for {sorted(table)}); set "
                "sampler.updates_per_net and sampler.train_epochs", key="sampler.loops")
        d_k, d_t = table[ipc]
        k_i = d_k if k_i == -1 else k_i
        t = d_t if t == -1 else t
    return k_i, t


def _recipe_ipc(build: Any) -> Optional[int]:
    synset = getattr(getattr(build, "recipe", None), "synset", None)
    options = getattr(synset, "options", None) or {}
    ipc = options.get("ipc")
    return int(ipc) if isinstance(ipc, int) else None


class InnerLoop(Sampler):
    """DC/DSA/DCC's periodic re-initialisation + alternating network training (see module docstring)."""

    def __init__(self, config: InnerLoopConfig, build: Any):
        super().__init__(config, build)
        ipc = config.ipc or _recipe_ipc(build)
        self.updates_per_net, self.train_epochs = resolve_loops(config, ipc)
        self._outer: Optional[int] = None
        self._inner = 0
        self._net: Optional[nn.Module] = None
        self._opt: Optional[torch.optim.Optimizer] = None

    # -- network lifecycle -----------------------------------------------------------------------------------
    def _fresh(self, outer: int) -> None:
        net = self.build.make_backbone(seed_key=("inner_loop", outer))
        net.train()
        net.requires_grad_(True)
        self._net = net
        self._opt = torch.optim.SGD(net.parameters(), lr=self.config.lr_net, momentum=self.config.momentum_net)
        self._outer = outer

    def _freeze_bn(self, step: int) -> None:
        """Refresh BN running stats with a train-mode forward of a real batch, then put BN layers in eval mode."""
        net = self._net
        assert net is not None
        if not has_batchnorm(net):
            return
        real = self.build.train.sample_per_class(self.config.bn_per_class, self.build.generator("inner_loop_bn", step))
        net.train()
        with torch.no_grad():
            net(real.images)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    def nets(self, step: int) -> list[nn.Module]:
        outer, inner = divmod(step, self.updates_per_net)
        if outer != self._outer:
            self._fresh(outer)
        self._inner = inner
        self._freeze_bn(step)
        assert self._net is not None
        return [self._net]

    def info(self) -> dict[str, Any]:
        return {"outer": self._outer, "inner": self._inner}

    def after_step(self, ctx) -> None:
        if self._inner == self.updates_per_net - 1 or self.train_epochs == 0:
            return  # the last update of a network is not followed by training (official `break`)
        syn = self.build.expand(ctx.updated_synset())  # the set after this step's update
        self.train_network(syn.images.detach(), syn.labels.detach(), step=ctx.step)

    def train_network(self, images: torch.Tensor, labels: torch.Tensor, *, step: int) -> None:
        """``T`` epochs of SGD on ``(images, labels)`` (official ``epoch('train', ...)`` with ``aug`` = DSA)."""
        net, opt, cfg = self._net, self._opt, self.config
        assert net is not None and opt is not None
        net.train()
        n = images.shape[0]
        augment = cfg.augment and bool(self.build.siamese_augmentations)
        for epoch in range(self.train_epochs):
            g = self.build.generator("inner_loop_train", step, epoch)
            order = torch.randperm(n, generator=g, device=g.device).to(images.device)
            for start in range(0, n, cfg.batch_train):
                idx = order[start:start + cfg.batch_train]
                x, y = images[idx], labels[idx]
                if augment:
                    x = self.build.augment_random(x, g)
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        opt.zero_grad(set_to_none=True)

    # -- checkpointing ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._net is None:
            return {}
        assert self._opt is not None
        # copies: the optimiser's momentum buffers would otherwise alias the live ones
        return {"outer": self._outer, "net": copy.deepcopy(self._net.state_dict()),
                "opt": copy.deepcopy(self._opt.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._fresh(int(state["outer"]))
        assert self._net is not None and self._opt is not None
        self._net.load_state_dict(state["net"])
        self._opt.load_state_dict(state["opt"])
