"""Continual (streaming) operators: run a clip network on a live stream, one frame at a time.

Every operator is a pure function of one frame and an explicit state:

    y, new_state = op.step(x, state, pos)

`x` is one frame shaped (N, C, 1, H, W) (a clip of length 1, so the clip modules apply
unchanged), `state` a list of tensors (`op.init_state(x)` gives the start-of-stream
state, all zeros), `pos` an int64 scalar tensor: the index of `x` in this operator's own
input stream. A negative `pos` means the stream has not reached this operator yet (the
layers before it are still warming up): `x` is not a frame and enters the state as zeros
(so the state stays as it started), and the output is meaningless. No Python branch depends on a tensor value, so a
network of these operators traces into one fixed graph (TorchScript, torch.export, ONNX)
with its whole state as inputs and outputs. The state is never a parameter or buffer of a
module: a model that streams has exactly the state dict of the clip model it was built from.

Each operator has
* ``delay``: how many frames its output lags its input: the output at ``pos < delay`` is
  not yet an output of the stream (the warm-up); delays add up along a path;
* ``receptive_field``: how many consecutive input frames one output depends on;
* ``num_states``: how many tensors its state holds.

Only temporal stride 1 and temporal dilation 1 are supported, which is all X3D uses.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from vov3d.models.operators import exporting_to_onnx

FILL_MODES = ("zeros", "replicate")
SE_SCOPES = ("frame", "window")

State = List[torch.Tensor]


def gate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """`x` once the operator's stream has started (pos >= 0), else zeros. Every state starts
    as zeros and only ever takes frames through this gate, so before its stream starts an
    operator's state stays as it started; one frame is multiplied, not the whole state."""
    return x * (pos >= 0).to(x.dtype)


def held_frames(x: torch.Tensor, frames: int, spatial_mean: bool = False) -> State:
    """A start-of-stream state: `frames` zero frames shaped like `x` (their spatial means with
    `spatial_mean`); no state at all when none are held."""
    if frames == 0:
        return []
    space = (1, 1) if spatial_mean else x.shape[3:]
    return [x.new_zeros(x.shape[:2] + (frames,) + tuple(space))]


