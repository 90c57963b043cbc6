"""Train several networks of one architecture at once, as a vectorised ensemble (``torch.func``).

Evaluating a synthetic set means training ``num_models`` fresh networks on a few hundred images for 1000
epochs: each step is a tiny batch, so one network at a time leaves an accelerator mostly idle. Here the
members' parameters are stacked (``stack_module_state``) and every step runs one ``vmap``-ed
``functional_call`` over all members, each on *its own* batch:

- every member keeps its own initialisation (the nets passed in),
- its own shuffling order (``torch.randperm`` from its own generator, drawn in the same order as
  :func:`ddcore.evaluation.train.train_classifier` draws it),
- its own augmentation draws (its own ``augment`` callable, called once per step on its own batch).

SGD with momentum and weight decay is element-wise, so one optimizer over the stacked tensors performs
exactly every member's own update; the summed loss gives each member the gradient of its own mean loss. With
the same generators the ensemble therefore reproduces the sequential protocol member by member, up to
floating-point differences between batched and single convolutions.

Networks with running statistics (BatchNorm) are not vectorised (their buffers are updated in place during
the forward pass); :func:`can_vectorize` says so and callers fall back to sequential training.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ddcore.evaluation.train import classification_loss, epoch_learning_rates, iter_test_batches

__all__ = ["can_vectorize", "Ensemble", "ensemble_accuracy", "has_running_stats", "train_ensemble"]


def has_running_stats(net: nn.Module) -> bool:
    """True when ``net`` keeps running statistics (the backbone flag, or any tracking BatchNorm inside)."""
    if bool(getattr(net, "has_running_stats", False)):
        return True
    return any(
        isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats for m in net.modules()
    )


def can_vectorize(nets: Sequence[nn.Module]) -> bool:
    """Whether ``nets`` can be trained as one vectorised ensemble (same architecture, no running stats)."""
    if len(nets) < 2 or any(has_running_stats(n) for n in nets):
        return False
    first = {k: (v.shape, v.dtype, v.device) for k, v in nets[0].state_dict().items()}
    return all(type(n) is type(nets[0]) and
               {k: (v.shape, v.dtype, v.device) for k, v in n.state_dict().items()} == first for n in nets[1:])


class Ensemble:
    """Stacked parameters of ``M`` same-architecture networks plus a stateless copy to run them with.

    :ivar params: name → ``[M, ...]`` leaf tensors (trainable).
    :ivar buffers: name → ``[M, ...]`` buffers (no running statistics: they are constants).
    """

    def __init__(self, nets: Sequence[nn.Module]):
        if not can_vectorize(nets):
            raise ValueError("an Ensemble needs >= 2 nets of one architecture without running statistics")
        self.size = len(nets)
        self.params, self.buffers = stack_module_state(list(nets))
        self._base = copy.deepcopy(nets[0]).to("meta")

        def one(params, buffers, x):
            return functional_call(self._base, (params, buffers), (x,))

        self._per_member = vmap(one, in_dims=(0, 0, 0))  # each member its own batch
        self._shared = vmap(one, in_dims=(0, 0, None))  # all members the same batch

    def train(self, mode: bool = True) -> "Ensemble":
        self._base.train(mode)
        return self

    def eval(self) -> "Ensemble":
        return self.train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[M, B, K]``: ``x`` is ``[M, B, C, H, W]`` (a batch per member) or ``[B, C, H, W]`` (shared)."""
        if x.ndim == 5:
            return self._per_member(self.params, self.buffers, x)
        return self._shared(self.params, self.buffers, x)

    __call__ = forward

    @torch.no_grad()
    def write_back(self, nets: Sequence[nn.Module]) -> None:
        """Copy every member's trained parameters into ``nets[i]`` (same order as built)."""
        for i, net in enumerate(nets):
            for name, p in net.named_parameters():
                p.copy_(self.params[name][i])


def train_ensemble(
    nets: Sequence[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    decay_at_half: bool = True,
    augments: Optional[Sequence[Callable[[torch.Tensor], torch.Tensor]]] = None,
    generators: Sequence[torch.Generator],
    loss: str = "ce",
    write_back: bool = True,
    on_epoch_end: Optional[Callable[[int], None]] = None,
) -> Ensemble:
    """Train ``nets`` as one vectorised ensemble; same protocol and arguments as ``train_classifier``.

    :param augments: one ``x -> x`` augmentation per member (or ``None``); member ``i``'s is called on its own
        batch every step, so it draws its own parameters.
    :param generators: one generator per member, the source of its per-epoch shuffling order.
    :param write_back: copy the trained weights back into ``nets`` (they can then be used one by one).
    :param on_epoch_end: optional ``f(epoch)`` called after every epoch of the whole ensemble (progress).
    :returns: the trained :class:`Ensemble` (for vectorised evaluation with :func:`ensemble_accuracy`).
    """
    m = len(nets)
    if len(generators) != m:
        raise ValueError(f"{m} nets but {len(generators)} generators")
    if augments is not None and len(augments) != m:
        raise ValueError(f"{m} nets but {len(augments)} augmentations")
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("cannot train on an empty set")
    if labels.shape[0] != n:
        raise ValueError(f"{n} images but {labels.shape[0]} labels")
    ens = Ensemble(nets).train()
    params = list(ens.params.values())
    optimizer: Optional[torch.optim.Optimizer] = None
    current_lr = None
    for ep, ep_lr in enumerate(epoch_learning_rates(epochs, lr, decay_at_half)):
        if ep_lr != current_lr:  # a fresh optimizer (momentum reset), as the sequential protocol does
            optimizer = torch.optim.SGD(params, lr=ep_lr, momentum=momentum, weight_decay=weight_decay)
            current_lr = ep_lr
        orders = torch.stack(
            [torch.randperm(n, generator=g, device=g.device).to(images.device) for g in generators]
        )  # [M, N]
        for start in range(0, n, batch_size):
            idx = orders[:, start:start + batch_size]  # [M, b]
            x = images[idx]  # [M, b, C, H, W]
            if augments is not None:
                x = torch.stack([aug(x[i]) for i, aug in enumerate(augments)])
            losses = classification_loss(ens(x), labels[idx], loss)  # [M]
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
        if on_epoch_end is not None:
            on_epoch_end(ep)
    if write_back:
        ens.write_back(nets)
    return ens


@torch.no_grad()
def ensemble_accuracy(ens: Ensemble, data, batch_size: int = 1024, *, limit: int = 0) -> torch.Tensor:
    """``[M]`` top-1 accuracies (fractions) of every member on a ``ClassIndexedData`` split, eval mode.

    Each test batch goes through all members in one vectorised forward; ``batch_size`` is the number of
    (member, image) pairs per forward, so memory matches one net at ``batch_size``. The result stays on the
    device (no host sync here).
    """
    ens.eval()
    correct = None
    seen = 0
    for x, y in iter_test_batches(data, max(1, batch_size // ens.size), limit):
        hits = (ens(x).argmax(-1) == y[None]).sum(-1)
        correct = hits if correct is None else correct + hits
        seen += int(y.shape[0])
    ens.train()
    if seen == 0:
        raise ValueError("cannot evaluate on an empty split")
    return correct.double() / seen
