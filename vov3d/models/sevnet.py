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
from typing import List, Tuple

import torch
import torch.nn as nn

from vov3d.config.errors import ConfigError
from vov3d.models.heads import BasicHead, head_pool_size
from vov3d.models.network import StagedNetwork
from vov3d.models.operators import SE
from vov3d.models.registry import MODEL_REGISTRY
from vov3d.models.resblock import NO_STRIDE, ResBlock, ResStage, StageSpec, Stride, refuse_drop_connect
from vov3d.models.weight_init import mark_final_bn

BLOCK_TYPES = ("sev", "r2plus1d", "r3d")
CONCAT_ORDERS = ("shortcut_main", "main_shortcut")
# Stem width is 4G; every stage doubles it (8G, 16G, 32G, 64G).
STEM_WIDTH_IN_GROUPS = 4
DOWNSAMPLE_STRIDE = (1, 2, 2)


def _conv(dim_in: int, dim_out: int, kernel: Tuple[int, int, int], stride: Stride = NO_STRIDE,
          groups: int = 1) -> nn.Conv3d:
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

    def __init__(self, dim: int, block: str, group_width: int, stride: Stride,
                 r2plus1d_ratio: float, r3d_ratio: float, se_reduction: int):
        super().__init__()
        kernels = ((1, 1, 1), (1, 3, 3), (3, 1, 1))
        if block == "sev":
            if dim % group_width:
                raise ConfigError(f"SEVNET.GROUP_WIDTH is {group_width}; expected a divisor of "
                                  f"the SEV branch width {dim}.")
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


def _check_sevnet_keys(sev) -> None:
    if sev.GROUP_WIDTH < 1:
        raise ConfigError(f"SEVNET.GROUP_WIDTH is {sev.GROUP_WIDTH!r}; expected a positive "
                          "number of channels per group.")
    if len(sev.DEPTHS) != 4 or not all(d >= 1 for d in sev.DEPTHS):
        raise ConfigError(f"SEVNET.DEPTHS is {sev.DEPTHS!r}; expected four stage depths >= 1 "
                          "(e.g. [3, 4, 6, 3]).")
    if sev.BLOCK not in BLOCK_TYPES:
        raise ConfigError(f"SEVNET.BLOCK is {sev.BLOCK!r}; expected one of {list(BLOCK_TYPES)}.")
    if sev.R2PLUS1D_RATIO <= 0:
        raise ConfigError(f"SEVNET.R2PLUS1D_RATIO is {sev.R2PLUS1D_RATIO!r}; expected > 0.")
    if sev.R3D_RATIO <= 0:
        raise ConfigError(f"SEVNET.R3D_RATIO is {sev.R3D_RATIO!r}; expected > 0.")
    if sev.SE and sev.SE_REDUCTION < 1:
        raise ConfigError(f"SEVNET.SE_REDUCTION is {sev.SE_REDUCTION!r}; expected >= 1 when "
                          "SEVNET.SE is True.")
    if sev.SHORTCUT_POOL_KERNEL not in (2, 3):
        raise ConfigError(f"SEVNET.SHORTCUT_POOL_KERNEL is {sev.SHORTCUT_POOL_KERNEL!r}; "
                          "expected 2 or 3.")
    if sev.CONCAT_ORDER not in CONCAT_ORDERS:
        raise ConfigError(f"SEVNET.CONCAT_ORDER is {sev.CONCAT_ORDER!r}; expected one of "
                          f"{list(CONCAT_ORDERS)}.")
    if sev.SHORTCUT_ACT and not sev.SHORTCUT_BN:
        raise ConfigError(f"SEVNET.SHORTCUT_ACT is {sev.SHORTCUT_ACT!r}; expected False when "
                          "SEVNET.SHORTCUT_BN is False (the ReLU follows the BN).")


