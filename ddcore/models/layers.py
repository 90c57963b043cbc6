"""Building blocks shared by the standard backbones: norm/activation/pooling factories and size helpers.

The choices and their layer definitions follow the DC-family ``networks.py`` (VICO-UoE/DatasetCondensation):
``instancenorm`` is ``GroupNorm(C, C, affine=True)`` (not ``nn.InstanceNorm2d``), ``groupnorm`` is
``GroupNorm(4, C)``, ``layernorm`` normalises over ``[C, H, W]``.
"""

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS", "can_pool", "conv_out", "fit_padding", "make_activation", "make_norm", "make_pool", "NORMS",
    "POOLINGS", "Swish"
]

#: Normalisation layers a ConvNet accepts (DC names).
NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
#: Activations a ConvNet accepts (DC names).
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu", "swish")
#: Pooling layers a ConvNet accepts (DC names).
POOLINGS = ("avgpooling", "maxpooling", "none")


class Swish(nn.Module):
    """``x * sigmoid(x)``, the DC repo's swish (no learnable beta)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def make_norm(norm: str, channels: int, height: int, width: int) -> nn.Module:
    """The DC normalisation layer for a ``[channels, height, width]`` feature map (``Identity`` for ``none``)."""
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels, affine=True)
    if norm == "layernorm":
        return nn.LayerNorm([channels, height, width], elementwise_affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")


def make_activation(act: str) -> nn.Module:
    """The DC activation (ReLU is in-place, as in the reference)."""
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "sigmoid":
        return nn.Sigmoid()
    if act == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    if act == "swish":
        return Swish()
    raise ValueError(f"unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")


def make_pool(pooling: str) -> nn.Module:
    """The DC 2x2/stride-2 pooling layer (``Identity`` for ``none``)."""
    if pooling == "avgpooling":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if pooling == "maxpooling":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if pooling == "none":
        return nn.Identity()
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")


def conv_out(size: int, kernel: int, padding: int, stride: int = 1) -> int:
    """Spatial output size of a convolution or pooling along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def fit_padding(size: int, kernel: int, padding: int) -> int:
    """``padding``, raised to "same" padding when the input is smaller than the kernel would allow.

    Only ever changes anything for tiny inputs (8x8 digits), where the reference layer would fail.
    """
    if conv_out(size, kernel, padding) < 1:
        return max(padding, (kernel - 1) // 2)
    return padding


def can_pool(height: int, width: int) -> bool:
    """Whether a 2x2/stride-2 pooling still fits (skipped on 1-pixel maps of tiny inputs)."""
    return height >= 2 and width >= 2
