"""DC-style LeNet-5: conv5x5(6) → ReLU → max-pool → conv5x5(16) → ReLU → max-pool → 120 → 84 → K.

Faithful to ``LeNet`` of VICO-UoE/DatasetCondensation ``networks.py`` (first conv padding 2 for 1-channel
inputs, 0 otherwise; 16·5·5 = 400-d features at 28 px/1 ch and 32 px/3 ch).

``embedding`` is the flattened conv features (input of ``fc_1``), matching the DC ``embed`` of the conv nets,
and ``feature_map`` the last pooled map; the two hidden fully-connected layers belong to the head.

Deviations (tiny inputs only): a 5x5 conv whose input is smaller than 5 pixels gets "same" padding (2), and
a max-pool on a 1-pixel map is skipped; the ``fc_1`` input size is computed.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ddcore.components import Backbone, BackboneOutput
from ddcore.config import NoConfig
from ddcore.models.layers import can_pool, conv_out, fit_padding
from ddcore.types import DatasetInfo

__all__ = ["build_lenet", "LeNet"]


class LeNet(Backbone):
    """DC LeNet-5 (ReLU, max-pool) with a three-layer fully-connected head."""

    def __init__(self, *, channels: int, height: int, width: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, h, w = channels, height, width
        for out_ch, pad in ((6, 2 if channels == 1 else 0), (16, 0)):
            pad = max(fit_padding(h, 5, pad), fit_padding(w, 5, pad))
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=5, padding=pad), nn.ReLU(inplace=True)]
            in_ch, h, w = out_ch, conv_out(h, 5, pad), conv_out(w, 5, pad)
            if can_pool(h, w):
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.feature_shape = (in_ch, h, w)
        self.embed_dim = in_ch * h * w
        self.fc_1 = nn.Linear(self.embed_dim, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def forward_all(self, x: torch.Tensor) -> BackboneOutput:
        fmap = self.features(x)
        emb = fmap.flatten(1)
        logits = self.fc_3(F.relu(self.fc_2(F.relu(self.fc_1(emb)))))
        return BackboneOutput(embedding=emb, feature_map=fmap, logits=logits)


def build_lenet(config: NoConfig, *, info: DatasetInfo, num_classes: int) -> LeNet:
    """DC LeNet-5 (two 5x5 convs with max-pools, 120-84 fully-connected head)."""
    return LeNet(channels=info.channels, height=info.height, width=info.width, num_classes=num_classes)
