"""SEVNet: simple and efficient video networks (Wang and Yang, "An Efficient 3D
Convolutional Neural Network with Channel-wise, Spatial-grouped, and Temporal
Convolutions").

A SEV module is a residual branch of three convs, each followed by BN and ReLU:
1x1x1 (channel mixing), grouped 1x3x3 with G channels per group, dense 3x1x1. The first
module of each stage halves H and W by striding the grouped conv and doubles the width
ShuffleNet-style, by concatenating an average-pool + 1x1x1 shortcut to the branch.
T is never reduced. No official code exists; the choices the paper leaves open are
config keys (group SEVNET) whose defaults reproduce its parameter and FLOP figures.
"""
from collections import OrderedDict
from typing import Tuple

import torch
import torch.nn as nn

from vov3d.models.heads import BasicHead, head_pool_size
from vov3d.models.operators import SE
from vov3d.models.registry import MODEL_REGISTRY
from vov3d.models.stems import StagedNetwork
from vov3d.models.weight_init import init_weights, mark_final_bn

BLOCK_TYPES = ("sev", "r2plus1d", "r3d")
CONCAT_ORDERS = ("shortcut_main", "main_shortcut")
# Stem width is 4G; every stage doubles it (8G, 16G, 32G, 64G).
STEM_WIDTH_IN_GROUPS = 4
DOWNSAMPLE_STRIDE = (1, 2, 2)


