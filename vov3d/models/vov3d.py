"""VoV3D (Lee et al., "Diverse Temporal Aggregation and Depthwise Spatiotemporal
Factorization for Efficient Video Classification"), state-dict compatible with the
reference checkpoints.

Layout: `s1` (X3D stem, width c/2), `s2`..`s5` (ResStage of ResBlocks whose `branch2` is
a T-OSA module), `head` (X3DHead whose inner width is the stage-5 inner width 8c).
A T-OSA module chains NUM_CONV D(2+1)D units and aggregates the block input (stride-1
blocks only) and every unit's output with one 1x1x1 conv.
"""
from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn as nn

from vov3d.config.errors import ConfigError
from vov3d.models.network import StagedNetwork
from vov3d.models.operators import SE, ChannelwiseConv3d, Swish
from vov3d.models.registry import MODEL_REGISTRY
from vov3d.models.resblock import ResStage, StageSpec, build_res_stage, stage_drop_connect_rate
from vov3d.models.stems import BN_EPS, BN_MOMENTUM
from vov3d.models.weight_init import mark_final_bn
from vov3d.models.x3d import x3d_outline

SE_RATIO = 0.0625
TRANS_FUNC = "t_osa_2plus1_transform"
# Blocks per stage (s2..s5) for VOV3D.DEPTH; 31 is the current VoV3D-M (the first release
# used (1, 1, 2, 2), selected with VOV3D.STAGE_DEPTHS).
STAGE_DEPTHS = {31: (1, 2, 3, 2), 70: (1, 2, 5, 3)}


