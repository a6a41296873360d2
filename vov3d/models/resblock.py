"""Residual block wrapper and stage container shared by X3D, VoV3D and friends.

A block computes ReLU(shortcut(x) + branch2(x)); the shortcut is a strided 1x1x1
projection (`branch1` + `branch1_bn`) when the width or the resolution changes, else the
identity. `branch2` is the family's transform (X3D bottleneck, T-OSA module, ...).
"""
from typing import Iterable

import torch
import torch.nn as nn

from vov3d.models.stems import BN_EPS, BN_MOMENTUM


def drop_path(x: torch.Tensor, drop_rate: float) -> torch.Tensor:
    """Drop the whole residual branch per sample with probability `drop_rate`, rescaling
    the kept ones (PySlowFast's drop-connect)."""
    keep = 1.0 - drop_rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x / keep * mask


def stage_drop_connect_rate(rate: float, stage: int, num_stages: int = 4) -> float:
    """Drop-connect rate of stage `stage` (0 = res2): deeper stages drop more, reaching
    `rate` * (num_stages + 1) / (num_stages + 1) at the last one (PySlowFast's X3D rule)."""
    return rate * (stage + 2) / (num_stages + 1)


class ResBlock(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, spatial_stride: int, branch2: nn.Module,
                 drop_connect_rate: float = 0.0, inplace_relu: bool = True):
        super().__init__()
        # branch1 is registered before branch2: the state-dict order of the checkpoints.
        if dim_in != dim_out or spatial_stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=(1, spatial_stride, spatial_stride),
                                     bias=False)
            self.branch1_bn = nn.BatchNorm3d(dim_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.branch2 = branch2
        self.relu = nn.ReLU(inplace=inplace_relu)
        self.drop_connect_rate = drop_connect_rate

    @property
    def has_projection(self) -> bool:
        return hasattr(self, "branch1")

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch1_bn(self.branch1(x)) if self.has_projection else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f_x = self.branch2(x)
        if self.training and self.drop_connect_rate > 0.0:
            f_x = drop_path(f_x, self.drop_connect_rate)
        return self.relu(self.shortcut(x) + f_x)


class ResStage(nn.Module):
    """A stage (`s2` ... `s5`): blocks named `pathway0_res{i}`, applied in order."""

    def __init__(self, blocks: Iterable[nn.Module]):
        super().__init__()
        for i, block in enumerate(blocks):
            self.add_module(f"pathway0_res{i}", block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x
