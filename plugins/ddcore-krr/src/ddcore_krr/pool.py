"""Sampler ``model_pool``: the KRR-ST model pool M = {(ω_i, W_i, t_i)} (Algorithm 1, official ``model_pool.py``).

- l networks of the recipe's ``[backbone]`` (``ConvNetKRR`` 128-256-512 BN in the paper), each with a head of
  d_y outputs and its own SGD (lr 0.1, momentum 0.9, wd 1e-3);
- at the first step each model i is trained for t_i ~ U{1..T} steps (paper; ``init_steps_range = "code"``: the
  code's ``np.random.randint(1, T)`` = U{1..T-1}) of full-batch MSE ``mse(net(X_s), Y_s)``
  (train mode, head included), and its counter set to t_i;
- ``nets(step)`` returns one uniformly drawn model (in eval mode, as ``distill.py`` uses it: BN running stats);
- ``after_step``: with the *updated* synthetic set, if t_i < T one more full-batch step and t_i += 1, else the
  model is re-initialised (fresh weights and optimiser) and **t_i reset to 0** (paper Alg. 1 l.15; Boost-SSDD
  Alg. 1 l.18). ``never_reset = true`` reproduces the official code's bug (the counter stays ≥ T, so the model is
  re-initialised on every later visit and never trained again, facts §6).

Randomness: the model index of step s comes from ``build.generator("krr-pool", s)``; model i's k-th
initialisation from ``build.seeded("krr-pool-model", i, k)``; t_i from ``build.generator("krr-pool-init", i, k)``.
``state_dict`` holds weights, optimiser states, counters and generations, so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.components import Sampler
from ddcore.config import option
from ddcore.types import SynBatch



@attrs.define(frozen=True, kw_only=True)
class ModelPoolConfig:
    """Options of the ``model_pool`` sampler (defaults: paper §4.1 / official model_pool.py)."""

    num_models: int = option(10, "l: models in the pool (paper: 10).", validator=attrs.validators.ge(1))
    max_steps: int = option(1000, "T: full-batch steps before a model is re-initialised (online_iteration 1000).",
                            validator=attrs.validators.ge(1))
    lr: float = option(0.1, "SGD learning rate of pool models (online_lr 0.1).")
    momentum: float = option(0.9, "SGD momentum of pool models.")
    weight_decay: float = option(1e-3, "SGD weight decay of pool models (online_wd 1e-3).")
    never_reset: bool = option(False, "Official-code quirk: never reset the counter after re-initialisation.")
    init_steps_max: int = option(0, "Upper bound of the random initial steps t ~ U{1..bound} of each model (0 = T, "
                                 "the paper); a small bound makes quick runs and benchmarks cheap to set up.",
                                 validator=attrs.validators.ge(0))
    init_steps_range: str = option(
        "paper", "Range of the initial steps: paper = t ~ U{1..bound} (Alg. 1); code = np.random.randint(1, bound) "
        "= U{1..bound-1} (model_pool.py, high end exclusive; bound 1 then gives 1).", choices=("paper", "code"))
    eval_mode: bool = option(True, "Hand the model out in eval mode (BN running stats), as distill.py does.")


class ModelPool(Sampler):
    """A pool of networks trained online on (X_s, Y_s); one is used per outer step (module doc)."""

    def __init__(self, config: ModelPoolConfig, build: Any):
        super().__init__(config, build)
        self.models: list[nn.Module] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.counters: list[int] = [0] * config.num_models
        self.generations: list[int] = [0] * config.num_models
        self.resets = 0
        self.current: Optional[int] = None
        self.dim = 0
        self._initialized = False

    # -- the synthetic set -----------------------------------------------------------------------------
    def synthetic_set(self, ctx: Any = None) -> SynBatch:
        """The current (post-update) synthetic set of the run's parameterization (``build.parameterization``),
        expanded, detached; falls back to ``ctx.syn`` when no parameterization is built yet."""
        param = self.build.parameterization
        with torch.no_grad():
            if param is not None:
                syn = self.build.expand(param.materialize())
            elif ctx is not None:
                syn = ctx.syn
            else:
                raise RuntimeError("model_pool needs the synthetic set: use synset 'krr_pixels' or a subclass")
        if syn.targets is None:
            raise RuntimeError("model_pool trains on (X_s, Y_s): the synthetic set has no targets")
        return syn.detach()

    # -- models ----------------------------------------------------------------------------------------
    def _new_model(self, i: int, dim: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        gen = self.generations[i]
        with self.build.seeded("krr-pool-model", i, gen):
            net = self.build.make_backbone(None, num_classes=dim)
        opt = torch.optim.SGD(net.parameters(), lr=self.config.lr, momentum=self.config.momentum,
                              weight_decay=self.config.weight_decay)
        return net, opt

    def train_step(self, i: int, syn: SynBatch) -> torch.Tensor:
        """One full-batch MSE step of model ``i`` on ``syn`` (train mode); returns the loss (device tensor)."""
        net, opt = self.models[i], self.optimizers[i]
        net.train()
        loss = F.mse_loss(net(syn.images), syn.targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def _initialize(self) -> None:
        syn = self.synthetic_set()
        self.dim = dim = int(syn.targets.shape[1])
        bound = min(self.config.init_steps_max or self.config.max_steps, self.config.max_steps)
        if self.config.init_steps_range == "code":
            bound = max(1, bound - 1)
        for i in range(self.config.num_models):
            net, opt = self._new_model(i, dim)
            self.models.append(net)
            self.optimizers.append(opt)
            g = self.build.generator("krr-pool-init", i, 0, device=torch.device("cpu"))
            t = int(torch.randint(1, bound + 1, (1,), generator=g))
            for _ in range(t):
                self.train_step(i, syn)
            self.counters[i] = t
        self._initialized = True

    def reset_model(self, i: int) -> None:
        """Re-initialise model ``i`` (fresh weights and optimiser); the counter is reset unless ``never_reset``."""
        self.generations[i] += 1
        self.models[i], self.optimizers[i] = self._new_model(i, self.dim)
        if not self.config.never_reset:
            self.counters[i] = 0
        self.resets += 1

    # -- Sampler API -----------------------------------------------------------------------------------
    def nets(self, step: int) -> list[nn.Module]:
        if not self._initialized:
            self._initialize()
        g = self.build.generator("krr-pool", step, device=torch.device("cpu"))
        self.current = int(torch.randint(0, self.config.num_models, (1,), generator=g))
        net = self.models[self.current]
        net.train(not self.config.eval_mode)
        return [net]

    def after_step(self, ctx: Any) -> None:
        i = self.current
        if i is None:
            return
        if self.counters[i] < self.config.max_steps:
            self.train_step(i, self.synthetic_set(ctx))
            self.counters[i] += 1
        else:
            self.reset_model(i)

    def info(self) -> dict[str, Any]:
        return {"pool_index": self.current, "pool_counters": list(self.counters), "pool_resets": self.resets}

    def state_dict(self) -> dict[str, Any]:
        if not self._initialized:
            return {"initialized": False}
        return {
            "initialized": True,
            "models": [m.state_dict() for m in self.models],
            "optimizers": [o.state_dict() for o in self.optimizers],
            "counters": list(self.counters),
            "generations": list(self.generations),
            "resets": self.resets,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state.get("initialized"):
            return
        state = copy.deepcopy(state)  # never share tensors (e.g. momentum buffers) with the caller's dict
        self.counters = [int(c) for c in state["counters"]]
        self.generations = [int(g) for g in state["generations"]]
        self.resets = int(state["resets"])
        self.dim = dim = int(self.synthetic_set().targets.shape[1])
        self.models, self.optimizers = [], []
        for i in range(self.config.num_models):
            net, opt = self._new_model(i, dim)
            net.load_state_dict(state["models"][i])
            opt.load_state_dict(state["optimizers"][i])
            self.models.append(net)
            self.optimizers.append(opt)
        self._initialized = True
