"""The two networks KRR-ST needs besides the core backbones.

* :class:`ConvNetKRR` (registered as backbone ``ConvNetKRR``): the inner/evaluation ConvNet of the official code
  (db-Lee/selfsup_dd ``models/convnet.py``, facts §6): blocks of Conv3x3(pad 1, bias) → BatchNorm → ReLU →
  AvgPool2, with the channel count given per block (CIFAR-100: ``[128, 256, 512]`` → 512·4·4 = 8192-d
  embedding). This is *not* the DC ConvNet (fixed width, instance norm).
* :class:`CifarResNet18`: the teacher trunk g_φ, a ResNet18 with the solo-learn CIFAR stem (3×3 conv, stride 1,
  padding 2, no max-pool) and no classifier, 512-d output. Parameter names are torchvision's (``conv1.weight``,
  ``bn1.*``, ``layer1.0.conv1.weight`` …, ``layer4.1.bn2.*``) so torchvision / solo-learn / official KRR-ST
  checkpoints load directly. ``base_width`` < 64 gives small teachers for CPU tests.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.components import Backbone, BackboneOutput
from ddcore.config import option
from ddcore.types import DatasetInfo


def _positive_channels(instance, attribute, value) -> None:
    if not value or any(int(c) < 1 for c in value):
        raise ValueError(f"expected a non-empty list of positive channel counts, got {list(value)}")


@attrs.define(frozen=True, kw_only=True)
class ConvNetKRRConfig:
    """Options of the KRR-ST ConvNet (``convnet_128_256_512_bn`` of the official code by default)."""

    channels: tuple[int, ...] = option(
        (128, 256, 512), "Output channels of each conv block (one block per entry; official CIFAR: 128,256,512; "
        "64 px: 64,128,256,512).", validator=_positive_channels,
    )
    norm: str = option("batchnorm", "Normalisation after every conv (official: batchnorm).",
                       choices=("batchnorm", "instancenorm", "none"))


class ConvNetKRR(Backbone):
    """Conv3x3 → norm → ReLU → AvgPool2 per block with per-block channels, then ``Linear(flat → K)``."""

    def __init__(self, *, in_channels: int, height: int, width: int, num_classes: int,
                 channels: tuple[int, ...] = (128, 256, 512), norm: str = "batchnorm"):
        super().__init__()
        self.has_running_stats = norm == "batchnorm"
        layers: list[nn.Module] = []
        c, h, w = in_channels, height, width
        for out in channels:
            layers.append(nn.Conv2d(c, int(out), kernel_size=3, padding=1, bias=True))
            c = int(out)
            if norm == "batchnorm":
                layers.append(nn.BatchNorm2d(c))
            elif norm == "instancenorm":
                layers.append(nn.GroupNorm(c, c, affine=True))
            layers.append(nn.ReLU(inplace=True))
            if h >= 2 and w >= 2:  # never pool a 1-pixel map (tiny test images)
                layers.append(nn.AvgPool2d(2, 2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c, h, w)
        self.embed_dim = c * h * w
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def forward_all(self, x: torch.Tensor) -> BackboneOutput:
        fmap = self.features(x)
        emb = fmap.flatten(1)
        return BackboneOutput(embedding=emb, feature_map=fmap, logits=self.classifier(emb))


def build_convnet_krr(config: ConvNetKRRConfig, *, info: DatasetInfo, num_classes: int) -> ConvNetKRR:
    """KRR-ST ConvNet: per-block channels (default 128-256-512), BatchNorm, avg-pool; the paper's ConvNet3."""
    return ConvNetKRR(in_channels=info.channels, height=info.height, width=info.width, num_classes=num_classes,
                      channels=tuple(config.channels), norm=config.norm)


