"""DC-style AlexNet for small images (AlexNet without norm, AlexNetBN with BatchNorm after every conv).

Faithful to ``AlexNet``/``AlexNetBN`` of VICO-UoE/DatasetCondensation ``networks.py``: conv5x5(128, padding 2;
4 for 1-channel inputs so 28 px becomes 32 px) → pool → conv5x5(192) → pool → conv3x3(256) → conv3x3(192) →
conv3x3(192) → pool, ReLU after every conv, 2x2/stride-2 max-pools, one ``Linear`` on the flattened features
(192·4·4 = 3072-d at 32 px).

Deviations: the classifier's input size is computed (64 px gives 192·8·8), and a max-pool that would act on a
1-pixel map is skipped (tiny inputs).
"""

import attrs
import torch
from torch import nn

from ddcore.components import Backbone, BackboneOutput
from ddcore.config import option
from ddcore.models.layers import can_pool, conv_out
from ddcore.types import DatasetInfo

__all__ = ["AlexNet", "ALEXNET_NORMS", "AlexNetConfig", "build_alexnet"]

ALEXNET_NORMS = ("none", "batchnorm")


@attrs.define(frozen=True, kw_only=True)
class AlexNetConfig:
    """Options of the DC AlexNet."""

    norm: str = option("none", "Normalisation after every conv: none (AlexNet) or batchnorm (AlexNetBN).",
                       choices=ALEXNET_NORMS)


class AlexNet(Backbone):
    """DC AlexNet: five convs (128-192-256-192-192) with three max-pools, one linear classifier."""

    def __init__(self, *, channels: int, height: int, width: int, num_classes: int, norm: str = "none"):
        super().__init__()
        if norm not in ALEXNET_NORMS:
            raise ValueError(f"unknown AlexNet norm {norm!r}; expected one of {', '.join(ALEXNET_NORMS)}")
        self.has_running_stats = norm == "batchnorm"
        # (out channels, kernel, padding, pool after)
        plan = [(128, 5, 4 if channels == 1 else 2, True), (192, 5, 2, True), (256, 3, 1, False),
                (192, 3, 1, False), (192, 3, 1, True)]
        layers: list[nn.Module] = []
        in_ch, h, w = channels, height, width
        for out_ch, k, pad, pool in plan:
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=k, stride=1, padding=pad))
            if norm == "batchnorm":
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
            in_ch, h, w = out_ch, conv_out(h, k, pad), conv_out(w, k, pad)
            if pool and can_pool(h, w):
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.feature_shape = (in_ch, h, w)
        self.embed_dim = in_ch * h * w
        self.fc = nn.Linear(self.embed_dim, num_classes)

    def forward_all(self, x: torch.Tensor) -> BackboneOutput:
        fmap = self.features(x)
        emb = fmap.flatten(1)
        return BackboneOutput(embedding=emb, feature_map=fmap, logits=self.fc(emb))


def build_alexnet(config: AlexNetConfig, *, info: DatasetInfo, num_classes: int) -> AlexNet:
    """DC AlexNet for small images (five convs, three max-pools, one linear classifier)."""
    return AlexNet(channels=info.channels, height=info.height, width=info.width, num_classes=num_classes,
                   norm=config.norm)
