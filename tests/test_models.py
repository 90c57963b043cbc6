"""Tests of the built-in backbones (ddcore.models, registered by ddcore.builtin.backbones).

Every registered name is built for CIFAR-like (3x32x32), MNIST-like (1x28x28) and scikit-learn-digits-like
(1x8x8) inputs; the DC reference sizes (embedding widths, the ConvNet parameter count) are checked by hand.
"""

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.builtin.backbones import ddcore_register_backbones
from ddcore.components import Backbone
from ddcore.config import describe
from ddcore.errors import RecipeError
from ddcore.registry import Registry
from ddcore.types import DatasetInfo

EXPECTED_NAMES = {
    "ConvNet", "ConvNetD1", "ConvNetD2", "ConvNetD3", "ConvNetD4", "ConvNetW32", "ConvNetW64", "ConvNetW128",
    "ConvNetW256", "ConvNetBN", "ConvNetLN", "ConvNetIN", "ConvNetGN", "ConvNetNN", "ConvNetAP", "ConvNetMP",
    "ConvNetNP", "ConvNetAS", "ConvNetAR", "ConvNetAL", "ConvNetASwish", "ConvNetASwishBN", "MLP", "LeNet",
    "AlexNet", "AlexNetBN", "VGG11", "VGG11BN", "ResNet18", "ResNet18BN", "ResNet18BN_AP", "ResNet10",
}
BN_NAMES = {"ConvNetBN", "ConvNetASwishBN", "AlexNetBN", "VGG11BN", "ResNet18BN", "ResNet18BN_AP"}
SHAPES = [(3, 32, 32), (1, 28, 28), (1, 8, 8)]
NUM_CLASSES = 10


def _registry() -> Registry:
    registry = Registry()
    ddcore_register_backbones(registry.bind("backbone", "builtin", "ddcore"))
    return registry


REGISTRY = _registry()


def info_for(shape, num_classes=NUM_CLASSES) -> DatasetInfo:
    c, h, w = shape
    return DatasetInfo(name=f"fake{c}x{h}x{w}", num_classes=num_classes, channels=c, height=h, width=w,
                       mean=(0.5,) * c, std=(0.25,) * c)


def build(name: str, shape, overrides=None, num_classes=NUM_CLASSES) -> Backbone:
    entry = REGISTRY.get("backbone", name)
    config = entry.structure(overrides or {}, key="backbone")
    return entry.factory(config, info=info_for(shape, num_classes), num_classes=num_classes)


def test_every_expected_name_is_registered():
    assert set(REGISTRY.names("backbone")) == EXPECTED_NAMES


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_forward_all_shapes_embedding_and_backward(name, shape):
    torch.manual_seed(0)
    net = build(name, shape)
    assert isinstance(net, Backbone)
    x = torch.randn(2, *shape)
    x_req = x.clone().requires_grad_(True)

    net.train()
    out = net.forward_all(x_req)
    n, d = out.embedding.shape
    assert n == 2 and d == net.embed_dim
    assert out.feature_map.ndim == 4 and out.feature_map.shape[0] == 2
    assert tuple(out.feature_map.shape[1:]) == tuple(net.feature_shape)
    assert out.logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out.logits).all()

    # embedding is the flattened feature map (after the head pooling for ResNets, kernel 1 elsewhere)
    pool = getattr(net, "head_pool", 1)
    pooled = out.feature_map if pool == 1 else F.avg_pool2d(out.feature_map, pool)
    torch.testing.assert_close(out.embedding, pooled.flatten(1))

    # backward reaches every parameter and the input
    (out.logits.square().mean() + out.embedding.mean()).backward()
    assert x_req.grad is not None and x_req.grad.abs().sum() > 0
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_has_running_stats_matches_batchnorm_and_forward_embed_agree(name):
    # forward / embed agree with forward_all (eval mode: deterministic for BatchNorm too); 8x8 keeps it cheap
    small = build(name, (1, 8, 8)).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        full = small.forward_all(x)
        torch.testing.assert_close(small(x), full.logits)
        torch.testing.assert_close(small.embed(x), full.embedding)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in small.modules())
    assert has_bn == (name in BN_NAMES)
    assert small.has_running_stats == has_bn


def test_convnet_instancenorm_is_groupnorm_per_channel():
    net = build("ConvNet", (3, 32, 32))
    norms = [m for m in net.modules() if isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d, nn.BatchNorm2d))]
    assert len(norms) == 3
    for m in norms:
        assert type(m) is nn.GroupNorm
        assert m.num_groups == m.num_channels == 128 and m.affine
    # functionally: per-sample, per-channel standardisation (then the affine map, identity at init)
    x = torch.randn(2, 128, 8, 8) * 3 + 1
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(norms[0](x), (x - mean) / torch.sqrt(var + norms[0].eps))