class _BasicBlock(nn.Module):
    """torchvision's BasicBlock (same parameter names)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet18(nn.Module):
    """ResNet18 trunk with the CIFAR stem of solo-learn / KRR-ST's teacher; ``forward`` returns ``[N, 8·base_width]``.

    :param stem_padding: padding of the 3×3 stem conv; 2 is solo-learn's (and so the official teacher's)
        unusual choice, kept so released checkpoints give the same features.
    """

    def __init__(self, in_channels: int = 3, base_width: int = 64, stem_padding: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, base_width, 3, stride=1, padding=stem_padding, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        planes = [base_width, 2 * base_width, 4 * base_width, 8 * base_width]
        in_planes = base_width
        for i, p in enumerate(planes):
            blocks = [_BasicBlock(in_planes, p, 1 if i == 0 else 2), _BasicBlock(p, p, 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = p
        self.out_dim = planes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class _TorchvisionTrunk(Backbone):
    """A torchvision trunk (``features(x)`` → feature map) + global average pool + ``Linear(dim → K)``."""

    has_running_stats = True

    def __init__(self, features: nn.Module, dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.embed_dim = dim
        self.classifier = nn.Linear(dim, num_classes)

    def forward_all(self, x: torch.Tensor) -> BackboneOutput:
        fmap = self.features(x)
        emb = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        return BackboneOutput(embedding=emb, feature_map=fmap, logits=self.classifier(emb))


@attrs.define(frozen=True, kw_only=True)
class ResNet10KRRConfig:
    """Options of ``ResNet10KRR`` (the official ``models/resnet.py`` ResNet10)."""

    stem_padding: int = option(2, "Padding of the 3x3 stride-1 stem conv (official: 2, the solo-learn stem).",
                               validator=attrs.validators.ge(0))


def build_resnet10_krr(config: ResNet10KRRConfig, *, info: DatasetInfo, num_classes: int) -> Backbone:
    """ResNet10 of the official KRR-ST code: torchvision's ResNet with one BasicBlock per stage, BatchNorm,
    zero-initialised last BN of each residual branch, 3x3 stride-1 stem, no max-pool, global average pool (512-d at
    32 and 64 px)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [1, 1, 1, 1], zero_init_residual=True)
    net.conv1 = nn.Conv2d(info.channels, 64, kernel_size=3, stride=1, padding=config.stem_padding, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits convs
    features = nn.Sequential(net.conv1, net.bn1, net.relu, net.layer1, net.layer2, net.layer3, net.layer4)
    return _TorchvisionTrunk(features, 512, num_classes)


@attrs.define(frozen=True, kw_only=True)
class MobileNetV2KRRConfig:
    """Options of ``MobileNetV2KRR`` (the official ``models/mobilenet.py`` MobileNetV2 for small images)."""

    expansion: int = option(2, "Expansion factor t of every stage after the first (official: 2; torchvision: 6).",
                            validator=attrs.validators.ge(1))


def build_mobilenet_v2_krr(config: MobileNetV2KRRConfig, *, info: DatasetInfo, num_classes: int) -> Backbone:
    """torchvision's MobileNetV2 with the official code's small-image plan: stride-1 stem, stages (t, c, n, s) =
    (1,16,1,1) (t,24,2,1) (t,32,3,2) (t,64,4,2) (t,96,3,1) (t,160,3,2) (t,320,1,1) with t = ``expansion`` (total
    stride 8: a 4x4 map at 32 px, 8x8 at 64 px), 1280-d embedding after global average pooling.

    Differences from the official network (which is kuangliu's CIFAR MobileNetV2 with t = 2): torchvision's ReLU6
    instead of ReLU, and no 1x1 projection shortcut in stride-1 blocks that change the width (torchvision adds a
    residual only when the shapes match).
    """
    from torchvision.models import MobileNetV2

    t = config.expansion
    plan = [[1, 16, 1, 1], [t, 24, 2, 1], [t, 32, 3, 2], [t, 64, 4, 2], [t, 96, 3, 1], [t, 160, 3, 2], [t, 320, 1, 1]]
    net = MobileNetV2(inverted_residual_setting=plan)
    stem = net.features[0][0]
    net.features[0][0] = nn.Conv2d(info.channels, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.features[0][0].weight, mode="fan_out")  # as torchvision inits convs
    return _TorchvisionTrunk(net.features, net.last_channel, num_classes)
