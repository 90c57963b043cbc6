"""Built-in backbones: the DC-family standard architectures under the names of DC's ``get_network``.

Every preset is a factory plus its own config class (a copy of the family's config with the preset's
defaults, see :func:`ddcore.models.presets.preset_config`), so ``ConvNetBN`` documents ``norm = "batchnorm"``
and a recipe can still override any option (``[backbone] name = "ConvNetBN", depth = 4``).
"""

import ddcore
from ddcore.config import NoConfig
from ddcore.models.alexnet import AlexNetConfig, build_alexnet
from ddcore.models.convnet import ConvNetConfig, build_convnet
from ddcore.models.lenet import build_lenet
from ddcore.models.mlp import MLPConfig, build_mlp
from ddcore.models.presets import preset_config
from ddcore.models.resnet import ResNetConfig, build_resnet
from ddcore.models.vgg import VGGConfig, build_vgg

__all__ = ["BACKBONES", "CONVNET_PRESETS", "OTHER_PRESETS"]

#: ConvNet presets: name -> (config defaults, one-line description).
CONVNET_PRESETS: dict[str, tuple[dict, str]] = {
    "ConvNet": ({}, "DC ConvNet-3: width 128, instance norm (GroupNorm(C, C)), ReLU, average pooling."),
    **{f"ConvNetD{d}": ({"depth": d}, f"DC ConvNet with {d} conv block(s).") for d in (1, 2, 3, 4)},
    **{f"ConvNetW{w}": ({"width": w}, f"DC ConvNet with {w} channels per conv.") for w in (32, 64, 128, 256)},
    "ConvNetBN": ({"norm": "batchnorm"}, "DC ConvNet with BatchNorm2d."),
    "ConvNetLN": ({"norm": "layernorm"}, "DC ConvNet with LayerNorm([C, H, W])."),
    "ConvNetIN": ({"norm": "instancenorm"}, "DC ConvNet with instance norm (GroupNorm(C, C))."),
    "ConvNetGN": ({"norm": "groupnorm"}, "DC ConvNet with GroupNorm(4, C)."),
    "ConvNetNN": ({"norm": "none"}, "DC ConvNet without normalisation."),
    "ConvNetAP": ({"pooling": "avgpooling"}, "DC ConvNet with 2x2 average pooling."),
    "ConvNetMP": ({"pooling": "maxpooling"}, "DC ConvNet with 2x2 max pooling."),
    "ConvNetNP": ({"pooling": "none"}, "DC ConvNet without pooling."),
    "ConvNetAS": ({"act": "sigmoid"}, "DC ConvNet with sigmoid activations."),
    "ConvNetAR": ({"act": "relu"}, "DC ConvNet with ReLU activations."),
    "ConvNetAL": ({"act": "leakyrelu"}, "DC ConvNet with LeakyReLU(0.01) activations."),
    "ConvNetASwish": ({"act": "swish"}, "DC ConvNet with swish (x·sigmoid(x)) activations."),
    "ConvNetASwishBN": ({"act": "swish", "norm": "batchnorm"}, "DC ConvNet with swish activations and BatchNorm2d."),
}

#: Other presets: name -> (factory, base config, config defaults, description).
OTHER_PRESETS: dict[str, tuple] = {
    "MLP": (build_mlp, MLPConfig, {}, "DC MLP: two hidden ReLU layers of 128 units."),
    "LeNet": (build_lenet, NoConfig, {}, "DC LeNet-5: two 5x5 convs with max-pools, 120-84 fully-connected head."),
    "AlexNet": (build_alexnet, AlexNetConfig, {}, "DC AlexNet for small images (five convs, no norm)."),
    "AlexNetBN": (build_alexnet, AlexNetConfig, {"norm": "batchnorm"}, "DC AlexNet with BatchNorm2d after every conv."),
    "VGG11": (build_vgg, VGGConfig, {}, "DC VGG11 with instance norm (GroupNorm(C, C))."),
    "VGG11BN": (build_vgg, VGGConfig, {"norm": "batchnorm"}, "DC VGG11 with BatchNorm2d."),
    "ResNet18": (build_resnet, ResNetConfig, {}, "DC CIFAR ResNet18 with instance norm (GroupNorm(C, C)), 512-d embedding."),
    "ResNet18BN": (build_resnet, ResNetConfig, {"norm": "batchnorm"}, "DC CIFAR ResNet18 with BatchNorm2d."),
    "ResNet18BN_AP": (
        build_resnet,
        ResNetConfig,
        {"norm": "batchnorm", "avgpool_downsample": True},
        "DC ResNet18BN_AP: BatchNorm2d, stride-2 convs replaced by stride-1 conv + 2x2 average pooling.",
    ),
    "ResNet10": (build_resnet, ResNetConfig, {"depth": 10}, "DC CIFAR ResNet with [1, 1, 1, 1] blocks, instance norm."),
}


def _config_for(name: str, base: type, defaults: dict, doc: str) -> type:
    """The preset's config class, published as a global of this module (so configs pickle)."""
    if base is NoConfig or (not defaults and f"{name}Config" == base.__name__):
        return base
    cls = preset_config(base, f"{name}Config", doc=f"Options of backbone {name}: {doc}", module=__name__, **defaults)
    globals()[cls.__name__] = cls
    return cls


#: name -> (factory, config class, description) of every built-in backbone.
BACKBONES: dict[str, tuple] = {
    **{name: (build_convnet, _config_for(name, ConvNetConfig, d, doc), doc) for name, (d, doc) in CONVNET_PRESETS.items()},
    **{name: (f, _config_for(name, base, d, doc), doc) for name, (f, base, d, doc) in OTHER_PRESETS.items()},
}


@ddcore.hookimpl
def ddcore_register_backbones(registry):
    for name, (factory, config, doc) in BACKBONES.items():
        registry.add(name, factory, config=config, doc=doc)
