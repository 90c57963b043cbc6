"""The ``gradient_match`` objective: class-wise (DC/DSA) or class-collective (DCC/DSAC) gradient matching.

Class-wise (DC, paper eq. 2): ``sum_c D(g(S_c), g(X_c))`` with ``g`` the gradient of the class's mean CE.
Class-collective (DCC, paper eq. 10 as coded in Saehyung-Lee/DCC ``main.py`` l.201-242):
``D(g(S), mean_c g(X_c))`` where ``g(S)`` is the gradient of **one** mean CE over all synthetic images (one forward
pass) and the real side averages the per-class mean-CE gradients over classes. With the engine's per-class real
batch (the same ``n`` images per class) that average *is* the gradient of the mean CE over the whole real batch,
so the real side costs one forward/backward (exact, not an approximation; asserted in the tests).

Bi-level warm-up (DCC Algorithm 1): class-collective runs use the class-wise loss while the sampler's outer
counter ``< warmup_outer`` **and** its inner counter ``< warmup_inner`` (``warmup_boundary = "code"``, the official
``outer_warmup <= ol or inner_warmup <= il`` test for the collective branch) or ``<=`` (``"paper"``: Algorithm 1
breaks out of the warm-up only when ``k_o > gamma_o or k_i > gamma_i``).
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch

from ddcore.components import Objective
from ddcore.config import non_negative, option
from ddcore.context import batch_independent
from ddcore.errors import RecipeError

from ddcore_dcc.distances import DISTANCES
from ddcore_dcc.gradients import METHODS, class_grads, mean_grad

MATCHINGS = ("class_wise", "class_collective")
BOUNDARIES = ("code", "paper")


def warmup_active(outer: int, inner: int, warmup_outer: int, warmup_inner: int, boundary: str = "code") -> bool:
    """True while DCC's bi-level warm-up uses the class-wise loss.

    ``"code"``: ``outer < warmup_outer and inner < warmup_inner`` (Saehyung-Lee/DCC main.py l.201);
    ``"paper"``: ``outer <= warmup_outer and inner <= warmup_inner`` (Algorithm 1, lines 6-7).
    """
    if boundary == "code":
        return outer < warmup_outer and inner < warmup_inner
    if boundary == "paper":
        return outer <= warmup_outer and inner <= warmup_inner
    raise ValueError(f"warmup boundary must be 'code' or 'paper', got {boundary!r}")


@attrs.define(frozen=True, kw_only=True)
class GradientMatchConfig:
    """Options of ``gradient_match``."""

    matching: str = option(
        "class_wise",
        "'class_wise': sum over classes of D(g_syn_c, g_real_c) (DC, DSA); 'class_collective': D(g of one CE over "
        "all synthetic images, class-average of per-class real gradients) (DCC, DSAC).",
        choices=MATCHINGS,
    )
    distance: str = option(
        "ours",
        "'ours': per parameter tensor, sum over output rows of 1 - cos (+1e-6 in the norm product), 1-D tensors "
        "(biases, norm affine) contribute 0; 'mse': squared L2 of all gradients concatenated; 'cos': 1 - cos of "
        "the concatenated gradients.",
        choices=tuple(DISTANCES),
    )
    warmup_outer: int = option(
        250, "gamma_o of the bi-level warm-up (class_collective only): outer iterations (fresh networks) that use "
        "class-wise matching.", validator=non_negative)
    warmup_inner: int = option(
        10, "gamma_i of the bi-level warm-up (class_collective only): inner iterations per network that use "
        "class-wise matching.", validator=non_negative)
    warmup_boundary: str = option(
        "code", "'code': class-wise while outer < warmup_outer and inner < warmup_inner (official main.py); "
        "'paper': while outer <= warmup_outer and inner <= warmup_inner (Algorithm 1's '>' exit test). "
        "warmup_outer = 0 with 'code' disables the warm-up.", choices=BOUNDARIES)
    real_grads: str = option(
        "auto", "How per-class gradients are computed for class-wise matching: 'vmap' (torch.func, one "
        "batched pass), 'batched_autograd' (stacked per-class losses, is_grads_batched), 'loop' (official per-class "
        "loop), 'auto' = vmap on CUDA, loop on CPU (measured ~3x faster there: bench/bench_dcc.py). "
        "All give the same values.", choices=("auto", *METHODS))


class GradientMatch(Objective):
    """Gradient matching of the step network (``ctx.net``) between the real and the synthetic batch.

    Works with any sampler; the warm-up needs the sampler's ``info()`` counters ``outer``/``inner`` (the
    ``inner_loop`` sampler provides them). Logs ``gradient_match/collective`` (1 when the class-collective loss
    was used in the step, 0 for the class-wise one).
    """

    coupling = "shared"
    double_backward = True  # the synthetic gradients are differentiated (create_graph=True)

    def __init__(self, config: GradientMatchConfig, build: Any):
        super().__init__(config, build)
        self.distance = DISTANCES[config.distance]
        self._checked: set = set()
        # class-wise: a sum of per-class terms given the step network; class-collective: needs all classes at once
        self.coupling = "separable" if config.matching == "class_wise" else "collective"

    # -- schedule -------------------------------------------------------------------------------------------
    def collective(self, info: dict[str, Any]) -> bool:
        """Whether this step uses the class-collective loss (False for class-wise matching or during warm-up)."""
        cfg = self.config
        if cfg.matching == "class_wise":
            return False
        never_warm = cfg.warmup_boundary == "code" and (cfg.warmup_outer == 0 or cfg.warmup_inner == 0)
        if never_warm:
            return True
        if "outer" not in info or "inner" not in info:
            raise RecipeError(
                "gradient_match: the bi-level warm-up needs a sampler exposing 'outer'/'inner' counters "
                "(sampler 'inner_loop'); or disable it with warmup_outer = 0", key="objective.warmup_outer")
        return not warmup_active(int(info["outer"]), int(info["inner"]), cfg.warmup_outer, cfg.warmup_inner,
                                 cfg.warmup_boundary)

    # -- checks (one host sync per batch layout, never per step) -------------------------------------------
    def _check_syn_layout(self, labels: Optional[torch.Tensor], num_classes: int) -> int:
        if labels is None or labels.dtype != torch.int64 or labels.dim() != 1:
            raise RecipeError("gradient_match class_wise needs hard int64 labels on the synthetic set",
                              key="objective.matching")
        n_total = labels.shape[0]
        key = ("syn", n_total)
        if key not in self._checked:
            n = n_total // num_classes
            expected = torch.arange(num_classes, device=labels.device).repeat_interleave(n)
            if n_total % num_classes or not torch.equal(labels, expected):
                raise RecipeError("gradient_match class_wise needs a class-major synthetic set with the same number "
                                  "of images in every class", key="objective.matching")
            self._checked.add(key)
        return n_total // num_classes

    def __call__(self, ctx) -> torch.Tensor:
        real = ctx.real
        if real is None or getattr(real, "per_class", None) is None:
            raise RecipeError("gradient_match needs per-class real batches; set [real] sampling = 'per_class'",
                              key="real.sampling")
        net = ctx.net
        k = ctx.num_classes
        collective = self.collective(ctx.sampler_info)
        syn = ctx.syn
        # the real side is differentiated once: compiled code where the run compiles (the synthetic side's
        # create_graph needs eager code)
        first_order = ctx.build.hot_path.first_order(net)
        if collective:
            # real: class-average of per-class mean-CE gradients == mean CE over the equal-per-class batch
            chunk = ctx.real_chunk if batch_independent(net) else 0  # slices would change BatchNorm statistics
            g_real = [g.detach() for g in mean_grad(net, real.images, real.labels, forward=first_order,
                                                    chunk=chunk)]
            logits = ctx.outputs(net, "syn").logits  # memoised: other terms (e.g. covariance) share this forward
            g_syn = mean_grad(net, syn.images, syn.labels, create_graph=True, logits=logits)
            loss = self.distance(g_syn, g_real)
        else:
            self._check_syn_layout(syn.labels, k)
            method = self.config.real_grads
            if method == "auto":
                method = "vmap" if real.images.device.type == "cuda" else "loop"
            g_real = [g.detach() for g in class_grads(net, real.images, real.labels, k, method=method,
                                                      forward=None if method == "vmap" else first_order)]
            syn_method = "vmap" if method == "vmap" else "loop"
            g_syn = class_grads(net, syn.images, syn.labels, k, method=syn_method, create_graph=True)
            loss = self.distance(g_syn, g_real, batched=True)
        ctx.log("gradient_match/collective", torch.tensor(float(collective), device=loss.device))
        return loss


def class_wise_loss(net, real_x, real_y, syn_x, syn_y, num_classes: int, distance: str = "ours",
                    method: str = "vmap") -> torch.Tensor:
    """The class-wise loss as a plain function (tests, benchmarks)."""
    g_real = [g.detach() for g in class_grads(net, real_x, real_y, num_classes, method=method)]
    g_syn = class_grads(net, syn_x, syn_y, num_classes, method="vmap" if method == "vmap" else "loop",
                        create_graph=True)
    return DISTANCES[distance](g_syn, g_real, batched=True)


def class_collective_loss(net, real_x, real_y, syn_x, syn_y, distance: str = "ours") -> torch.Tensor:
    """The class-collective loss as a plain function (tests, benchmarks)."""
    g_real = [g.detach() for g in mean_grad(net, real_x, real_y)]
    g_syn = mean_grad(net, syn_x, syn_y, create_graph=True)
    return DISTANCES[distance](g_syn, g_real)


__all__ = ["GradientMatch", "GradientMatchConfig", "class_collective_loss", "class_wise_loss", "warmup_active"]
