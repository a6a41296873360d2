"""Stems: the first layers of a network, applied to the raw clip."""
from typing import Sequence, Union

import torch
import torch.nn as nn

from vov3d.config.errors import ConfigError
from vov3d.models.operators import ChannelwiseConv3d

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def single_pathway_input(inputs: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
    """The clip of a single-pathway model, given as a tensor or a one-element list.

    The caller's list is never modified (the reference overwrote `inputs[0]` in place).
    """
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 1:
            raise ValueError(f"a single-pathway model takes one clip, got a list of {len(inputs)}.")
        inputs = inputs[0]
    if not torch.is_tensor(inputs) or inputs.dim() != 5:
        shape = tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs).__name__
        raise ValueError(f"expected a clip tensor of shape (N, C, T, H, W), got {shape}.")
    return inputs


class X3DStem(nn.Module):
    """X3D stem: 1x3x3 spatial conv (stride 2), depthwise 5x1x1 temporal conv, BN, ReLU.

    No max-pool and no temporal stride; used by X3D and VoV3D.
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv_xy = nn.Conv3d(dim_in, dim_out, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1),
                                 bias=False)
        self.conv = ChannelwiseConv3d(dim_out, (5, 1, 1), padding=(2, 0, 0))
        self.bn = nn.BatchNorm3d(dim_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.conv_xy(x))))


class VideoModelStem(nn.Module):
    """Stage `s1` of a single-pathway model: holds the stem as `pathway0_stem`
    (the PySlowFast state-dict layout) and accepts a tensor or a one-element list."""

    def __init__(self, stem: nn.Module):
        super().__init__()
        self.pathway0_stem = stem

    def forward(self, inputs) -> torch.Tensor:
        return self.pathway0_stem(single_pathway_input(inputs))


def single_pathway_dim_in(cfg, model_name: str) -> int:
    """Input channels of a single-pathway model (DATA.INPUT_CHANNEL_NUM has one entry)."""
    channels = list(cfg.DATA.INPUT_CHANNEL_NUM)
    if len(channels) != 1:
        raise ConfigError(f"DATA.INPUT_CHANNEL_NUM is {channels}: {model_name} has one pathway, "
                          "so it needs exactly one entry (e.g. [3]).")
    return channels[0]