class D2Plus1DUnit(nn.Module):
    """Depthwise (2+1)D bottleneck: 1x1x1 conv -> BN -> ReLU -> depthwise 1x3x3 (strided)
    -> depthwise 3x1x1 -> BN -> [SE] -> Swish -> 1x1x1 conv to dim_inner/2 -> BN
    -> [+ input] -> ReLU.

    The input is added back whenever the widths agree and the unit is not strided.
    """

    def __init__(self, dim_in: int, dim_inner: int, spatial_stride: int = 1, use_se: bool = True,
                 temporal_dilation: int = 1):
        super().__init__()
        dim_out = dim_inner // 2
        self.residual = dim_in == dim_out and spatial_stride == 1
        self.a = nn.Sequential(
            nn.Conv3d(dim_in, dim_inner, 1, bias=False),
            nn.BatchNorm3d(dim_inner, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        self.b1 = ChannelwiseConv3d(dim_inner, (1, 3, 3), stride=(1, spatial_stride, spatial_stride),
                                    padding=(0, 1, 1))
        self.b2 = ChannelwiseConv3d(dim_inner, (3, 1, 1), padding=(temporal_dilation, 0, 0),
                                    dilation=(temporal_dilation, 1, 1))
        self.b_bn = nn.BatchNorm3d(dim_inner, eps=BN_EPS, momentum=BN_MOMENTUM)
        if use_se:
            self.se = SE(dim_inner, SE_RATIO)
        self.b_relu = Swish()
        self.c = nn.Sequential(
            nn.Conv3d(dim_inner, dim_out, 1, bias=False),
            nn.BatchNorm3d(dim_out, eps=BN_EPS, momentum=BN_MOMENTUM),
        )
        self.c_relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.b_bn(self.b2(self.b1(self.a(x))))
        if hasattr(self, "se"):
            out = self.se(out)
        out = self.c(self.b_relu(out))
        if self.residual:
            out = out + x
        return self.c_relu(out)


class TOSAModule(nn.Module):
    """Temporal one-shot aggregation: NUM_CONV chained D(2+1)D units (`layers`), SE on the
    even unit indices; their outputs, preceded by the block input when the block is not
    strided, are concatenated on channels and aggregated by `c` + `c_bn` (the final BN)."""

    def __init__(self, dim_in: int, dim_out: int, dim_inner: int, spatial_stride: int,
                 num_conv: int, temporal_dilation: int = 1):
        super().__init__()
        self.include_input = spatial_stride == 1
        unit_out = dim_inner // 2
        self.layers = nn.ModuleList(
            D2Plus1DUnit(dim_in if j == 0 else unit_out, dim_inner,
                         spatial_stride if j == 0 else 1, use_se=(j % 2 == 0),
                         temporal_dilation=temporal_dilation)
            for j in range(num_conv))
        concat_width = num_conv * unit_out + (dim_in if self.include_input else 0)
        self.c = nn.Conv3d(concat_width, dim_out, 1, bias=False)
        self.c_bn = mark_final_bn(nn.BatchNorm3d(dim_out, eps=BN_EPS, momentum=BN_MOMENTUM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x] if self.include_input else []
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        return self.c_bn(self.c(torch.cat(outputs, dim=1)))


@dataclass(frozen=True)
class VoV3DStageSpec(StageSpec):
    dim_inner: int
    num_conv: int
    temporal_dilation: int


def vov3d_stage_depths(cfg) -> List[int]:
    explicit = list(cfg.VOV3D.STAGE_DEPTHS)
    if explicit:
        if len(explicit) != 4 or not all(isinstance(d, int) and d >= 1 for d in explicit):
            raise ConfigError(f"VOV3D.STAGE_DEPTHS is {explicit}; expected four positive block "
                              "counts (s2..s5), e.g. [1, 1, 2, 2], or [] to use VOV3D.DEPTH.")
        return explicit
    if cfg.VOV3D.DEPTH not in STAGE_DEPTHS:
        raise ConfigError(f"VOV3D.DEPTH is {cfg.VOV3D.DEPTH}; expected 31 (VoV3D-M) or 70 (VoV3D-L), "
                          "or set VOV3D.STAGE_DEPTHS to four block counts.")
    return list(STAGE_DEPTHS[cfg.VOV3D.DEPTH])


def _per_stage(cfg, key: str, allowed, expected: str) -> List[int]:
    values = cfg.VOV3D[key]
    if len(values) != 4 or not all(len(v) >= 1 and v[0] in allowed for v in values):
        raise ConfigError(f"VOV3D.{key} is {values}; expected one value per stage, {expected}.")
    return [int(v[0]) for v in values]


def vov3d_stage_specs(cfg) -> Tuple[int, List[VoV3DStageSpec]]:
    """(stem width, per-stage specs) from the VOV3D.* / MODEL.* keys; stage n has inner
    width INNER_CH * INNER_MULTIPLIER[n] and output width INNER_CH * OUT_MULTIPLIER[n]."""
    v = cfg.VOV3D
    if v.TRANS_FUNC != TRANS_FUNC:
        raise ConfigError(f"VOV3D.TRANS_FUNC is {v.TRANS_FUNC!r}; the only VoV3D block is "
                          f"{TRANS_FUNC!r}.")
    if v.NUM_CONV < 1:
        raise ConfigError(f"VOV3D.NUM_CONV is {v.NUM_CONV}; expected >= 1 D(2+1)D units.")
    for key in ("INNER_MULTIPLIER", "OUT_MULTIPLIER"):
        if len(v[key]) != 4:
            raise ConfigError(f"VOV3D.{key} is {v[key]}; expected four values (s2..s5).")
    depths = vov3d_stage_depths(cfg)
    strides = _per_stage(cfg, "SPATIAL_STRIDES", (1, 2), "1 or 2, e.g. [[2], [2], [2], [2]]")
    dilations = _per_stage(cfg, "TEMPORAL_DILATIONS", range(1, 1 << 16),
                           "a positive integer, e.g. [[1], [1], [1], [1]]")
    stem_dim = v.INNER_CH // 2
    dim_in = stem_dim
    specs = []
    for stage in range(4):
        dim_out = int(v.INNER_CH * v.OUT_MULTIPLIER[stage])
        specs.append(VoV3DStageSpec(
            depth=depths[stage], dim_in=dim_in, dim_out=dim_out,
            stride=(1, strides[stage], strides[stage]),
            drop_connect_rate=stage_drop_connect_rate(cfg.MODEL.DROPCONNECT_RATE, stage),
            dim_inner=int(v.INNER_CH * v.INNER_MULTIPLIER[stage]), num_conv=v.NUM_CONV,
            temporal_dilation=dilations[stage]))
        dim_in = dim_out
    return stem_dim, specs


def build_vov3d_stage(spec: VoV3DStageSpec, inplace_relu: bool = True) -> ResStage:
    """One stage of T-OSA blocks; only block 0 is strided."""
    def tosa(i: int, dim_in: int, stride) -> TOSAModule:
        return TOSAModule(dim_in, spec.dim_out, spec.dim_inner, stride[1], spec.num_conv,
                          spec.temporal_dilation)
    return build_res_stage(spec, tosa, inplace_relu)


@MODEL_REGISTRY.register()
class VoV3D(StagedNetwork):
    """VoV3D network built from the config (see StagedNetwork for forward and normalisation)."""

    def __init__(self, cfg):
        super().__init__(cfg, **x3d_outline(
            cfg, "VoV3D", vov3d_stage_specs, lambda spec: build_vov3d_stage(spec, cfg.RESNET.INPLACE_RELU)))
