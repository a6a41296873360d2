"""CSN: channel-separated ResNet bottleneck networks (Tran et al., ICCV 2019).

ir-CSN ("interaction-reduced") replaces the 3x3x3 conv of a 3D ResNet bottleneck by a
depthwise one; ip-CSN ("interaction-preserved") puts a 1x1x1 conv in front of it.
Unlike PySlowFast's ResNet builder, the first block of res3-res5 strides by 2 in time
as well as space (32 frames -> 4), on the depthwise conv and on the shortcut.

Module names follow PySlowFast (`s1.pathway0_stem`, `s{2..5}.pathway0_res{i}`,
`head.projection`) so checkpoints of pytorchvideo, mmaction2 and VMZ map onto them by
a fixed renaming (`vov3d.models.csn_convert`).
"""
from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn as nn

from vov3d.config.errors import ConfigError
from vov3d.models.heads import BasicHead, head_pool_size
from vov3d.models.network import StagedNetwork
from vov3d.models.operators import ChannelwiseConv3d
from vov3d.models.registry import MODEL_REGISTRY
from vov3d.models.resblock import (NO_STRIDE, ResStage, StageSpec, Stride, build_res_stage,
                                   refuse_drop_connect)
from vov3d.models.weight_init import mark_final_bn

# Bottlenecks per stage (res2..res5) for each depth.
STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BLOCK_TYPES = ("ir", "ip")
STEM_WIDTH = 64
# Inner width of res2; it doubles per stage and the output is 4x the inner width.
RES2_INNER_WIDTH = 64
BOTTLENECK_EXPANSION = 4
# The first block of res3, res4 and res5 halves T, H and W.
STAGE_STRIDE = (2, 2, 2)


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

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, stride: Stride,
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


@dataclass(frozen=True)
class CSNStageSpec(StageSpec):
    dim_inner: int
    interaction_preserved: bool
    bn_eps: float


def csn_stage_specs(cfg) -> Tuple[int, List[CSNStageSpec]]:
    """(stem width, per-stage specs) from the CSN.* keys."""
    if cfg.CSN.DEPTH not in STAGE_DEPTHS:
        raise ConfigError(f"CSN.DEPTH is {cfg.CSN.DEPTH!r}; expected one of {sorted(STAGE_DEPTHS)}.")
    if cfg.CSN.BLOCK not in BLOCK_TYPES:
        raise ConfigError(f"CSN.BLOCK is {cfg.CSN.BLOCK!r}; expected one of {list(BLOCK_TYPES)}.")
    refuse_drop_connect(cfg, "CSN")
    dim_in, dim_inner = STEM_WIDTH, RES2_INNER_WIDTH
    specs = []
    for stage, depth in enumerate(STAGE_DEPTHS[cfg.CSN.DEPTH]):
        dim_out = BOTTLENECK_EXPANSION * dim_inner
        specs.append(CSNStageSpec(
            depth=depth, dim_in=dim_in, dim_out=dim_out,
            stride=NO_STRIDE if stage == 0 else STAGE_STRIDE, drop_connect_rate=0.0,
            dim_inner=dim_inner, interaction_preserved=cfg.CSN.BLOCK == "ip",
            bn_eps=cfg.CSN.BN_EPS))
        dim_in, dim_inner = dim_out, 2 * dim_inner
    return STEM_WIDTH, specs


def build_csn_stage(spec: CSNStageSpec, inplace_relu: bool = True) -> ResStage:
    """One stage of CSN bottlenecks; only block 0 is strided (on the depthwise conv and the
    shortcut, in T as well as H and W)."""
    def bottleneck(i: int, dim_in: int, stride: Stride) -> CSNBranch:
        return CSNBranch(dim_in, spec.dim_inner, spec.dim_out, stride, spec.interaction_preserved,
                         spec.bn_eps)
    return build_res_stage(spec, bottleneck, inplace_relu, spec.bn_eps)


@MODEL_REGISTRY.register()
class CSN(StagedNetwork):
    """ir-/ip-CSN-{50,101,152} (config group CSN); input (N, 3, T, H, W) or [that tensor]."""

    def __init__(self, cfg):
        stem_dim, specs = csn_stage_specs(cfg)
        # T is halved (rounding up) by every temporally strided stage.
        frames = cfg.DATA.NUM_FRAMES
        for spec in specs:
            frames = -(-frames // spec.stride[0])
        super().__init__(
            cfg,
            stem=CSNStem(stem_dim, cfg.CSN.BN_EPS),
            stages=[build_csn_stage(spec, cfg.RESNET.INPLACE_RELU) for spec in specs],
            head=BasicHead(specs[-1].dim_out, cfg.MODEL.NUM_CLASSES,
                           head_pool_size(frames, cfg.DATA.TRAIN_CROP_SIZE),
                           cfg.MODEL.DROPOUT_RATE, cfg.MODEL.HEAD_ACT))
