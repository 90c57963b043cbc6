"""ConvNet: the DC-family default backbone (Conv 3x3 → norm → act → pool, repeated ``depth`` times, one Linear).

Faithful to ``ConvNet`` of VICO-UoE/DatasetCondensation ``networks.py``:

- every conv is 3x3 with padding 1 and a bias; the first conv uses padding 3 on 1-channel inputs, so 28 px
  MNIST-like images become 32 px maps (the reference's ``im_size == 28 → 32`` trick, here computed);
- ``instancenorm`` is ``GroupNorm(C, C, affine=True)``; ``layernorm`` is ``LayerNorm([C, H, W])``;
- the classifier is a single ``Linear`` on the flattened last feature map (CIFAR: 128·4·4 = 2048-d).

Deviation (tiny inputs only): a pooling step that would act on a 1-pixel map is skipped, so deep nets still
build on 8x8 images (the reference would crash). Sizes are always computed, never hard-coded.
"""

import attrs
import torch
from torch import nn

from ddcore.components import Backbone, BackboneOutput
from ddcore.config import option, positive
from ddcore.models.layers import (
    ACTIVATIONS,
    NORMS,
    POOLINGS,
    can_pool,
    conv_out,
    make_activation,
    make_norm,
    make_pool,
)
from ddcore.types import DatasetInfo

__all__ = ["build_convnet", "ConvNet", "ConvNetConfig"]


@attrs.define(frozen=True, kw_only=True)
class ConvNetConfig:
    """Options of the DC ConvNet (defaults: ``get_default_convnet_setting``)."""

    width: int = option(128, "Channels of every conv layer (net_width).", validator=positive)
    depth: int = option(3, "Number of conv blocks (net_depth).", validator=positive)
    act: str = option("relu", "Activation after every norm layer (net_act).", choices=ACTIVATIONS)
    norm: str = option(
        "instancenorm",
        "Normalisation after every conv (net_norm); instancenorm = GroupNorm(C, C), groupnorm = GroupNorm(4, C).",
        choices=NORMS,
    )
    pooling: str = option("avgpooling", "2x2/stride-2 pooling closing every block (net_pooling).", choices=POOLINGS)


class ConvNet(Backbone):
    """DC ConvNet: ``depth`` blocks of Conv3x3(width) → norm → act → pool, then ``Linear(flat → K)``."""

    def __init__(
        self,
        *,
        channels: int,
        height: int,
        width: int,
        num_classes: int,
        net_width: int = 128,
        net_depth: int = 3,
        act: str = "relu",
        norm: str = "instancenorm",
        pooling: str = "avgpooling",
    ):
        super().__init__()
        if net_depth < 1 or net_width < 1:
            raise ValueError(f"ConvNet needs depth >= 1 and width >= 1, got depth={net_depth}, width={net_width}")
        if norm == "groupnorm" and net_width % 4:
            raise ValueError(f"ConvNet norm 'groupnorm' uses 4 groups: width must be a multiple of 4, got {net_width}")
        self.has_running_stats = norm == "batchnorm"
        layers: list[nn.Module] = []
        in_ch, h, w = channels, height, width
        for d in range(net_depth):
            pad = 3 if channels == 1 and d == 0 else 1
            layers.append(nn.Conv2d(in_ch, net_width, kernel_size=3, padding=pad))
            in_ch, h, w = net_width, conv_out(h, 3, pad), conv_out(w, 3, pad)
            if norm != "none":
                layers.append(make_norm(norm, in_ch, h, w))
            layers.append(make_activation(act))
            if pooling != "none" and can_pool(h, w):
                layers.append(make_pool(pooling))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.feature_shape = (in_ch, h, w)
        self.embed_dim = in_ch * h * w
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def forward_all(self, x: torch.Tensor) -> BackboneOutput:
        fmap = self.features(x)
        emb = fmap.flatten(1)
        return BackboneOutput(embedding=emb, feature_map=fmap, logits=self.classifier(emb))


def build_convnet(config: ConvNetConfig, *, info: DatasetInfo, num_classes: int) -> ConvNet:
    """DC ConvNet (Conv3x3 → norm → act → pool blocks, one linear classifier); the DC-family default."""
    return ConvNet(
        channels=info.channels,
        height=info.height,
        width=info.width,
        num_classes=num_classes,
        net_width=config.width,
        net_depth=config.depth,
        act=config.act,
        norm=config.norm,
        pooling=config.pooling,
    )
