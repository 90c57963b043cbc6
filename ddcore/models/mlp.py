"""DC-style MLP: flatten → Linear(C·H·W, 128) → ReLU → Linear(128, 128) → ReLU → Linear(128, K).

Faithful to ``MLP`` of VICO-UoE/DatasetCondensation ``networks.py``, except that the input size is the
dataset's ``C·H·W`` (the reference hard-codes 28·28 for 1 channel and 32·32·3 otherwise).

An MLP has no spatial features: ``embedding`` is the 128-d output of the second hidden layer (the input of the
classifier, as for the conv nets) and ``feature_map`` is the same tensor viewed as ``[N, 128, 1, 1]``.
"""

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ddcore.components import Backbone, BackboneOutput
from ddcore.config import option, positive
from ddcore.types import DatasetInfo

__all__ = ["build_mlp", "MLP", "MLPConfig"]


@attrs.define(frozen=True, kw_only=True)
class MLPConfig:
    """Options of the DC MLP."""

    hidden: int = option(128, "Width of both hidden layers.", validator=positive)


class MLP(Backbone):
    """DC MLP with two ReLU hidden layers."""

    def __init__(self, *, channels: int, height: int, width: int, num_classes: int, hidden: int = 128):
        super().__init__()
        self.fc_1 = nn.Linear(channels * height * width, hidden)
        self.fc_2 = nn.Linear(hidden, hidden)
        self.fc_3 = nn.Linear(hidden, num_classes)
        self.feature_shape = (hidden, 1, 1)
        self.embed_dim = hidden

    def forward_all(self, x: torch.Tensor) -> BackboneOutput:
        emb = F.relu(self.fc_2(F.relu(self.fc_1(x.flatten(1)))))
        return BackboneOutput(embedding=emb, feature_map=emb[:, :, None, None], logits=self.fc_3(emb))


def build_mlp(config: MLPConfig, *, info: DatasetInfo, num_classes: int) -> MLP:
    """DC MLP (two hidden ReLU layers of 128 units)."""
    return MLP(channels=info.channels, height=info.height, width=info.width, num_classes=num_classes,
               hidden=config.hidden)
