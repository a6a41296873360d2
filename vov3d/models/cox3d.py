"""CoX3D (Hedegaard & Iosifidis, ECCV 2022): X3D that also runs on a live stream, frame by frame.

`CoX3D` is `X3D` plus a streaming path. It has X3D's modules, so its state dict is X3D's
(same keys, same order): X3D checkpoints load strictly and CoX3D checkpoints are X3D
checkpoints. Clip mode (`model(clip)`) is X3D's forward, used for training and clip tests.

Stream mode (`forward_step`, `forward_steps`) evaluates the same weights one frame at a
time with the operators of `vov3d.models.continual`: the temporal convolutions (the
stem's 5x1x1, every block's 3x3x3) keep their last frames, each residual skip is delayed
by its branch's one-frame lag, squeeze-excitation squeezes each frame (`COX3D.SE_SCOPE
frame`, the published setting) or the last NUM_FRAMES frames (`window`), and the head
averages the last `COX3D.TEMPORAL_WINDOW` frames (0 = DATA.NUM_FRAMES; 64 gives the
paper's extended receptive field at no extra cost per frame).

What the stream output is: after `delay` frames with no output, the output
at frame n equals the same weights run with front-only temporal padding (fill
`COX3D.TEMPORAL_FILL`) and per-frame SE over the frames seen so far; from frame
`receptive_field - 1` on it no longer depends on the fill and equals the padding-free
network on the last `receptive_field` frames. It is *not* X3D's output on the last
NUM_FRAMES-frame clip: X3D zero-pads every temporal convolution at both clip ends.

Streaming needs eval mode (BN with running statistics), runs without autograd, and keeps
its state outside the state dict; call `reset()` between videos.
"""
import copy
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vov3d.config.merge import ConfigError
from vov3d.models.continual import (FILL_MODES, SE_SCOPES, ContinualConv3d, ContinualSE,
                                    DelayLine, SlidingTemporalAverage)
from vov3d.models.registry import MODEL_REGISTRY
from vov3d.models.resblock import ResBlock
from vov3d.models.x3d import X3D


