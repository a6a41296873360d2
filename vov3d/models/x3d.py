"""X3D (Feichtenhofer, CVPR 2020), state-dict compatible with PySlowFast's X3D.

Layout: `s1` (X3D stem), `s2`..`s5` (ResStage of ResBlocks whose `branch2` is an
X3DBottleneck), `head` (X3DHead). Widths and depths follow X3D's expansion rules from
the X3D.* keys; every stage halves H and W in its first block; T is never strided.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn

from vov3d.config.errors import ConfigError
from vov3d.models.heads import x3d_head
from vov3d.models.network import StagedNetwork
from vov3d.models.operators import SE, ChannelwiseConv3d, Swish, round_width
from vov3d.models.registry import MODEL_REGISTRY
from vov3d.models.resblock import ResStage, StageSpec, build_res_stage, stage_drop_connect_rate
from vov3d.models.stems import BN_EPS, BN_MOMENTUM, X3DStem, single_pathway_dim_in
from vov3d.models.weight_init import mark_final_bn

SE_RATIO = 0.0625
BLOCK_TEMPORAL_KERNEL = 3
TRANS_FUNC = "x3d_transform"
# Blocks per stage before DEPTH_FACTOR, and the stage-wise doubling of the base width.
_BASE_DEPTHS = (1, 2, 5, 3)
_STAGE_EXPANSION = 2.0
_STAGE_STRIDE = (1, 2, 2)


@dataclass(frozen=True)
class X3DStageSpec(StageSpec):
    dim_inner: int
    dilation: int
    groups: int


def round_repeats(repeats: int, multiplier: float) -> int:
    """Blocks of a stage scaled by the depth factor (rounded up)."""
    if not multiplier:
        return repeats
    return int(math.ceil(multiplier * repeats))


def x3d_stage_specs(cfg) -> Tuple[int, List[X3DStageSpec]]:
    """(stem width, per-stage specs) from the X3D.* / RESNET.* / MODEL.* keys."""
    if cfg.RESNET.TRANS_FUNC != TRANS_FUNC:
        raise ConfigError(f"RESNET.TRANS_FUNC is {cfg.RESNET.TRANS_FUNC!r}; X3D is built from "
                          f"{TRANS_FUNC!r} blocks.")
    x = cfg.X3D
    stem_dim = round_width(x.DIM_C1, x.WIDTH_FACTOR)
    base = round_width(x.DIM_C1, _STAGE_EXPANSION) if x.SCALE_RES2 else x.DIM_C1
    dim_in = stem_dim
    specs = []
    for stage, base_depth in enumerate(_BASE_DEPTHS):
        if stage > 0:
            base = round_width(base, _STAGE_EXPANSION)
        dim_out = round_width(base, x.WIDTH_FACTOR)
        dim_inner = int(x.BOTTLENECK_FACTOR * dim_out)
        groups = dim_inner if x.CHANNELWISE_3x3x3 else cfg.RESNET.NUM_GROUPS
        if dim_inner % groups:
            raise ConfigError(f"RESNET.NUM_GROUPS is {groups}; it must divide the stage-{stage + 2} "
                              f"inner width {dim_inner} when X3D.CHANNELWISE_3x3x3 is False.")
        specs.append(X3DStageSpec(
            depth=round_repeats(base_depth, x.DEPTH_FACTOR), dim_in=dim_in, dim_out=dim_out,
            stride=_STAGE_STRIDE,
            drop_connect_rate=stage_drop_connect_rate(cfg.MODEL.DROPCONNECT_RATE, stage,
                                                      len(_BASE_DEPTHS)),
            dim_inner=dim_inner, dilation=_stage_dilation(cfg, stage), groups=groups))
        dim_in = dim_out
    return stem_dim, specs


def _stage_dilation(cfg, stage: int) -> int:
    dilations = cfg.RESNET.SPATIAL_DILATIONS
    if len(dilations) != 4 or not all(len(d) >= 1 and int(d[0]) >= 1 for d in dilations):
        raise ConfigError(f"RESNET.SPATIAL_DILATIONS is {dilations}; expected one positive "
                          "dilation per stage, e.g. [[1], [1], [1], [1]].")
    return int(dilations[stage][0])


class X3DBottleneck(nn.Module):
    """X3D block transform: 1x1x1 conv, channelwise 3x3x3 conv, optional SE, Swish, 1x1x1 conv.

    a -> a_bn -> ReLU -> b -> b_bn -> [se] -> Swish -> c -> c_bn (c_bn is the final BN).
    The spatial stride sits on `b` (or on `a` with `stride_1x1`).
    """

    def __init__(self, dim_in: int, dim_out: int, dim_inner: int, spatial_stride: int = 1,
                 use_se: bool = True, groups: int = None, dilation: int = 1,
                 stride_1x1: bool = False):
        super().__init__()
        groups = dim_inner if groups is None else groups
        s_a, s_b = (spatial_stride, 1) if stride_1x1 else (1, spatial_stride)
        self.a = nn.Conv3d(dim_in, dim_inner, 1, stride=(1, s_a, s_a), bias=False)
        self.a_bn = nn.BatchNorm3d(dim_inner, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.a_relu = nn.ReLU(inplace=True)
        b_args = dict(kernel_size=(BLOCK_TEMPORAL_KERNEL, 3, 3), stride=(1, s_b, s_b),
                      padding=(BLOCK_TEMPORAL_KERNEL // 2, dilation, dilation),
                      dilation=(1, dilation, dilation))
        self.b = (ChannelwiseConv3d(dim_inner, **b_args) if groups == dim_inner else
                  nn.Conv3d(dim_inner, dim_inner, groups=groups, bias=False, **b_args))
        self.b_bn = nn.BatchNorm3d(dim_inner, eps=BN_EPS, momentum=BN_MOMENTUM)
        if use_se:
            self.se = SE(dim_inner, SE_RATIO)
        self.b_relu = Swish()
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = mark_final_bn(nn.BatchNorm3d(dim_out, eps=BN_EPS, momentum=BN_MOMENTUM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_bn(self.b(x))
        if hasattr(self, "se"):
            x = self.se(x)
        x = self.b_relu(x)
        return self.c_bn(self.c(x))


def build_x3d_stage(spec: X3DStageSpec, stride_1x1: bool = False,
                    inplace_relu: bool = True) -> ResStage:
    """One stage; SE sits on the even block indices, only block 0 is strided."""
    def bottleneck(i: int, dim_in: int, stride) -> X3DBottleneck:
        return X3DBottleneck(dim_in, spec.dim_out, spec.dim_inner, stride[1], use_se=(i % 2 == 0),
                             groups=spec.groups, dilation=spec.dilation, stride_1x1=stride_1x1)
    return build_res_stage(spec, bottleneck, inplace_relu)


def x3d_outline(cfg, name: str, stage_specs: Callable, build_stage: Callable[[StageSpec], ResStage]) -> Dict:
    """Stem, stages and head of a network with X3D's outline (VoV3D has it too): X3D's stem,
    the family's stages from its specs, and X3D's head after their total spatial stride."""
    dim_in = single_pathway_dim_in(cfg, name)
    stem_dim, specs = stage_specs(cfg)
    spatial_stride = 2 * math.prod(spec.stride[1] for spec in specs)
    return dict(stem=X3DStem(dim_in, stem_dim), stages=[build_stage(spec) for spec in specs],
                head=x3d_head(cfg, specs[-1].dim_out, specs[-1].dim_inner, spatial_stride))


@MODEL_REGISTRY.register()
class X3D(StagedNetwork):
    """X3D network built from the config (see StagedNetwork for forward and normalisation)."""

    def __init__(self, cfg):
        super().__init__(cfg, **x3d_outline(
            cfg, "X3D", x3d_stage_specs,
            lambda spec: build_x3d_stage(spec, cfg.RESNET.STRIDE_1X1, cfg.RESNET.INPLACE_RELU)))
