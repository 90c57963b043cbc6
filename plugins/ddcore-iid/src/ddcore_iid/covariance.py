"""IID's covariance matching constraint (paper eq. 5-7; VincenDen/IID DM+ours/main_DM_IID.py l.180-290).

For the step network's final feature block map (after its last pooling, ``[B, C, h, w]`` -> ``[B, C, h*w]``:
``C`` local descriptors of dimension ``h*w`` per image), per class ``c`` and for real and synthetic separately:

1. subtract the class's batch mean (element-wise over ``[C, h*w]``, averaged over the class's images only);
2. per image form ``D D^T`` (``C x C``, summed over the ``h*w`` positions);
3. average over the class's images: ``Sigma^c = 1/n_c sum_i D_i D_i^T``.

The term is ``sum_c ||Sigma_syn^c - Sigma_real^c||_F^2`` (sum of squared differences); the real side is a
constant. The official constant (0.01 for DM+IID, 0.03 for IDM+IID) is the recipe ``weight``. All classes are
computed together: per-class means by ``index_add``, the per-class ``D D^T`` sums as one batched matmul.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch

from ddcore.components import Objective
from ddcore.errors import RecipeError

from ddcore.perclass import class_blocks, class_ids, class_means


def class_covariances(maps: torch.Tensor, ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[N, C, P]`` local descriptors -> ``[K, C, C]`` per-class local covariance ``1/n_c sum_i D_i D_i^T``."""
    means, _ = class_means(maps, ids, num_classes)
    centred = maps - means[ids]
    blocks = class_blocks(centred, ids, num_classes)  # [K, n, C, P]
    k, n, c, p = blocks.shape
    stacked = blocks.permute(0, 2, 1, 3).reshape(k, c, n * p)  # sum over images and positions in one matmul
    return torch.bmm(stacked, stacked.transpose(1, 2)) / n


def covariance_matching_loss(real_maps: torch.Tensor, real_ids: torch.Tensor, syn_maps: torch.Tensor,
                             syn_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``sum_c ||Sigma_syn^c - Sigma_real^c||^2`` for ``[N, C, h, w]`` (or ``[N, C, P]``) feature maps."""
    real = real_maps.detach().flatten(2)
    syn = syn_maps.flatten(2)
    diff = class_covariances(syn, syn_ids, num_classes) - class_covariances(real, real_ids, num_classes)
    return (diff**2).sum()


@attrs.define(frozen=True, kw_only=True)
class CovarianceMatchingConfig:
    """``covariance_matching`` has no options besides its recipe ``weight`` (official: 0.01 DM+IID, 0.03 IDM+IID)."""


class CovarianceMatching(Objective):
    """Match per-class local feature covariances ([C, h*w] descriptors of the final block) of real and synthetic.

    Uses every network in ``ctx.nets`` (summed); each class needs the same number of rows in a batch (the engine's
    per-class real batches and class-major synthetic sets satisfy this).
    """

    coupling = "separable"

    def __init__(self, config: CovarianceMatchingConfig, build):
        super().__init__(config, build)
        self._checked: set = set()

    def _check_equal_counts(self, ids: torch.Tensor, num_classes: int, which: str) -> None:
        key = (which, tuple(ids.shape))  # the layout of a given size does not change between steps
        if key in self._checked:
            return
        counts = torch.bincount(ids, minlength=num_classes)
        if bool((counts != counts[0]).any()):  # one host sync per batch size, not per step
            raise RecipeError(f"covariance_matching needs the same number of {which} images in every class, "
                              f"got {counts.tolist()}", key="objective")
        self._checked.add(key)

    def __call__(self, ctx) -> torch.Tensor:
        if ctx.real is None:
            raise RecipeError("covariance_matching needs real batches; set [real] sampling to 'per_class'", key="real")
        k = ctx.num_classes
        real_ids, syn_ids = class_ids(ctx.real), class_ids(ctx.syn)
        if getattr(ctx.real, "per_class", None) is None:
            self._check_equal_counts(real_ids, k, "real")
        self._check_equal_counts(syn_ids, k, "synthetic")
        total: Optional[torch.Tensor] = None
        for net in ctx.nets:
            term = covariance_matching_loss(ctx.outputs(net, "real").feature_map, real_ids,
                                            ctx.outputs(net, "syn").feature_map, syn_ids, k)
            total = term if total is None else total + term
        assert total is not None, "sampler returned no networks"
        return total
