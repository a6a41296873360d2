"""Classification heads.

Every head pools with a window fixed by the training geometry (NUM_FRAMES and
TRAIN_CROP_SIZE), so a larger test input leaves several positions. The classifier is
applied at each position; in eval mode each position's scores go through the head
activation (softmax) and are then averaged, so eval returns probabilities.
"""
from typing import Sequence

import torch
import torch.nn as nn

from vov3d.config.errors import ConfigError
from vov3d.models.stems import BN_EPS, BN_MOMENTUM

HEAD_ACTIVATIONS = ("softmax", "sigmoid")


def make_head_activation(name: str) -> nn.Module:
    if name == "softmax":
        return nn.Softmax(dim=4)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ConfigError(f"MODEL.HEAD_ACT is {name!r}; expected one of {list(HEAD_ACTIVATIONS)}.")


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


class X3DHead(nn.Module):
    """X3D/VoV3D head: 1x1x1 conv + BN + ReLU, average pool over the training window,
    1x1x1 conv to `dim_out` (+ BN if `bn_lin5_on`) + ReLU, dropout, linear classifier.

    `conv_5_bn` is always a plain BatchNorm3d (the reference builds the head without the
    configured norm module; the engine converts BNs for synchronised training).
    """

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, num_classes: int,
                 pool_size: Sequence[int], dropout_rate: float = 0.0, act_func: str = "softmax",
                 bn_lin5_on: bool = False):
        super().__init__()
        self.pool_size = list(pool_size)
        self.conv_5 = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.conv_5_bn = nn.BatchNorm3d(dim_inner, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv_5_relu = nn.ReLU(inplace=True)
        self.avg_pool = nn.AvgPool3d(self.pool_size, stride=1)
        self.lin_5 = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        if bn_lin5_on:
            self.lin_5_bn = nn.BatchNorm3d(dim_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.lin_5_relu = nn.ReLU(inplace=True)
        if dropout_rate > 0.0:
            self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(dim_out, num_classes, bias=True)
        self.act = make_head_activation(act_func)

    def forward(self, inputs) -> torch.Tensor:
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        if any(have < need for have, need in zip(x.shape[2:], self.pool_size)):
            raise ValueError(
                f"the final feature map {tuple(x.shape[2:])} (T, H, W) is smaller than the head's "
                f"pooling window {tuple(self.pool_size)}, which is fixed by DATA.NUM_FRAMES and "
                "DATA.TRAIN_CROP_SIZE: the input clip is shorter or smaller than the training clip.")
        x = self.conv_5_relu(self.conv_5_bn(self.conv_5(x)))
        x = self.lin_5(self.avg_pool(x))
        if hasattr(self, "lin_5_bn"):
            x = self.lin_5_bn(x)
        x = self.lin_5_relu(x)
        return classify_positions(x, self.projection, getattr(self, "dropout", None), self.act,
                                  self.training)


def x3d_head(cfg, dim_in: int, dim_inner: int, spatial_stride: int) -> X3DHead:
    """The X3D head of X3D and VoV3D from the config. Its keys are X3D's for both (VoV3D's
    reference reads them too), so reference command lines such as `X3D.DIM_C5 1024` build
    the same head; the pooling window is one training clip's final map."""
    return X3DHead(dim_in=dim_in, dim_inner=dim_inner, dim_out=cfg.X3D.DIM_C5,
                   num_classes=cfg.MODEL.NUM_CLASSES,
                   pool_size=head_pool_size(cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE,
                                            spatial_stride=spatial_stride),
                   dropout_rate=cfg.MODEL.DROPOUT_RATE, act_func=cfg.MODEL.HEAD_ACT,
                   bn_lin5_on=cfg.X3D.BN_LIN5)


def use_adaptive_pooling(model: nn.Module) -> nn.Module:
    """Make every head average over the whole final map, whatever the clip shape (multigrid
    training changes frames and crop from stage to stage). Pools hold no parameters: the
    state dict is unchanged, and a model built afterwards for the base shape pools the same
    window over the base shape's map."""
    for module in model.modules():
        if isinstance(module, X3DHead):
            module.avg_pool = nn.AdaptiveAvgPool3d(1)
            module.pool_size = [1, 1, 1]
        elif isinstance(module, BasicHead):
            module.pathway0_avgpool = nn.AdaptiveAvgPool3d(1)
    return model
