"""Expansion augmentation ``predefined_views``: ``[X; τ_1(X); ...; τ_A(X)]`` for any parameterization.

Labels, targets and groups are repeated unchanged for every view (Table 11's "same" target model). Use the
``pca_augmented`` parameterization instead when the views need their own trained targets.
"""

from __future__ import annotations

import attrs
import torch

from ddcore.components import Expansion
from ddcore.config import option
from ddcore.types import SynBatch

from ddcore_rotations.views import expand_names, make_view


def _views_validator(instance, attribute, value) -> None:
    expand_names(tuple(value))


@attrs.define(frozen=True, kw_only=True)
class PredefinedViewsConfig:
    """Options of the ``predefined_views`` expansion."""

    views: tuple[str, ...] = option(("rotation",), "Views or sets: rotation, jigsaw, crop, rot90, jigsaw_lr, ...",
                                    validator=_views_validator)
    crop: int = option(0, "Crop side for the crop views; 0 = 20/32 of the image side.")


class PredefinedViews(Expansion):
    """Deterministic differentiable expansion by predefined views (rotations, jigsaw, five-crop)."""

    def __init__(self, config: PredefinedViewsConfig, build):
        super().__init__(config, build)
        self.views = [make_view(n, config.crop) for n in expand_names(tuple(config.views))]

    def expand(self, syn: SynBatch) -> SynBatch:
        reps = len(self.views) + 1

        def repeat(t):
            return None if t is None else t.repeat(reps, *([1] * (t.ndim - 1)))

        images = torch.cat([syn.images, *[v(syn.images) for v in self.views]])
        return SynBatch(images=images, labels=repeat(syn.labels), targets=repeat(syn.targets),
                        groups=repeat(syn.groups))