def _push(held: torch.Tensor, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The last `held.shape[2]` frames after `x` arrives (a frame queue along dim 2)."""
    return torch.cat([held[:, :, 1:], gate(x, pos)], dim=2)


class ContinualConv3d:
    """A `nn.Conv3d` evaluated frame by frame (input-cache scheme).

    The state holds the last ``k - 1`` input frames; the arriving frame is appended and the
    convolution runs on the ``k`` frames with no temporal padding, so every tap is applied
    once to every frame: per frame the cost of one output position of the clip convolution.
    Any groups (dense, channelwise, depthwise) and any spatial stride/padding work; the
    spatial part is the module's own.

    At the stream start the cache holds ``k - 1`` fill frames: zeros (at this layer's
    input, which reproduces the clip convolution's zero padding at the clip start) or
    copies of the first frame ("replicate"). The clip convolution pads only ``p`` frames
    in front, so the first ``d = k - 1 - p`` outputs have no clip counterpart (the delay):
    output number ``j`` (0-based, after the warm-up) equals the clip convolution's output
    at position ``j`` with front-only padding.

    The module is referenced, not copied, so weight updates and ``.to()`` apply.
    """

    def __init__(self, conv: nn.Conv3d, fill: str = "zeros"):
        if not isinstance(conv, nn.Conv3d):
            raise TypeError(f"ContinualConv3d wraps an nn.Conv3d, got {type(conv).__name__}.")
        kernel, stride, padding = conv.kernel_size, conv.stride, conv.padding
        dilation = conv.dilation
        if isinstance(padding, str):
            raise ValueError(f"ContinualConv3d needs numeric padding, got padding={padding!r}.")
        if stride[0] != 1 or dilation[0] != 1:
            raise ValueError(f"ContinualConv3d supports temporal stride 1 and dilation 1 only; "
                             f"got stride {tuple(stride)}, dilation {tuple(dilation)}.")
        if conv.padding_mode != "zeros":
            raise ValueError(f"ContinualConv3d supports padding_mode 'zeros' only, got "
                             f"{conv.padding_mode!r}.")
        if not 0 <= padding[0] <= kernel[0] - 1:
            raise ValueError(f"temporal padding {padding[0]} must be in [0, kernel - 1] "
                             f"for temporal kernel {kernel[0]}.")
        if fill not in FILL_MODES:
            raise ValueError(f"temporal fill must be one of {', '.join(map(repr, FILL_MODES))}, "
                             f"got {fill!r}.")
        self.conv = conv
        self.fill = fill
        self.kernel_t = kernel[0]
        self.delay = kernel[0] - 1 - padding[0]
        self.receptive_field = kernel[0]
        self.num_states = 1 if self.kernel_t > 1 else 0

    def init_state(self, x: torch.Tensor) -> State:
        return held_frames(x, self.kernel_t - 1)

    def step(self, x: torch.Tensor, state: Sequence[torch.Tensor], pos: torch.Tensor
             ) -> Tuple[torch.Tensor, State]:
        if self.kernel_t == 1:
            return self.conv(x), []
        (cache,) = state
        if self.fill == "replicate":
            cache = torch.where(pos == 0, x.expand_as(cache), cache)
        window = torch.cat([cache, gate(x, pos)], dim=2)
        return self._conv(window), [window[:, :, 1:]]

    def _conv(self, window: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if exporting_to_onnx() and conv.groups == conv.in_channels == conv.out_channels:
            # Depthwise: one 2-D convolution per tap, which ONNX Runtime runs several times
            # faster than the 3-D kernel on the same sums.
            y = sum(F.conv2d(window[:, :, k], conv.weight[:, :, k], None, conv.stride[1:], conv.padding[1:],
                             conv.dilation[1:], conv.groups) for k in range(self.kernel_t))
            y = y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)
            return y.unsqueeze(2)
        return F.conv3d(window, conv.weight, conv.bias, conv.stride, (0,) + tuple(conv.padding[1:]),
                        conv.dilation, conv.groups)


class DelayLine:
    """Delays a stream by ``delay`` frames.

    Used on a residual's skip path so that it refers to the same frame as the delayed
    main branch. Holds no parameters.
    """

    def __init__(self, delay: int):
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}.")
        self.delay = delay
        self.receptive_field = 1
        self.num_states = 1 if delay else 0

    def init_state(self, x: torch.Tensor) -> State:
        return held_frames(x, self.delay)

    def step(self, x: torch.Tensor, state: Sequence[torch.Tensor], pos: torch.Tensor
             ) -> Tuple[torch.Tensor, State]:
        if self.delay == 0:
            return x, []
        (held,) = state
        return held[:, :, :1], [_push(held, x, pos)]


class WindowSqueeze:
    """Sliding-window squeeze for squeeze-excitation (``SE_SCOPE window``).

    Returns the mean of the spatial means of the frame and the ``window - 1`` frames before
    it (fewer at the stream start, where only real frames are averaged), shaped
    (N, C, 1, 1, 1). No delay: the gate computed from it multiplies the current frame. The
    sum is recomputed from the kept frame means every step, so there is no drift from a
    running sum.
    """

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"SE squeeze window must be >= 1, got {window}.")
        self.window = window
        self.delay = 0
        self.receptive_field = window
        self.num_states = 1 if window > 1 else 0

    def init_state(self, x: torch.Tensor) -> State:
        return held_frames(x, self.window - 1, spatial_mean=True)

    def step(self, x: torch.Tensor, state: Sequence[torch.Tensor], pos: torch.Tensor
             ) -> Tuple[torch.Tensor, State]:
        mean = x.mean(dim=(3, 4), keepdim=True)
        if self.window == 1:
            return mean, []
        (held,) = state
        # Frames seen so far, this one included: the zeros of the initial state add nothing.
        count = (pos + 1).clamp(1, self.window).to(x.dtype)
        return (held.sum(dim=2, keepdim=True) + mean) / count, [_push(held, mean, pos)]


class SlidingTemporalAverage:
    """Mean over the last ``window`` frames: the temporal part of a head's average pool.

    No padding: the first output comes with the ``window``-th frame (delay ``window - 1``),
    then one per frame, equal to ``AvgPool3d((window, 1, 1), stride=1)`` on the stream.
    """

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"temporal window must be >= 1, got {window}.")
        self.window = window
        self.delay = window - 1
        self.receptive_field = window
        self.num_states = 1 if window > 1 else 0

    def init_state(self, x: torch.Tensor) -> State:
        return held_frames(x, self.window - 1)

    def step(self, x: torch.Tensor, state: Sequence[torch.Tensor], pos: torch.Tensor
             ) -> Tuple[torch.Tensor, State]:
        if self.window == 1:
            return x, []
        (held,) = state
        window = torch.cat([held, gate(x, pos)], dim=2)
        return window.mean(dim=2, keepdim=True), [window[:, :, 1:]]


class ContinualSE:
    """Squeeze-excitation on a stream, with the weights of a clip SE module.

    ``scope "frame"`` squeezes each frame over its own H x W (what the published CoX3D
    results use; stateless). ``scope "window"`` squeezes over the last ``window`` frames
    (see `WindowSqueeze`), an approximation of the clip-wide squeeze. Either way the gate
    multiplies the current frame, so there is no delay.

    The SE module must expose ``gate(pooled)`` mapping an (N, C, T, 1, 1) squeeze to the
    per-channel gate (as `vov3d.models.operators.SE` does).
    """

    def __init__(self, se: nn.Module, scope: str = "frame", window: int = 1):
        if scope not in SE_SCOPES:
            raise ValueError(f"SE scope must be one of {', '.join(map(repr, SE_SCOPES))}, "
                             f"got {scope!r}.")
        if not callable(getattr(se, "gate", None)):
            raise TypeError(f"{type(se).__name__} has no gate(pooled) method to excite a "
                            "streamed squeeze.")
        self.se = se
        self.scope = scope
        self.delay = 0
        self.squeeze = WindowSqueeze(window if scope == "window" else 1)
        self.receptive_field = self.squeeze.receptive_field
        self.num_states = self.squeeze.num_states

    def init_state(self, x: torch.Tensor) -> State:
        return self.squeeze.init_state(x)

    def step(self, x: torch.Tensor, state: Sequence[torch.Tensor], pos: torch.Tensor
             ) -> Tuple[torch.Tensor, State]:
        squeezed, state = self.squeeze.step(x, state, pos)
        return x * self.se.gate(squeezed), state

