"""DC-style VGG for small images (VGG11 with instance norm by default, VGG11BN with batch norm).

Faithful to ``VGG`` of VICO-UoE/DatasetCondensation ``networks.py``: every conv is 3x3 (padding 1; padding 3 on
the first conv of 1-channel inputs, so 28 px becomes 32 px), followed by ``GroupNorm(C, C)`` (``instancenorm``)
or ``BatchNorm2d`` and ReLU; ``'M'`` is a 2x2/stride-2 max-pool; one ``Linear`` on the flattened features
(512-d at 32 px). The reference's trailing ``AvgPool2d(1, 1)`` is an identity and is left out.

Deviations: the classifier's input size is computed (the reference hard-codes 512, which breaks at 64 px;
here 64 px gives 512·2·2 = 2048), and a max-pool that would act on a 1-pixel map is skipped (tiny inputs).
"""

import attrs
import torch
from torch import nn

from ddcore.components import Backbone, BackboneOutput
from ddcore.config import option
from ddcore.models.layers import can_pool, conv_out
from ddcore.types import DatasetInfo

__all__ = ["build_vgg", "VGG", "VGG_NORMS", "VGG_PLANS", "VGGConfig"]

#: Layer plans: channel counts, ``"M"`` = max-pool.
VGG_PLANS: dict[str, tuple] = {
    "VGG11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "VGG13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "VGG16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "VGG19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}
VGG_NORMS = ("instancenorm", "batchnorm")


@attrs.define(frozen=True, kw_only=True)
class VGGConfig:
    """Options of the DC VGG."""

    plan: str = option("VGG11", "Layer plan (number of conv layers).", choices=tuple(VGG_PLANS))
    norm: str = option("instancenorm", "Normalisation after every conv: instancenorm = GroupNorm(C, C), or batchnorm.",
                       choices=VGG_NORMS)


class VGG(Backbone):
    """DC VGG: conv3x3 → norm → ReLU stacks with max-pools, one linear classifier."""

    def __init__(self, *, channels: int, height: int, width: int, num_classes: int,
                 plan: str = "VGG11", norm: str = "instancenorm"):
        super().__init__()
        if norm not in VGG_NORMS:
            raise ValueError(f"unknown VGG norm {norm!r}; expected one of {', '.join(VGG_NORMS)}")
        self.has_running_stats = norm == "batchnorm"
        layers: list[nn.Module] = []
        in_ch, h, w = channels, height, width
        for i, item in enumerate(VGG_PLANS[plan]):
            if item == "M":
                if can_pool(h, w):
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    h, w = h // 2, w // 2
                continue
            pad = 3 if channels == 1 and i == 0 else 1
            layers += [
                nn.Conv2d(in_ch, item, kernel_size=3, padding=pad),
                nn.GroupNorm(item, item, affine=True) if norm == "instancenorm" else nn.BatchNorm2d(item),
                nn.ReLU(inplace=True),
            ]
            in_ch, h, w = item, conv_out(h, 3, pad), conv_out(w, 3, pad)
        self.features = nn.Sequential(*layers)
        self.feature_shape = (in_ch, h, w)
        self.embed_dim = in_ch * h * w
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def forward_all(self, x: torch.Tensor) -> BackboneOutput:
        fmap = self.features(x)
        emb = fmap.flatten(1)
        return BackboneOutput(embedding=emb, feature_map=fmap, logits=self.classifier(emb))


def build_vgg(config: VGGConfig, *, info: DatasetInfo, num_classes: int) -> VGG:
    """DC VGG (3x3 convs with instance or batch norm, max-pools, one linear classifier)."""
    return VGG(channels=info.channels, height=info.height, width=info.width, num_classes=num_classes,
               plan=config.plan, norm=config.norm)