class _StemStep:
    """conv_xy per frame, continual depthwise temporal conv, BN, ReLU."""

    def __init__(self, stem: nn.Module, fill: str):
        self.stem = stem
        self.conv = ContinualConv3d(stem.conv, fill)
        self.delay = self.conv.delay
        self.receptive_field = self.conv.receptive_field

    def reset(self) -> None:
        self.conv.reset()

    def __call__(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        x = self.conv(self.stem.conv_xy(x))
        if x is None:
            return None
        return self.stem.relu(self.stem.bn(x))


class _BlockStep:
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

    def reset(self) -> None:
        self.conv.reset()
        self.skip.reset()
        if self.se is not None:
            self.se.reset()

    def __call__(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        block, branch = self.block, self.block.branch2
        skip = self.skip(block.shortcut(x))
        y = self.conv(branch.a_relu(branch.a_bn(branch.a(x))))
        if y is None:
            return None
        y = branch.b_bn(y)
        if self.se is not None:
            y = self.se(y)
        y = branch.c_bn(branch.c(branch.b_relu(y)))
        return block.relu(skip + y)


class _HeadStep:
    """conv_5/BN/ReLU and the spatial part of the pool per frame, a sliding temporal mean
    over `window` frames, then lin_5/ReLU and the classifier at every remaining spatial
    position. Returns (N, K, L) scores: activated and averaged over the positions, or the
    positions' mean logits."""

    def __init__(self, head: nn.Module, window: int):
        self.head = head
        self.spatial_pool = (1,) + tuple(head.pool_size[1:])
        self.pool = SlidingTemporalAverage(window)
        self.delay = self.pool.delay
        self.receptive_field = self.pool.receptive_field

    def reset(self) -> None:
        self.pool.reset()

    def __call__(self, x: torch.Tensor, logits: bool = False) -> Optional[torch.Tensor]:
        head = self.head
        x = head.conv_5_relu(head.conv_5_bn(head.conv_5(x)))
        x = self.pool(F.avg_pool3d(x, self.spatial_pool, stride=1))
        if x is None:
            return None
        x = head.lin_5(x)
        if hasattr(head, "lin_5_bn"):
            x = head.lin_5_bn(x)
        x = head.projection(head.lin_5_relu(x).permute(0, 2, 3, 4, 1))
        if not logits:
            x = head.act(x)
        return x.mean(dim=(2, 3)).transpose(1, 2)


@MODEL_REGISTRY.register()
class CoX3D(X3D):
    """X3D with a continual streaming path (see the module docstring).

    * ``model(clip)``: X3D's clip forward (training, clip testing); (N, K).
    * ``model.forward_step(frame)``: frame (N, 3, H, W) -> None for the first ``delay``
      frames after a reset, then (N, K) per frame: probabilities (HEAD_ACT) or, with
      ``logits=True``, the logits (mean over head positions when the frame is larger than
      the training crop).
    * ``model.forward_steps(frames)``: a chunk (N, 3, L, H, W) continuing the same stream ->
      (N, K, L') holding the outputs of the chunk's frames that produce one (L' = L once
      warm), or None if none does. Equal to stacking ``forward_step`` on each frame.
    * ``model.reset()``: start a new stream (a new video, another batch size or size).
    * ``delay`` (frames without output after a reset) and ``receptive_field`` (frames one
      output depends on) are read-only.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        c = cfg.COX3D
        if c.TEMPORAL_FILL not in FILL_MODES:
            raise ConfigError(f"COX3D.TEMPORAL_FILL is {c.TEMPORAL_FILL!r}; expected one of "
                              f"{list(FILL_MODES)}.")
        if c.SE_SCOPE not in SE_SCOPES:
            raise ConfigError(f"COX3D.SE_SCOPE is {c.SE_SCOPE!r}; expected one of "
                              f"{list(SE_SCOPES)}.")
        if c.TEMPORAL_WINDOW < 0:
            raise ConfigError(f"COX3D.TEMPORAL_WINDOW is {c.TEMPORAL_WINDOW}; expected >= 1 "
                              "frames, or 0 for DATA.NUM_FRAMES.")
        self.temporal_window = c.TEMPORAL_WINDOW or cfg.DATA.NUM_FRAMES
        self.temporal_fill = c.TEMPORAL_FILL
        self.se_scope = c.SE_SCOPE
        # Plain attributes, not submodules: streaming adds nothing to the state dict.
        self._stem_step = _StemStep(self.s1.pathway0_stem, self.temporal_fill)
        self._block_steps = [_BlockStep(block, self.temporal_fill, self.se_scope,
                                        cfg.DATA.NUM_FRAMES)
                             for stage in (self.s2, self.s3, self.s4, self.s5)
                             for block in stage.children()]
        self._head_step = _HeadStep(self.head, self.temporal_window)
        self._steps = [self._stem_step, *self._block_steps, self._head_step]
        self._signature = None

    @property
    def delay(self) -> int:
        """Frames consumed after a reset before the first output."""
        return sum(step.delay for step in self._steps)

    @property
    def receptive_field(self) -> int:
        """Consecutive frames one output depends on; from this many frames on, outputs no
        longer depend on the start-of-stream fill (steady state)."""
        return 1 + sum(step.receptive_field - 1 for step in self._steps)

    def reset(self) -> None:
        """Forget the stream: the next frame starts a new one (with a new warm-up)."""
        for step in self._steps:
            step.reset()
        self._signature = None

    def forward_step(self, frame: torch.Tensor, logits: bool = False) -> Optional[torch.Tensor]:
        """Feed one frame (N, 3, H, W); returns (N, K) or None during the warm-up."""
        if not torch.is_tensor(frame) or frame.dim() != 4:
            shape = tuple(frame.shape) if torch.is_tensor(frame) else type(frame).__name__
            raise ValueError(f"CoX3D.forward_step takes one frame of shape (N, C, H, W), got "
                             f"{shape}; use forward_steps for (N, C, T, H, W) chunks.")
        out = self._stream(frame.unsqueeze(2), logits)
        return None if out is None else out[:, :, 0]

    def forward_steps(self, frames: torch.Tensor, logits: bool = False) -> Optional[torch.Tensor]:
        """Feed a chunk (N, 3, L, H, W) of consecutive frames; returns (N, K, L') or None."""
        if not torch.is_tensor(frames) or frames.dim() != 5:
            shape = tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
            raise ValueError(f"CoX3D.forward_steps takes frames of shape (N, C, T, H, W), got "
                             f"{shape}; use forward_step for one (N, C, H, W) frame.")
        if frames.shape[2] == 0:
            raise ValueError("CoX3D.forward_steps got a chunk of 0 frames.")
        return self._stream(frames, logits)

    def _stream(self, x: torch.Tensor, logits: bool) -> Optional[torch.Tensor]:
        if self.training:
            raise RuntimeError("CoX3D streams in eval mode only (BN needs its running statistics "
                               "on single frames): call model.eval() first. Train in clip mode.")
        self._check_stream(x)
        with torch.no_grad():
            for step in self._steps[:-1]:
                x = step(x)
                if x is None:
                    return None
            return self._head_step(x, logits)

    def _check_stream(self, x: torch.Tensor) -> None:
        """The first frame after a reset fixes batch, channels, size, dtype and device."""
        signature = (x.shape[0], x.shape[1], x.shape[3], x.shape[4], x.dtype, x.device)
        if self._signature is None:
            self._check_first_frame(x)
            self._signature = signature
            return
        if signature == self._signature:
            return
        names = ("batch size", "channels", "height", "width", "dtype", "device")
        changed = [f"{name} {old} -> {new}"
                   for name, old, new in zip(names, self._signature, signature) if old != new]
        raise ValueError(f"CoX3D stream input changed mid-stream ({', '.join(changed)}); every "
                         "frame of a stream must match the first one. Call model.reset() to "
                         "start a new stream.")

    def _check_first_frame(self, x: torch.Tensor) -> None:
        stem = self.s1.pathway0_stem
        if x.shape[1] != stem.conv_xy.in_channels:
            raise ValueError(f"CoX3D expects frames with {stem.conv_xy.in_channels} channels, got "
                             f"{x.shape[1]} (input shape {tuple(x.shape)}).")
        size = list(x.shape[3:])
        convs = [stem.conv_xy] + [m for step in self._block_steps
                                  for m in (step.block.branch2.a, step.block.branch2.b)]
        for conv in convs:
            for i in (0, 1):
                k, s, p, d = (conv.kernel_size[i + 1], conv.stride[i + 1], conv.padding[i + 1],
                              conv.dilation[i + 1])
                size[i] = (size[i] + 2 * p - d * (k - 1) - 1) // s + 1
        need = self.head.pool_size[1:]
        if size[0] < need[0] or size[1] < need[1]:
            raise ValueError(f"frames of {x.shape[3]}x{x.shape[4]} px leave a {size[0]}x{size[1]} "
                             f"final map, smaller than the head's {need[0]}x{need[1]} pooling "
                             "window fixed by DATA.TRAIN_CROP_SIZE; feed frames at least as "
                             "large as the training crop.")


def stream_macs_per_frame(model: CoX3D, height: int, width: int, batch: int = 1) -> int:
    """Multiply-adds of the convolutions and linear layers in one steady-state stream step
    for (batch, C, height, width) frames, counted on a meta-device copy (no data touched)."""
    meta = copy.deepcopy(model).to("meta").eval()
    meta.reset()
    channels = meta.s1.pathway0_stem.conv_xy.in_channels
    frames = torch.empty(batch, channels, meta.delay + 1, height, width, device="meta")
    # Warm up in one chunk (stepping meta tensors frame by frame is slow), then count a step.
    meta.forward_steps(frames[:, :, :meta.delay])
    counter = FlopCounterMode(display=False)
    with counter:
        meta.forward_step(frames[:, :, -1])
    return counter.get_total_flops() // 2
