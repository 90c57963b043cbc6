"""IID's class centralization constraint (paper eq. 3-4; code: DM+ours/main_DM_IID.py l.246, IDM_cifar10_IID.py l.382).

The synthetic images of the step (after expansion and siamese augmentation: ``ctx.syn``) go through a pretrained
network drawn at random from the pool (once per step), and the term pulls each image's 512-d feature towards its
class's mean feature:

* ``form = "code"`` (default, what produced the published numbers): ``sum_c sum_i ||f_i - mean_c||^2``
  (the code's comment: the same result as the exp form "without using the exp() function and setting Beta to 0");
* ``form = "paper"``: ``sum_c sum_i max(0, exp(alpha ||f_i - mean_c||^2) - beta)``.

The official constant (0.05 for DM+IID, 0.01 for IDM+IID; the paper says 0.003 at ipc 50) is the recipe ``weight``.
"""

from __future__ import annotations

import attrs
import torch

from ddcore.components import Objective
from ddcore.config import non_negative, option

from ddcore.perclass import class_ids, class_means
from ddcore_iid.pool import PoolConfig, load_or_train_pool, pick_member


@attrs.define(frozen=True, kw_only=True)
class ClassCentralizationConfig:
    """Options of ``class_centralization``."""

    form: str = option("code", "'code': plain within-class scatter (official code); 'paper': sum of "
                               "max(0, exp(alpha * d^2) - beta).", choices=("code", "paper"))
    alpha: float = option(0.02, "form = 'paper': scale inside exp (the code's commented-out original: 0.02).",
                          validator=non_negative)
    beta: float = option(0.5, "form = 'paper': centralization threshold (paper Table 5: best below 0.7).",
                         validator=non_negative)
    pool: PoolConfig = option(factory=PoolConfig, doc="The pretrained pool (table: size, epochs, lr, momentum, "
                                                      "weight_decay, batch, arch, seed).")


def centralization_loss(features: torch.Tensor, ids: torch.Tensor, num_classes: int, *, form: str = "code",
                        alpha: float = 0.02, beta: float = 0.5) -> torch.Tensor:
    """Within-class scatter of ``[N, D]`` features (code form) or the paper's exp/beta hinge form."""
    means, _ = class_means(features, ids, num_classes)
    dist2 = ((features - means[ids]) ** 2).sum(dim=1)
    if form == "paper":
        return torch.clamp(torch.exp(alpha * dist2) - beta, min=0).sum()
    return dist2.sum()


class ClassCentralization(Objective):
    """Within-class scatter of the synthetic images' features in a random member of a pretrained ResNet18 pool."""

    coupling = "separable"

    def __init__(self, config: ClassCentralizationConfig, build):
        super().__init__(config, build)
        self._pool = None

    def pool(self) -> list:
        """The frozen pool, built (trained or read from the cache) on first use and then kept in memory."""
        if self._pool is None:
            self._pool = load_or_train_pool(self.config.pool, self.build)
        return self._pool

    def __call__(self, ctx) -> torch.Tensor:
        pool = self.pool()
        net = pool[pick_member(pool, ctx.build.seed, ctx.step)]
        features = ctx.outputs(net, "syn").embedding
        cfg = self.config
        return centralization_loss(features, class_ids(ctx.syn), ctx.num_classes, form=cfg.form, alpha=cfg.alpha,
                                   beta=cfg.beta)
