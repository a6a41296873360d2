"""CSN: channel-separated ResNet bottleneck networks (Tran et al., ICCV 2019).

ir-CSN ("interaction-reduced") replaces the 3x3x3 conv of a 3D ResNet bottleneck by a
depthwise one; ip-CSN ("interaction-preserved") puts a 1x1x1 conv in front of it.
Unlike PySlowFast's ResNet builder, the first block of res3-res5 strides by 2 in time
as well as space (32 frames -> 4), on the depthwise conv and on the shortcut.

Module names follow PySlowFast (`s1.pathway0_stem`, `s{2..5}.pathway0_res{i}`,
`head.projection`) so checkpoints of pytorchvideo, mmaction2 and VMZ map onto them by
a fixed renaming (`vov3d.models.csn_convert`).
"""
from collections import OrderedDict
from typing import Tuple

import torch
import torch.nn as nn

from vov3d.models.heads import BasicHead, head_pool_size
from vov3d.models.operators import ChannelwiseConv3d
from vov3d.models.registry import MODEL_REGISTRY
from vov3d.models.stems import StagedNetwork
from vov3d.models.weight_init import init_weights, mark_final_bn

# Bottlenecks per stage (res2..res5) for each depth.
STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BLOCK_TYPES = ("ir", "ip")
STEM_WIDTH = 64
# Inner width of res2; it doubles per stage and the output is 4x the inner width.
RES2_INNER_WIDTH = 64
BOTTLENECK_EXPANSION = 4
# Total temporal downsampling (res3, res4 and res5 each halve T).
TEMPORAL_STRIDE = 8


class CSNStem(nn.Module):
    """conv 3x7x7 stride (1,2,2) -> BN -> ReLU -> max-pool 1x3x3 stride (1,2,2)."""

    def __init__(self, dim_out: int, bn_eps: float):
        super().__init__()
        self.conv = nn.Conv3d(3, dim_out, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(dim_out, eps=bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class CSNBranch(nn.Module):
    """Main branch: 1x1x1 (a), [1x1x1 (b_pw), ip only], depthwise 3x3x3 (b, strided), 1x1x1 (c).

    ip-CSN has no ReLU between `b_pw` and the depthwise conv, as in the VMZ and
    mmaction2 implementations whose weights were trained that way.
    """

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, stride: Tuple[int, int, int],
                 interaction_preserved: bool, bn_eps: float):
        super().__init__()
        self.a = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.a_bn = nn.BatchNorm3d(dim_inner, eps=bn_eps)
        self.a_relu = nn.ReLU(inplace=True)
        if interaction_preserved:
            self.b_pw = nn.Conv3d(dim_inner, dim_inner, 1, bias=False)
            self.b_pw_bn = nn.BatchNorm3d(dim_inner, eps=bn_eps)
        self.b = ChannelwiseConv3d(dim_inner, 3, stride=stride, padding=1)
        self.b_bn = nn.BatchNorm3d(dim_inner, eps=bn_eps)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = mark_final_bn(nn.BatchNorm3d(dim_out, eps=bn_eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        if hasattr(self, "b_pw"):
            x = self.b_pw_bn(self.b_pw(x))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class CSNBottleneck(nn.Module):
    """ReLU(shortcut(x) + branch2(x)); the shortcut is a strided 1x1x1 conv + BN when the
    width or the resolution changes, the identity otherwise."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, stride: Tuple[int, int, int],
                 interaction_preserved: bool, bn_eps: float):
        super().__init__()
        if dim_in != dim_out or tuple(stride) != (1, 1, 1):
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=stride, bias=False)
            self.branch1_bn = nn.BatchNorm3d(dim_out, eps=bn_eps)
        self.branch2 = CSNBranch(dim_in, dim_inner, dim_out, stride, interaction_preserved, bn_eps)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.branch1_bn(self.branch1(x)) if hasattr(self, "branch1") else x
        return self.relu(shortcut + self.branch2(x))


def csn_stage(depth: int, dim_in: int, dim_inner: int, stride: Tuple[int, int, int],
              interaction_preserved: bool, bn_eps: float) -> nn.Sequential:
    """`depth` bottlenecks named `pathway0_res{i}`; only the first one strides."""
    dim_out = BOTTLENECK_EXPANSION * dim_inner
    blocks = OrderedDict()
    for i in range(depth):
        blocks[f"pathway0_res{i}"] = CSNBottleneck(
            dim_in if i == 0 else dim_out, dim_inner, dim_out, stride if i == 0 else (1, 1, 1),
            interaction_preserved, bn_eps)
    return nn.Sequential(blocks)


@MODEL_REGISTRY.register()
class CSN(StagedNetwork):
    """ir-/ip-CSN-{50,101,152} (config group CSN); input (N, 3, T, H, W) or [that tensor]."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.CSN.DEPTH not in STAGE_DEPTHS:
            raise ValueError(f"CSN.DEPTH must be one of {sorted(STAGE_DEPTHS)}, got {cfg.CSN.DEPTH!r}.")
        if cfg.CSN.BLOCK not in BLOCK_TYPES:
            raise ValueError(f"CSN.BLOCK must be 'ir' or 'ip', got {cfg.CSN.BLOCK!r}.")
        eps = cfg.CSN.BN_EPS
        ip = cfg.CSN.BLOCK == "ip"

        self.s1 = nn.Sequential(OrderedDict(pathway0_stem=CSNStem(STEM_WIDTH, eps)))
        dim_in, dim_inner = STEM_WIDTH, RES2_INNER_WIDTH
        for n, depth in enumerate(STAGE_DEPTHS[cfg.CSN.DEPTH], start=2):
            stride = (1, 1, 1) if n == 2 else (2, 2, 2)
            self.add_module(f"s{n}", csn_stage(depth, dim_in, dim_inner, stride, ip, eps))
            dim_in, dim_inner = BOTTLENECK_EXPANSION * dim_inner, 2 * dim_inner

        # T is halved (rounding up) three times, so the window is ceil(T / 8) frames.
        frames = -(-cfg.DATA.NUM_FRAMES // TEMPORAL_STRIDE)
        self.head = BasicHead(dim_in, cfg.MODEL.NUM_CLASSES,
                              head_pool_size(frames, cfg.DATA.TRAIN_CROP_SIZE),
                              cfg.MODEL.DROPOUT_RATE, cfg.MODEL.HEAD_ACT)
        init_weights(self, cfg.MODEL.FC_INIT_STD, cfg.RESNET.ZERO_INIT_FINAL_BN)
