"""DC-style CIFAR ResNets (ResNet10/18/34), plain and "_AP" (average-pool downsampling).

Faithful to ``ResNet``/``ResNet_AP`` of VICO-UoE/DatasetCondensation ``networks.py``:

- 3x3 stem at stride 1 without bias, no max-pool; BasicBlocks with bias-free convs; stages of 64/128/256/512
  channels, the last three downsampling by 2;
- norm ``instancenorm`` = ``GroupNorm(C, C, affine=True)`` (the default, also in shortcuts) or ``batchnorm``;
- plain: ``avg_pool2d(4)`` after ``layer4`` → 512-d embedding at 32 px (and at 28 px);
- ``_AP``: the stride-2 conv becomes stride-1 conv + ``avg_pool2d(2)`` (shortcut: 1x1 conv → avgpool → norm),
  and the head pooling is ``avg_pool2d(1)`` (identity) → 512·4·4 = 8192-d at 32 px.

``feature_map`` is the output of ``layer4`` (before the head pooling); ``embedding`` is the head pooling's
output flattened, so ``embedding == avg_pool2d(feature_map, head_pool).flatten(1)``.

Deviations: the head pooling kernel is ``min(4, h, w)`` (only smaller than 4 when ``layer4`` is smaller than
4x4, i.e. on 8x8 inputs, where the reference crashes), and the classifier's input size is computed (the reference hard-codes 512, which breaks at 64 px; here 64 px gives 512·2·2 = 2048).
"""

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.components import Backbone, BackboneOutput
from ddcore.config import option
from ddcore.models.layers import conv_out
from ddcore.types import DatasetInfo

__all__ = ["BasicBlock", "BLOCKS", "build_resnet", "ResNet", "RESNET_NORMS", "ResNetConfig"]

RESNET_NORMS = ("instancenorm", "batchnorm")
#: Residual blocks per stage, by depth.
BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown ResNet norm {norm!r}; expected one of {', '.join(RESNET_NORMS)}")


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; ``avgpool_downsample`` selects the ``_AP`` variant."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avgpool_downsample: bool):
        super().__init__()
        self.pool_stride = stride if avgpool_downsample else 1
        conv_stride = 1 if avgpool_downsample else stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, planes)
        if stride != 1 or in_planes != planes:
            if avgpool_downsample:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, kernel_size=1, stride=1, bias=False),
                    nn.AvgPool2d(kernel_size=2, stride=2),
                    _norm(norm, planes),
                )
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                    _norm(norm, planes),
                )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.pool_stride != 1:
            out = F.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@attrs.define(frozen=True, kw_only=True)
class ResNetConfig:
    """Options of the DC CIFAR ResNet."""

    depth: int = option(18, "Number of layers: 10 ([1,1,1,1]), 18 ([2,2,2,2]) or 34 ([3,4,6,3]) BasicBlocks.",
                        choices=tuple(BLOCKS))
    norm: str = option("instancenorm", "Normalisation: instancenorm = GroupNorm(C, C) (DC default) or batchnorm.",
                       choices=RESNET_NORMS)
    avgpool_downsample: bool = option(
        False, "The _AP variant: downsample with stride-1 conv + 2x2 average pooling, no head pooling."
    )


class ResNet(Backbone):
    """DC CIFAR ResNet: 3x3 stem, four BasicBlock stages (64-512), head average pooling, one Linear."""

    def __init__(
        self,
        *,
        channels: int,
        height: int,
        width: int,
        num_classes: int,
        blocks: tuple[int, int, int, int] = (2, 2, 2, 2),
        norm: str = "instancenorm",
        avgpool_downsample: bool = False,
    ):
        super().__init__()
        self.has_running_stats = norm == "batchnorm"
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(norm, 64)
        stages = []
        in_planes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            layer = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layer.append(BasicBlock(in_planes, planes, stride, norm, avgpool_downsample))
                in_planes = planes
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        c, h, w = 512, height, width
        for _ in range(3):  # layer2..layer4 halve the map: stride-2 3x3 conv (pad 1) or 2x2 average pooling
            h, w = (h // 2, w // 2) if avgpool_downsample else (conv_out(h, 3, 1, 2), conv_out(w, 3, 1, 2))
        #: Kernel of the head average pooling (1 for _AP, 4 for plain; smaller only on tiny maps).
        self.head_pool = 1 if avgpool_downsample else min(4, h, w)
        self.feature_shape = (c, h, w)
        self.embed_dim = c * (h // self.head_pool) * (w // self.head_pool)
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    def forward_all(self, x: torch.Tensor) -> BackboneOutput:
        fmap = self._trunk(x)
        pooled = fmap if self.head_pool == 1 else F.avg_pool2d(fmap, self.head_pool)
        emb = pooled.flatten(1)
        return BackboneOutput(embedding=emb, feature_map=fmap, logits=self.classifier(emb))


def build_resnet(config: ResNetConfig, *, info: DatasetInfo, num_classes: int) -> ResNet:
    """DC CIFAR ResNet (3x3 stem, no max-pool, BasicBlocks, instance norm by default)."""
    return ResNet(
        channels=info.channels,
        height=info.height,
        width=info.width,
        num_classes=num_classes,
        blocks=BLOCKS[config.depth],
        norm=config.norm,
        avgpool_downsample=config.avgpool_downsample,
    )
