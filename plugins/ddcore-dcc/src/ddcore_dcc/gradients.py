"""Per-class gradients of the mean cross-entropy, without a Python loop over classes.

The class-wise loss needs ``g_c = grad_theta mean_{i in c} CE(f(x_i), y_i)`` for every class ``c`` of a class-major
batch with the same number ``n`` of rows per class. Three interchangeable implementations (same values; see the
plugin README for their CPU timings):

* ``"vmap"``: ``torch.func.vmap(torch.func.grad(class_loss))`` over the class dimension of ``x.view(C, n, ...)``:
  one batched forward and backward of ``C*n`` images, each class its own lane (the default);
* ``"batched_autograd"``: one forward of all images, the ``C`` per-class mean losses stacked, and one
  ``torch.autograd.grad(..., is_grads_batched=True)`` with the identity as ``grad_outputs`` (vmap over the
  backward: every lane back-propagates through the whole batch, so it costs ``C`` backward passes);
* ``"loop"``: the official per-class forward/backward loop (reference and benchmark baseline).

With ``create_graph=True`` the result stays differentiable w.r.t. ``x`` (second-order gradients reach the synthetic
images); the network parameters are treated as constants in every method except ``"loop"``/``"batched_autograd"``
where they are the differentiation variables themselves.

All methods assume samples do not interact in the forward pass (no BatchNorm in train mode) — the inner-loop
sampler freezes BatchNorm statistics exactly for this reason, as the official code does.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

Method = Literal["vmap", "batched_autograd", "loop"]
METHODS: tuple[str, ...] = ("vmap", "batched_autograd", "loop")


def class_grads(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, *, method: Method = "vmap",
    create_graph: bool = False, forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> list[torch.Tensor]:
    """Per-class gradients ``[C, *p.shape]`` for every ``p`` in ``net.parameters()`` (same order).

    :param x: ``[C*n, ...]`` class-major inputs (rows ``c*n:(c+1)*n`` belong to class ``c``).
    :param y: ``[C*n]`` int64 labels, or ``[C*n, K]`` soft labels, in the same layout.
    :param create_graph: keep the graph so the gradients can be differentiated w.r.t. ``x``.
    :param forward: computes ``net``'s logits in its place (``"loop"``, ``"batched_autograd"``), e.g. its compiled
        first-order forward (``HotPath.first_order``); not with ``create_graph``.
    """
    if forward is not None and create_graph:
        raise ValueError("class_grads: a substitute forward is for first-order passes; not with create_graph")
    forward = forward or net
    n_total = x.shape[0]
    if n_total % num_classes:
        raise ValueError(f"class_grads: {n_total} rows are not a multiple of {num_classes} classes")
    n = n_total // num_classes
    if method == "vmap":
        return _vmap_grads(net, x, y, num_classes, n)
    params = [p for p in net.parameters()]
    if method == "batched_autograd":
        losses = F.cross_entropy(forward(x), y, reduction="none").view(num_classes, n).mean(1)
        eye = torch.eye(num_classes, device=losses.device, dtype=losses.dtype)
        grads = torch.autograd.grad(losses, params, grad_outputs=eye, is_grads_batched=True,
                                    create_graph=create_graph)
        return list(grads)
    if method == "loop":
        per_class = []
        for c in range(num_classes):
            sl = slice(c * n, (c + 1) * n)
            loss = F.cross_entropy(forward(x[sl]), y[sl])
            per_class.append(torch.autograd.grad(loss, params, create_graph=create_graph))
        return [torch.stack([g[i] for g in per_class]) for i in range(len(params))]
    raise ValueError(f"class_grads: unknown method {method!r}; expected one of {', '.join(METHODS)}")


def _vmap_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, n: int) -> list[torch.Tensor]:
    from torch.func import functional_call, grad, vmap

    names = [name for name, _ in net.named_parameters()]
    params = {name: p.detach() for name, p in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def class_loss(p, xc, yc):
        return F.cross_entropy(functional_call(net, (p, buffers), (xc,)), yc)

    xs = x.reshape(num_classes, n, *x.shape[1:])
    ys = y.reshape(num_classes, n, *y.shape[1:])
    grads = vmap(grad(class_loss), in_dims=(None, 0, 0))(params, xs, ys)
    return [grads[name] for name in names]


def mean_grad(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, create_graph: bool = False,
              logits: torch.Tensor | None = None,
              forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, chunk: int = 0) -> list[torch.Tensor]:
    """Gradient of one mean CE over all rows (``logits`` may be a precomputed ``net(x)`` to reuse a forward;
    ``forward`` computes ``net``'s logits in its place, as in :func:`class_grads`).

    :param chunk: when ``0 < chunk < len(x)``, accumulate the gradient over slices of that many rows (the same
        value up to rounding, for a net whose samples do not interact): on a CPU the smaller activations run
        faster than one pass over every class at once. First-order only.
    """
    params = [p for p in net.parameters()]
    if 0 < chunk < x.shape[0] and logits is None:
        if create_graph:
            raise ValueError("mean_grad: chunking is for first-order passes; not with create_graph")
        total = None
        for start in range(0, x.shape[0], chunk):
            xs, ys = x[start:start + chunk], y[start:start + chunk]
            # sum of per-row losses over the whole batch's size: the slices add up to the mean CE
            loss = F.cross_entropy((forward or net)(xs), ys, reduction="sum") / x.shape[0]
            grads = torch.autograd.grad(loss, params)
            total = list(grads) if total is None else [t.add_(g) for t, g in zip(total, grads)]
        return total
    out = (forward or net)(x) if logits is None else logits
    loss = F.cross_entropy(out, y)
    return list(torch.autograd.grad(loss, params, create_graph=create_graph))