def _crop_fits(crop: int, pool_kernel: int) -> bool:
    """Whether a square crop passes all four downsample modules: each one's average pool
    needs an input at least its kernel wide, and the pooled shortcut and the strided branch
    must come out the same size to be concatenated."""
    size = (crop - 1) // 2 + 1  # after the 1x7x7 stride-2 stem
    pad = (pool_kernel - 1) // 2
    for _ in range(4):
        branch = (size - 1) // 2 + 1
        if size < pool_kernel or (size + 2 * pad - pool_kernel) // 2 + 1 != branch:
            return False
        size = branch
    return True


def _check_crop_sizes(cfg) -> None:
    kernel = cfg.SEVNET.SHORTCUT_POOL_KERNEL
    for key in ("TRAIN_CROP_SIZE", "TEST_CROP_SIZE"):
        crop = cfg.DATA[key]
        if not _crop_fits(crop, kernel):
            usable = next(c for c in range(crop, crop + 64) if _crop_fits(c, kernel))
            raise ConfigError(f"DATA.{key} is {crop}; SEVNet with SEVNET.SHORTCUT_POOL_KERNEL {kernel} cannot "
                              f"downsample it four times (the pooled shortcut must be at least {kernel} px and "
                              f"as large as the strided branch); the next size that works is {usable}.")


def sevnet_stage_specs(cfg) -> Tuple[int, List[StageSpec]]:
    """(stem width, per-stage specs) from the SEVNET.* keys: every stage doubles the width."""
    sev = cfg.SEVNET
    _check_sevnet_keys(sev)
    refuse_drop_connect(cfg, "SEVNet")
    _check_crop_sizes(cfg)
    stem_dim = STEM_WIDTH_IN_GROUPS * sev.GROUP_WIDTH
    dim_in = stem_dim
    specs = []
    for depth in sev.DEPTHS:
        specs.append(StageSpec(depth=depth, dim_in=dim_in, dim_out=2 * dim_in,
                               stride=DOWNSAMPLE_STRIDE, drop_connect_rate=0.0))
        dim_in *= 2
    return stem_dim, specs


def build_sevnet_stage(spec: StageSpec, sev, inplace_relu: bool = True) -> ResStage:
    """A downsample module, then `spec.depth - 1` residual SEV modules (ResBlocks with an
    identity shortcut) at the doubled width."""
    def branch(dim: int, stride: Stride) -> SEVBranch:
        return SEVBranch(dim, sev.BLOCK, sev.GROUP_WIDTH, stride, sev.R2PLUS1D_RATIO,
                         sev.R3D_RATIO, sev.SE_REDUCTION if sev.SE else 0)

    blocks = [SEVDownsampleModule(spec.dim_in, branch(spec.dim_in, spec.stride),
                                  sev.SHORTCUT_POOL_KERNEL, sev.SHORTCUT_BN, sev.SHORTCUT_ACT,
                                  sev.CONCAT_ORDER == "shortcut_main")]
    for _ in range(1, spec.depth):
        blocks.append(ResBlock(spec.dim_out, spec.dim_out, NO_STRIDE, branch(spec.dim_out, NO_STRIDE),
                               inplace_relu=inplace_relu, post_add_relu=sev.POST_ADD_RELU))
    return ResStage(blocks)


@MODEL_REGISTRY.register()
class SEVNet(StagedNetwork):
    """SEVNet-G{SEVNET.GROUP_WIDTH}; input (N, 3, T, H, W) or [that tensor]."""

    def __init__(self, cfg):
        stem_dim, specs = sevnet_stage_specs(cfg)
        super().__init__(
            cfg,
            stem=SEVStem(stem_dim),
            stages=[build_sevnet_stage(spec, cfg.SEVNET, cfg.RESNET.INPLACE_RELU) for spec in specs],
            # T is never reduced, so the head window spans all NUM_FRAMES frames.
            head=BasicHead(specs[-1].dim_out, cfg.MODEL.NUM_CLASSES,
                           head_pool_size(cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE),
                           cfg.MODEL.DROPOUT_RATE, cfg.MODEL.HEAD_ACT))
