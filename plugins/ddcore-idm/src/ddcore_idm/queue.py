"""IDM's model queue sampler ("efficient and enriched model sampling", uitrbn/IDM IDM_cifar10.py).

A FIFO queue of networks that are trained a little on real data while distillation runs:

* at construction ``initial_nets`` (3) random nets enter the queue, each with its own SGD optimiser
  (lr 0.01, momentum 0.9, weight decay 5e-4: ``--net_decay``);
* at every step with ``step % net_generate_interval == 0`` (step 0 included) ``net_push_num`` new nets are
  pushed; when the queue already holds ``net_num`` nets the oldest is popped first;
* each step ``train_net_num`` nets are drawn uniformly (without replacement) for the objective terms
  (``ctx.nets``); they are put in eval mode with frozen parameters for the synthetic update;
* after the synthetic update (``after_step``) ``fetch_net_num`` nets drawn uniformly from the queue each take
  ``model_train_steps`` SGD steps of cross-entropy on uniform real batches of ``trained_bs`` images (train mode);
* every net keeps a running training accuracy (the official ``ClassErrorMeter``), reset at every multiple of
  ``eval_interval``; ``info()["net_accuracy"]`` gives the sampled nets' accuracies in percent (0 for a net that
  was never trained), which the ``class_aware_ce`` term multiplies in.

All draws come from ``build.generator(purpose, step, ...)`` and every net is built with ``seed_key`` = its serial
number, so ``state_dict()`` (serials, weights, optimiser states, meters) is enough to resume exactly.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.components import Sampler
from ddcore.config import ComponentRef, non_negative, option, positive
from ddcore.errors import RecipeError


@attrs.define(frozen=True, kw_only=True)
class ModelQueueConfig:
    """Options of the ``model_queue`` sampler (defaults: IDM command.txt / IDM_cifar10.py argparse)."""

    net_num: int = option(100, "Queue capacity (--net_num).", validator=positive)
    initial_nets: int = option(3, "Random nets in the queue before step 0 (IDM_cifar10.py l.167).", validator=non_negative)
    net_generate_interval: int = option(30, "Push new nets every this many steps, step 0 included "
                                            "(--net_generate_interval; 5 for ipc 1).", validator=positive)
    net_push_num: int = option(1, "Nets pushed at each generation step (--net_push_num).", validator=positive)
    train_net_num: int = option(1, "Nets drawn per step for the objective terms (--train_net_num; 1 in every "
                                   "published command).", validator=positive)
    fetch_net_num: int = option(2, "Nets trained on real data after each step (--fetch_net_num).",
                                validator=non_negative)
    model_train_steps: int = option(10, "SGD steps per fetched net per step (--model_train_steps).",
                                    validator=non_negative)
    trained_bs: int = option(256, "Real batch size (uniform over classes) for queue training (--trained_bs).",
                             validator=positive)
    lr_net: float = option(0.01, "Queue SGD learning rate (--lr_net).", validator=positive)
    momentum: float = option(0.9, "Queue SGD momentum (--net_decay).", validator=non_negative)
    weight_decay: float = option(5e-4, "Queue SGD weight decay (--net_decay).", validator=non_negative)
    eval_interval: int = option(100, "Running accuracies are reset at every multiple of this step "
                                     "(the official meters are reset at each evaluation point).", validator=positive)
    backbone: Optional[ComponentRef] = option(None, "Network of the queue; default: the recipe's [backbone].",
                                             kind="backbone")
    frozen: bool = option(True, "Hand out networks with requires_grad off (IDM: only the synthetic images get "
                                "gradients). false lets terms differentiate w.r.t. the weights, e.g. DCC's "
                                "gradient_match; the engine never updates the queue nets either way.")


class _Member:
    """One queued network: serial number, module, optimiser and running-accuracy meter (device tensors)."""

    def __init__(self, serial: int, net: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device):
        self.serial = serial
        self.net = net
        self.optimizer = optimizer
        self.correct = torch.zeros((), device=device)
        self.seen = torch.zeros((), device=device)

    def accuracy_percent(self) -> torch.Tensor:
        """Running accuracy in percent (0 when the net has not been trained since the last reset)."""
        return torch.where(self.seen > 0, 100.0 * self.correct / self.seen.clamp_min(1), torch.zeros_like(self.seen))


class ModelQueue(Sampler):
    """IDM's FIFO queue of partially trained networks (see module docstring for the schedule)."""

    def __init__(self, config: ModelQueueConfig, build):
        super().__init__(config, build)
        if config.train_net_num > config.net_num:
            raise RecipeError(f"train_net_num ({config.train_net_num}) exceeds net_num ({config.net_num})",
                              key="sampler.train_net_num")
        self.queue: list[_Member] = []
        self.next_serial = 0
        self._sampled: list[_Member] = []
        self._step = -1
        for _ in range(config.initial_nets):
            self._push()

    # -- queue ----------------------------------------------------------------------------------------
    def _make_member(self, serial: int) -> _Member:
        net = self.build.make_backbone(self.config.backbone, seed_key=("model_queue", serial))
        opt = torch.optim.SGD(net.parameters(), lr=self.config.lr_net, momentum=self.config.momentum,
                              weight_decay=self.config.weight_decay)
        return _Member(serial, net, opt, self.build.device)

    def _push(self) -> None:
        if len(self.queue) >= self.config.net_num:
            self.queue.pop(0)  # FIFO: the oldest net leaves first
        self.queue.append(self._make_member(self.next_serial))
        self.next_serial += 1

    @property
    def serials(self) -> list[int]:
        """Serial numbers of the queued nets, oldest first."""
        return [m.serial for m in self.queue]

    def _pick(self, count: int, purpose: str, step: int) -> list[_Member]:
        # A host-side generator: indexing a Python list must not wait for the device.
        g = self.build.generator(purpose, step, device=torch.device("cpu"))
        order = torch.randperm(len(self.queue), generator=g)[: min(count, len(self.queue))]
        return [self.queue[i] for i in order.tolist()]

    # -- sampler protocol -----------------------------------------------------------------------------
    def nets(self, step: int) -> list[nn.Module]:
        cfg = self.config
        if step > 0 and step % cfg.eval_interval == 0:
            for m in self.queue:
                m.correct.zero_()
                m.seen.zero_()
        if step % cfg.net_generate_interval == 0:
            for _ in range(cfg.net_push_num):
                self._push()
        self._step = step
        self._sampled = self._pick(cfg.train_net_num, "model_queue.sample", step)
        for m in self._sampled:
            m.net.eval()
            m.net.requires_grad_(not cfg.frozen)
        return [m.net for m in self._sampled]

    def info(self) -> dict[str, Any]:
        return {
            "net_accuracy": [m.accuracy_percent() for m in self._sampled],
            "net_serials": [m.serial for m in self._sampled],
            "queue_size": len(self.queue),
        }

    def after_step(self, ctx) -> None:
        self.train_queue(ctx.step)

    def train_queue(self, step: int) -> None:
        """Train ``fetch_net_num`` random queued nets for ``model_train_steps`` SGD steps on real uniform batches."""
        cfg = self.config
        if cfg.fetch_net_num == 0 or cfg.model_train_steps == 0:
            return
        train = self.build.train
        for m in self._pick(cfg.fetch_net_num, "model_queue.fetch", step):
            self.build.prepare_net(m.net)  # this training is part of the step: same memory format / compiled code
            m.net.train()
            m.net.requires_grad_(True)
            for s in range(cfg.model_train_steps):
                batch = train.sample_uniform(cfg.trained_bs, self.build.generator("model_queue.batch", step,
                                                                                   m.serial, s))
                logits = m.net(self.build.hot_path.prepare_images(batch.images))
                loss = F.cross_entropy(logits, batch.labels)
                m.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                m.optimizer.step()
                with torch.no_grad():
                    m.correct += (logits.argmax(1) == batch.labels).sum()
                    m.seen += batch.labels.numel()
            m.net.requires_grad_(not cfg.frozen)

    # -- resume ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "next_serial": self.next_serial,
            "members": [
                {"serial": m.serial, "net": m.net.state_dict(), "optimizer": m.optimizer.state_dict(),
                 "correct": m.correct.clone(), "seen": m.seen.clone()}
                for m in self.queue
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.queue = []
        for entry in state["members"]:
            m = self._make_member(int(entry["serial"]))
            m.net.load_state_dict(entry["net"])
            m.optimizer.load_state_dict(entry["optimizer"])
            m.correct.copy_(entry["correct"])
            m.seen.copy_(entry["seen"])
            self.queue.append(m)
        self.next_serial = int(state["next_serial"])
        self._sampled = []