def _conv(dim_in: int, dim_out: int, kernel: Tuple[int, int, int],
          stride: Tuple[int, int, int] = (1, 1, 1), groups: int = 1) -> nn.Conv3d:
    """Bias-free conv with 'same' padding (zeros) on every axis."""
    return nn.Conv3d(dim_in, dim_out, kernel, stride=stride, padding=tuple(k // 2 for k in kernel),
                     groups=groups, bias=False)


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


class SEVBranch(nn.Module):
    """The residual branch a -> b -> c (-> SE) at width C; every conv is followed by BN and ReLU.

    `sev`: 1x1x1 C->C, 1x3x3 grouped (C/G groups of G channels), 3x1x1 dense.
    `r2plus1d` (ablation): 1x1x1 C->M, 1x3x3 M->M, 3x1x1 M->C, M = C / R2PLUS1D_RATIO.
    `r3d` (ablation): 1x1x1 C->M, 3x3x3 M->M, 1x1x1 M->C, M = C / R3D_RATIO.
    The spatial conv `b` carries the downsampling stride. SE gates the branch output.
    """

    def __init__(self, dim: int, block: str, group_width: int, stride: Tuple[int, int, int],
                 r2plus1d_ratio: float, r3d_ratio: float, se_reduction: int):
        super().__init__()
        kernels = ((1, 1, 1), (1, 3, 3), (3, 1, 1))
        if block == "sev":
            if dim % group_width:
                raise ValueError(f"SEVNet width {dim} is not a multiple of SEVNET.GROUP_WIDTH "
                                 f"({group_width}).")
            inner, groups = dim, dim // group_width
        elif block == "r2plus1d":
            inner, groups = _round_half_up(dim / r2plus1d_ratio), 1
        else:
            inner, groups = _round_half_up(dim / r3d_ratio), 1
            kernels = ((1, 1, 1), (3, 3, 3), (1, 1, 1))
        self.a = _conv(dim, inner, kernels[0])
        self.a_bn = nn.BatchNorm3d(inner)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = _conv(inner, inner, kernels[1], stride, groups)
        self.b_bn = nn.BatchNorm3d(inner)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = _conv(inner, dim, kernels[2])
        self.c_bn = mark_final_bn(nn.BatchNorm3d(dim))
        self.c_relu = nn.ReLU(inplace=True)
        if se_reduction:
            # Exactly C / reduction channels: no rounding to a multiple of 8 (unlike X3D).
            self.se = SE(dim, 1.0 / se_reduction, divisor=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        x = self.c_relu(self.c_bn(self.c(x)))
        if hasattr(self, "se"):
            x = self.se(x)
        return x


class SEVModule(nn.Module):
    """Standard module, width C -> C: x + branch2(x) (optionally followed by a ReLU)."""

    def __init__(self, branch: SEVBranch, post_add_relu: bool):
        super().__init__()
        self.branch2 = branch
        if post_add_relu:
            self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.branch2(x)
        return self.relu(x) if hasattr(self, "relu") else x


class SEVDownsampleModule(nn.Module):
    """Downsample module, width C -> 2C, H and W halved: the strided branch concatenated with
    a shortcut that pools first (average, stride (1,2,2)) and then mixes channels (1x1x1)."""

    def __init__(self, dim: int, branch: SEVBranch, pool_kernel: int, shortcut_bn: bool,
                 shortcut_act: bool, shortcut_first: bool):
        super().__init__()
        pad = (pool_kernel - 1) // 2
        self.branch1_pool = nn.AvgPool3d((1, pool_kernel, pool_kernel), stride=DOWNSAMPLE_STRIDE,
                                         padding=(0, pad, pad))
        self.branch1 = nn.Conv3d(dim, dim, 1, bias=False)
        if shortcut_bn:
            self.branch1_bn = nn.BatchNorm3d(dim)
        if shortcut_act:
            self.branch1_relu = nn.ReLU(inplace=True)
        self.branch2 = branch
        self.shortcut_first = shortcut_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.branch1(self.branch1_pool(x))
        if hasattr(self, "branch1_bn"):
            shortcut = self.branch1_bn(shortcut)
        if hasattr(self, "branch1_relu"):
            shortcut = self.branch1_relu(shortcut)
        main = self.branch2(x)
        return torch.cat([shortcut, main] if self.shortcut_first else [main, shortcut], dim=1)


class SEVStem(nn.Module):
    """conv 1x7x7 stride (1,2,2) -> BN -> ReLU -> dense conv 3x1x1 -> BN -> ReLU; no max-pool."""

    def __init__(self, dim_out: int):
        super().__init__()
        self.conv_xy = _conv(3, dim_out, (1, 7, 7), DOWNSAMPLE_STRIDE)
        self.bn_xy = nn.BatchNorm3d(dim_out)
        self.relu_xy = nn.ReLU(inplace=True)
        self.conv = _conv(dim_out, dim_out, (3, 1, 1))
        self.bn = nn.BatchNorm3d(dim_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_xy(self.bn_xy(self.conv_xy(x)))
        return self.relu(self.bn(self.conv(x)))


def _check_config(cfg) -> None:
    sev = cfg.SEVNET

    def require(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ValueError(f"SEVNET.{key} must be {expected}, got {sev[key]!r}.")

    require(sev.GROUP_WIDTH >= 1, "GROUP_WIDTH", "a positive number of channels per group")
    require(len(sev.DEPTHS) == 4 and all(d >= 1 for d in sev.DEPTHS), "DEPTHS",
            "four stage depths >= 1 (e.g. [3, 4, 6, 3])")
    require(sev.BLOCK in BLOCK_TYPES, "BLOCK", "one of " + ", ".join(map(repr, BLOCK_TYPES)))
    require(sev.R2PLUS1D_RATIO > 0, "R2PLUS1D_RATIO", "> 0")
    require(sev.R3D_RATIO > 0, "R3D_RATIO", "> 0")
    require(not sev.SE or sev.SE_REDUCTION >= 1, "SE_REDUCTION", ">= 1 when SEVNET.SE is True")
    require(sev.SHORTCUT_POOL_KERNEL in (2, 3), "SHORTCUT_POOL_KERNEL", "2 or 3")
    require(sev.CONCAT_ORDER in CONCAT_ORDERS, "CONCAT_ORDER",
            "one of " + ", ".join(map(repr, CONCAT_ORDERS)))
    require(not sev.SHORTCUT_ACT or sev.SHORTCUT_BN, "SHORTCUT_ACT",
            "False when SEVNET.SHORTCUT_BN is False (the ReLU follows the BN)")


@MODEL_REGISTRY.register()
class SEVNet(StagedNetwork):
    """SEVNet-G{SEVNET.GROUP_WIDTH}; input (N, 3, T, H, W) or [that tensor]."""

    def __init__(self, cfg):
        super().__init__()
        sev = cfg.SEVNET
        _check_config(cfg)

        dim = STEM_WIDTH_IN_GROUPS * sev.GROUP_WIDTH
        self.s1 = nn.Sequential(OrderedDict(pathway0_stem=SEVStem(dim)))
        for n, depth in enumerate(sev.DEPTHS, start=2):
            modules = OrderedDict()
            for i in range(depth):
                stride = DOWNSAMPLE_STRIDE if i == 0 else (1, 1, 1)
                branch = SEVBranch(dim, sev.BLOCK, sev.GROUP_WIDTH, stride, sev.R2PLUS1D_RATIO,
                                   sev.R3D_RATIO, sev.SE_REDUCTION if sev.SE else 0)
                if i == 0:
                    modules[f"pathway0_res{i}"] = SEVDownsampleModule(
                        dim, branch, sev.SHORTCUT_POOL_KERNEL, sev.SHORTCUT_BN, sev.SHORTCUT_ACT,
                        sev.CONCAT_ORDER == "shortcut_main")
                    dim *= 2
                else:
                    modules[f"pathway0_res{i}"] = SEVModule(branch, sev.POST_ADD_RELU)
            self.add_module(f"s{n}", nn.Sequential(modules))

        # T is never reduced, so the head window spans all NUM_FRAMES frames.
        self.head = BasicHead(dim, cfg.MODEL.NUM_CLASSES,
                              head_pool_size(cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE),
                              cfg.MODEL.DROPOUT_RATE, cfg.MODEL.HEAD_ACT)
        init_weights(self, cfg.MODEL.FC_INIT_STD, cfg.RESNET.ZERO_INIT_FINAL_BN)
