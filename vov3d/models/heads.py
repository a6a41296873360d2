"""Classification heads.

Every head pools with a window fixed by the training geometry (NUM_FRAMES and
TRAIN_CROP_SIZE), so a larger test input leaves several positions. The classifier is
applied at each position; in eval mode each position's scores go through the head
activation (softmax) and are then averaged, so eval returns probabilities.
"""
from typing import Sequence

import torch
import torch.nn as nn


def make_head_activation(name: str) -> nn.Module:
    if name == "softmax":
        return nn.Softmax(dim=4)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"MODEL.HEAD_ACT must be 'softmax' or 'sigmoid', got {name!r}.")


def classify_positions(x: torch.Tensor, projection: nn.Module, dropout: nn.Module,
                       act: nn.Module, training: bool) -> torch.Tensor:
    """(N, C, T', H', W') features -> (N, K).

    Training returns logits (averaged over positions, of which there is normally one);
    eval returns the mean over positions of the activated scores.
    """
    x = x.permute(0, 2, 3, 4, 1)
    if dropout is not None:
        x = dropout(x)
    x = projection(x)
    if not training:
        x = act(x)
    return x.mean(dim=(1, 2, 3))


def head_pool_size(num_frames: int, crop_size: int, temporal_stride: int = 1,
                   spatial_stride: int = 32) -> Sequence[int]:
    """AvgPool3d window that reduces a training clip's final feature map to one position."""
    return [num_frames // temporal_stride, -(-crop_size // spatial_stride), -(-crop_size // spatial_stride)]


class BasicHead(nn.Module):
    """Average pool over a fixed window, dropout, linear classifier (ResNet-style heads)."""

    def __init__(self, dim_in: int, num_classes: int, pool_size: Sequence[int],
                 dropout_rate: float = 0.0, act_func: str = "softmax"):
        super().__init__()
        self.pathway0_avgpool = nn.AvgPool3d(list(pool_size), stride=1)
        if dropout_rate > 0.0:
            self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(dim_in, num_classes, bias=True)
        self.act = make_head_activation(act_func)

    def forward(self, inputs):
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        x = self.pathway0_avgpool(x)
        return classify_positions(x, self.projection, getattr(self, "dropout", None), self.act,
                                  self.training)
