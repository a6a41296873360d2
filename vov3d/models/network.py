"""The network every model family fills in: `s1` (stem), `s2`..`s5` (stages), `head`.

Every family has the same shape: `<family>_stage_specs(cfg)` reads and checks the
config and returns the stem width and one spec per stage; `build_<family>_stage(spec)`
builds a stage; the family's class builds its stem, its four stages and its head, in
that order, and hands them to `StagedNetwork`, which names them as PySlowFast's state
dicts do and initialises the weights.
"""
from typing import Sequence

import torch
import torch.nn as nn

from vov3d.models.stems import VideoModelStem, single_pathway_input
from vov3d.models.weight_init import init_weights

NUM_STAGES = 4


class StagedNetwork(nn.Module):
    """A single-pathway network: `s1` holds the stem as `pathway0_stem`, `s2`..`s5` are the
    stages, `head` the classifier; weights are initialised from MODEL.FC_INIT_STD and
    RESNET.ZERO_INIT_FINAL_BN.

    forward takes (N, C, T, H, W) or a one-element list of it (PySlowFast's pathway list)
    and returns (N, NUM_CLASSES): logits in training, the mean over head positions of
    HEAD_ACT(scores) in eval. Normalisation is plain BatchNorm3d; BN.NORM_TYPE
    sync_batchnorm is applied by the engine, which keeps the state dict unchanged.
    """

    def __init__(self, cfg, stem: nn.Module, stages: Sequence[nn.Module], head: nn.Module):
        super().__init__()
        if len(stages) != NUM_STAGES:
            raise ValueError(f"a staged network has {NUM_STAGES} stages (s2..s5), got {len(stages)}.")
        self.s1 = VideoModelStem(stem)
        for n, stage in enumerate(stages, start=2):
            self.add_module(f"s{n}", stage)
        self.head = head
        init_weights(self, cfg.MODEL.FC_INIT_STD, cfg.RESNET.ZERO_INIT_FINAL_BN)

    def forward(self, inputs) -> torch.Tensor:
        x = single_pathway_input(inputs)
        for stage in (self.s1, self.s2, self.s3, self.s4, self.s5):
            x = stage(x)
        return self.head(x)
