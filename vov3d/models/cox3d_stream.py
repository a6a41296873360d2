"""The three parts of CoX3D's per-frame step: stem, residual block, head.

Each part runs X3D's own modules on one frame (N, C, 1, H, W) with the continual
operators of `vov3d.models.continual` where time enters, and has the operators' interface:
``step(x, state, pos) -> (y, new_state)``, ``delay``, ``receptive_field``, ``num_states``,
plus ``state_names`` (one name per state tensor). A ``state`` of None starts from the
operators' initial state (zeros shaped from their inputs): CoX3D runs a part that way on
the meta device to learn the state's shapes without computing anything.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from vov3d.models.continual import ContinualConv3d, ContinualSE, DelayLine, SlidingTemporalAverage, State
from vov3d.models.resblock import ResBlock


def _run(op, x: torch.Tensor, state: Optional[Sequence[torch.Tensor]], pos: torch.Tensor
         ) -> Tuple[torch.Tensor, State]:
    return op.step(x, op.init_state(x) if state is None else state, pos)


def _split(state: Optional[Sequence[torch.Tensor]], sizes: Sequence[int]) -> List[Optional[list]]:
    if state is None:
        return [None] * len(sizes)
    out, start = [], 0
    for size in sizes:
        out.append(list(state[start:start + size]))
        start += size
    return out


class StemStep:
    """conv_xy per frame, continual depthwise temporal conv, BN, ReLU."""

    def __init__(self, stem: nn.Module, fill: str):
        self.stem = stem
        self.conv = ContinualConv3d(stem.conv, fill)
        self.delay = self.conv.delay
        self.receptive_field = self.conv.receptive_field
        self.num_states = self.conv.num_states

    def state_names(self, prefix: str) -> List[str]:
        return [f"{prefix}.conv"] * self.conv.num_states

    def step(self, x: torch.Tensor, state: Optional[Sequence[torch.Tensor]], pos: torch.Tensor
             ) -> Tuple[torch.Tensor, State]:
        x, state = _run(self.conv, self.stem.conv_xy(x), state, pos)
        return self.stem.relu(self.stem.bn(x)), state


class BlockStep:
    """One residual block: the bottleneck with a continual 3x3x3 conv and a continual SE;
    the shortcut (identity or per-frame projection) delayed to meet the branch's frame."""

    def __init__(self, block: ResBlock, fill: str, se_scope: str, se_window: int):
        self.block = block
        branch = block.branch2
        self.conv = ContinualConv3d(branch.b, fill)
        self.se = ContinualSE(branch.se, se_scope, se_window) if hasattr(branch, "se") else None
        self.skip = DelayLine(self.conv.delay)
        self.delay = self.conv.delay
        self.receptive_field = self.conv.receptive_field + (
            self.se.receptive_field - 1 if self.se is not None else 0)
        self._ops = [self.skip, self.conv] + ([self.se] if self.se is not None else [])
        self.num_states = sum(op.num_states for op in self._ops)

    def state_names(self, prefix: str) -> List[str]:
        names = []
        for name, op in zip(("skip", "conv", "se"), self._ops):
            names += [f"{prefix}.{name}"] * op.num_states
        return names

    def step(self, x: torch.Tensor, state: Optional[Sequence[torch.Tensor]], pos: torch.Tensor
             ) -> Tuple[torch.Tensor, State]:
        block, branch = self.block, self.block.branch2
        parts = _split(state, [op.num_states for op in self._ops])
        skip, skip_state = _run(self.skip, block.shortcut(x), parts[0], pos)
        y, conv_state = _run(self.conv, branch.a_relu(branch.a_bn(branch.a(x))), parts[1], pos)
        y = branch.b_bn(y)
        se_state: State = []
        if self.se is not None:
            # The SE sees the conv's output stream, which starts `conv.delay` frames later.
            y, se_state = _run(self.se, y, parts[2], pos - self.conv.delay)
        y = branch.c_bn(branch.c(branch.b_relu(y)))
        return block.relu(skip + y), skip_state + conv_state + se_state


class HeadStep:
    """conv_5/BN/ReLU and the spatial part of the pool per frame, a sliding temporal mean
    over `window` frames, then lin_5/ReLU and the classifier at every remaining spatial
    position. Returns (N, K) scores: activated and averaged over the positions, or (with
    `logits`) the positions' mean logits."""

    def __init__(self, head: nn.Module, window: int):
        self.head = head
        self.spatial_pool = (1,) + tuple(head.pool_size[1:])
        self.pool = SlidingTemporalAverage(window)
        self.delay = self.pool.delay
        self.receptive_field = self.pool.receptive_field
        self.num_states = self.pool.num_states

    def state_names(self, prefix: str) -> List[str]:
        return [f"{prefix}.pool"] * self.pool.num_states

    def step(self, x: torch.Tensor, state: Optional[Sequence[torch.Tensor]], pos: torch.Tensor,
             logits: bool = False) -> Tuple[torch.Tensor, State]:
        head = self.head
        x = head.conv_5_relu(head.conv_5_bn(head.conv_5(x)))
        x, state = _run(self.pool, F.avg_pool3d(x, self.spatial_pool, stride=1), state, pos)
        x = head.lin_5(x)
        if hasattr(head, "lin_5_bn"):
            x = head.lin_5_bn(x)
        x = head.projection(head.lin_5_relu(x).permute(0, 2, 3, 4, 1))
        if not logits:
            x = head.act(x)
        return x.mean(dim=(1, 2, 3)), state
