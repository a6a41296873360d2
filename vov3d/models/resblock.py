"""Residual blocks and stages shared by X3D, VoV3D, CSN and SEVNet.

A block computes ReLU(shortcut(x) + branch2(x)); the shortcut is a strided 1x1x1
projection (`branch1` + `branch1_bn`) when the width or the resolution changes, else the
identity. `branch2` is the family's transform (X3D bottleneck, T-OSA module, CSN
bottleneck, SEV branch). A stage is `depth` blocks of which only the first changes the
width and strides; `StageSpec` describes one, `build_res_stage` builds it.
"""
from dataclasses import dataclass
from typing import Callable, Iterable, Tuple

import torch
import torch.nn as nn

from vov3d.config.errors import ConfigError
from vov3d.models.stems import BN_EPS, BN_MOMENTUM

# (T, H, W) stride of a block.
Stride = Tuple[int, int, int]
NO_STRIDE: Stride = (1, 1, 1)


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


def refuse_drop_connect(cfg, family: str) -> None:
    """Families trained without drop-connect refuse MODEL.DROPCONNECT_RATE rather than
    ignoring it."""
    if cfg.MODEL.DROPCONNECT_RATE:
        raise ConfigError(f"MODEL.DROPCONNECT_RATE is {cfg.MODEL.DROPCONNECT_RATE!r}; {family} has no "
                          "drop-connect, expected 0.0.")


class ResBlock(nn.Module):
    """ReLU(shortcut(x) + branch2(x)); without `post_add_relu` the sum is returned as is.

    `stride` (T, H, W) is the stride of the projection shortcut; the branch must apply the
    same stride itself.
    """

    def __init__(self, dim_in: int, dim_out: int, stride: Stride, branch2: nn.Module,
                 drop_connect_rate: float = 0.0, inplace_relu: bool = True,
                 bn_eps: float = BN_EPS, post_add_relu: bool = True):
        super().__init__()
        # branch1 is registered before branch2: the state-dict order of the checkpoints.
        if dim_in != dim_out or tuple(stride) != NO_STRIDE:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=tuple(stride), bias=False)
            self.branch1_bn = nn.BatchNorm3d(dim_out, eps=bn_eps, momentum=BN_MOMENTUM)
        self.branch2 = branch2
        if post_add_relu:
            self.relu = nn.ReLU(inplace=inplace_relu)
        self.drop_connect_rate = drop_connect_rate

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch1_bn(self.branch1(x)) if hasattr(self, "branch1") else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f_x = self.branch2(x)
        if self.training and self.drop_connect_rate > 0.0:
            f_x = drop_path(f_x, self.drop_connect_rate)
        out = self.shortcut(x) + f_x
        return self.relu(out) if hasattr(self, "relu") else out


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


@dataclass(frozen=True)
class StageSpec:
    """One stage: `depth` blocks; block 0 maps `dim_in` to `dim_out` with `stride`, the
    others keep `dim_out` at stride 1. Families add the fields their blocks need."""
    depth: int
    dim_in: int
    dim_out: int
    stride: Stride
    drop_connect_rate: float


# make_branch(block index, block input width, block stride) -> the block's branch2.
BranchFactory = Callable[[int, int, Stride], nn.Module]


def build_res_stage(spec: StageSpec, make_branch: BranchFactory, inplace_relu: bool = True,
                    bn_eps: float = BN_EPS) -> ResStage:
    """The stage of `spec`: `spec.depth` ResBlocks around the branches of `make_branch`."""
    blocks = []
    for i in range(spec.depth):
        dim_in = spec.dim_in if i == 0 else spec.dim_out
        stride = spec.stride if i == 0 else NO_STRIDE
        blocks.append(ResBlock(dim_in, spec.dim_out, stride, make_branch(i, dim_in, stride),
                               spec.drop_connect_rate, inplace_relu, bn_eps))
    return ResStage(blocks)