def test_convnet_norm_variants_are_the_dc_layers():
    ln = [m for m in build("ConvNetLN", (3, 32, 32)).modules() if isinstance(m, nn.LayerNorm)]
    assert [tuple(m.normalized_shape) for m in ln] == [(128, 32, 32), (128, 16, 16), (128, 8, 8)]
    gn = [m for m in build("ConvNetGN", (3, 32, 32)).modules() if isinstance(m, nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in gn] == [(4, 128)] * 3
    nn_net = build("ConvNetNN", (3, 32, 32))
    assert not any(isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)) for m in nn_net.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in build("ConvNetMP", (3, 32, 32)).modules())
    assert build("ConvNetNP", (3, 32, 32)).embed_dim == 128 * 32 * 32
    assert isinstance(build("ConvNetAS", (3, 32, 32)).features[2], nn.Sigmoid)
    leaky = build("ConvNetAL", (3, 32, 32)).features[2]
    assert isinstance(leaky, nn.LeakyReLU) and leaky.negative_slope == 0.01
    swish = build("ConvNetASwish", (3, 32, 32)).features[2]
    t = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(swish(t), t * torch.sigmoid(t))


def test_convnet_parameter_count_matches_dc_reference():
    # DC ConvNet, width 128, depth 3, instance norm, CIFAR (3x32x32), 10 classes, counted by hand:
    conv1 = 3 * 128 * 3 * 3 + 128
    conv23 = 2 * (128 * 128 * 3 * 3 + 128)
    norms = 3 * (128 + 128)  # GroupNorm(128, 128) weight + bias
    fc = 128 * 4 * 4 * 10 + 10
    expected = conv1 + conv23 + norms + fc
    assert expected == 320010
    net = build("ConvNet", (3, 32, 32))
    assert sum(p.numel() for p in net.parameters()) == expected


@pytest.mark.parametrize(
    "name, shape, dim",
    [
        ("ConvNet", (3, 32, 32), 2048),
        ("ConvNet", (1, 28, 28), 2048),  # padding 3 on the first conv: 28 px behaves like 32 px
        ("ConvNet", (3, 64, 64), 8192),
        ("ConvNetD4", (3, 64, 64), 2048),
        ("MLP", (3, 32, 32), 128),
        ("LeNet", (3, 32, 32), 400),
        ("LeNet", (1, 28, 28), 400),
        ("AlexNet", (3, 32, 32), 3072),
        ("AlexNet", (1, 28, 28), 3072),
        ("VGG11", (3, 32, 32), 512),
        ("VGG11", (1, 28, 28), 512),
        ("ResNet18", (3, 32, 32), 512),
        ("ResNet18", (1, 28, 28), 512),
        ("ResNet10", (3, 32, 32), 512),
        ("ResNet18BN_AP", (3, 32, 32), 512 * 4 * 4),
        ("ResNet18BN_AP", (1, 28, 28), 512 * 3 * 3),
    ],
)
def test_embedding_sizes_match_dc_reference(name, shape, dim):
    assert build(name, shape).embed_dim == dim


def test_reference_layer_counts():
    # input layers of the classifiers as in DC networks.py
    assert build("MLP", (1, 28, 28)).fc_1.in_features == 28 * 28
    resnet = build("ResNet18", (3, 32, 32))
    assert [len(getattr(resnet, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in resnet.modules())
    assert [len(getattr(build("ResNet10", (3, 32, 32)), f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    vgg = build("VGG11", (3, 32, 32))
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.modules()) == 8
    assert all(m.num_groups == m.num_channels for m in vgg.modules() if isinstance(m, nn.GroupNorm))
    assert sum(isinstance(m, nn.Conv2d) for m in build("AlexNet", (3, 32, 32)).modules()) == 5


def test_preset_configs_show_their_defaults_and_stay_overridable():
    entry = REGISTRY.get("backbone", "ConvNetBN")
    rows = {r["name"]: r for r in describe(entry.config)}
    assert rows["norm"]["default"] == repr("batchnorm")
    assert rows["norm"]["choices"] == ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
    assert rows["norm"]["doc"]
    config = entry.structure({"depth": 4, "width": 64})
    assert (config.depth, config.width, config.norm) == (4, 64, "batchnorm")
    net = entry.factory(config, info=info_for((3, 32, 32)), num_classes=7)
    assert net.embed_dim == 64 * 2 * 2 and net.has_running_stats
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)

    overridden = build("ConvNetBN", (3, 32, 32), {"norm": "instancenorm"})
    assert not overridden.has_running_stats
    assert attrs.fields_dict(REGISTRY.get("backbone", "ResNet18BN_AP").config)["avgpool_downsample"].default is True


@pytest.mark.parametrize(
    "name, overrides, key",
    [
        ("ConvNet", {"norm": "weirdnorm"}, "backbone.norm"),
        ("ConvNet", {"depth": 0}, "backbone.depth"),
        ("ConvNetW64", {"width": "64"}, "backbone.width"),
        ("ResNet18", {"depth": 50}, "backbone.depth"),
        ("VGG11", {"colour": 1}, "backbone.colour"),
    ],
)
def test_bad_options_raise_recipe_errors_naming_the_key(name, overrides, key):
    with pytest.raises(RecipeError) as err:
        REGISTRY.get("backbone", name).structure(overrides, key="backbone")
    assert key in str(err.value)


def test_batchnorm_dry_run_leaves_running_stats_untouched():
    for name in ("ConvNetBN", "ResNet18BN"):
        net = build(name, (3, 32, 32))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert int(m.num_batches_tracked) == 0
                assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
