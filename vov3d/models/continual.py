"""Continual (streaming) operators: run a clip network on a live stream, one frame at a time.

A stream is fed in chunks of frames shaped (N, C, L, H, W); L = 1 is one frame. Every
operator here turns the chunk it receives into the chunk of outputs that are complete
now, keeping whatever later outputs need from the past as state. The state is plain
tensors on the operator object, never parameters or buffers of a module, so a model
that streams has exactly the state dict of the clip model it was built from.

Each operator has
* ``delay``: how many frames its output lags its input. A layer emits nothing for its
  first ``delay`` input frames (the warm-up) and then one output per input frame;
  delays add up along a path;
* ``receptive_field``: how many consecutive input frames one output depends on;
* ``reset()``: forget the stream (call between videos).

Only temporal stride 1 and temporal dilation 1 are supported, which is all X3D uses.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

FILL_MODES = ("zeros", "replicate")
SE_SCOPES = ("frame", "window")


class ContinualConv3d:
    """A `nn.Conv3d` evaluated frame by frame (input-cache scheme).

    The last ``k - 1`` input frames are cached; an arriving chunk is appended and the
    convolution runs on it with no temporal padding, so every tap is applied once to
    every frame: per frame the cost of one output position of the clip convolution.
    Any groups (dense, channelwise, depthwise) and any spatial stride/padding work;
    the spatial part is the module's own.

    At the stream start the cache holds ``k - 1`` fill frames: zeros (at this layer's
    input, which reproduces the clip convolution's zero padding at the clip start) or
    copies of the first frame ("replicate"). The clip convolution pads only ``p`` frames
    in front, so the first ``d = k - 1 - p`` outputs have no clip counterpart and are
    suppressed: output number ``j`` (0-based, after the warm-up) equals the clip
    convolution's output at position ``j`` with front-only padding.

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
        self._spatial_padding = (0,) + tuple(padding[1:])
        self.reset()

    def reset(self) -> None:
        self._cache: Optional[torch.Tensor] = None
        self._seen = 0

    def __call__(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        conv = self.conv
        if self.kernel_t == 1:
            return conv(x)
        keep = self.kernel_t - 1
        if self._cache is None:
            shape = x.shape[:2] + (keep,) + x.shape[3:]
            self._cache = x.new_zeros(shape) if self.fill == "zeros" else x[:, :, :1].expand(shape)
        window = torch.cat([self._cache, x], dim=2)
        # A view of the last frames would keep the whole chunk alive; copy when it is longer.
        tail = window[:, :, -keep:]
        self._cache = tail if x.shape[2] == 1 else tail.contiguous()
        skip = max(0, self.delay - self._seen)
        self._seen += x.shape[2]
        if skip >= x.shape[2]:
            return None
        if skip:
            window = window[:, :, skip:]
        return F.conv3d(window, conv.weight, conv.bias, conv.stride, self._spatial_padding,
                        conv.dilation, conv.groups)


class DelayLine:
    """Delays a stream by ``delay`` frames: emits nothing for the first ``delay`` frames.

    Used on a residual's skip path so that it refers to the same frame as the delayed
    main branch. Holds no parameters.
    """

    def __init__(self, delay: int):
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}.")
        self.delay = delay
        self.receptive_field = 1
        self.reset()

    def reset(self) -> None:
        self._buffer: Optional[torch.Tensor] = None

    def __call__(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        if self.delay == 0:
            return x
        if self._buffer is not None:
            x = torch.cat([self._buffer, x], dim=2)
        held = x[:, :, -self.delay:]
        self._buffer = held if x.shape[2] <= self.delay + 1 else held.contiguous()
        if x.shape[2] <= self.delay:
            return None
        return x[:, :, :-self.delay]


class WindowSqueeze:
    """Sliding-window squeeze for squeeze-excitation (``SE_SCOPE window``).

    Returns, for every frame of the chunk, the mean of the spatial means of that frame
    and the ``window - 1`` frames before it (fewer at the stream start, where only
    real frames are averaged), shaped (N, C, L, 1, 1). No delay: the gate computed
    from it multiplies the current frame. The window sum is recomputed from the kept
    frame means every call, so there is no drift from a running sum.
    """

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"SE squeeze window must be >= 1, got {window}.")
        self.window = window
        self.delay = 0
        self.receptive_field = window
        self.reset()

    def reset(self) -> None:
        self._means: Optional[torch.Tensor] = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(3, 4), keepdim=True)
        length = means.shape[2]
        held = 0 if self._means is None else self._means.shape[2]
        if held:
            means = torch.cat([self._means, means], dim=2)
        self._means = means[:, :, -(self.window - 1):].contiguous() if self.window > 1 else None
        padded = F.pad(means, (0, 0, 0, 0, self.window - 1, 0))
        sums = F.avg_pool3d(padded, (self.window, 1, 1), stride=1)[:, :, -length:] * self.window
        counts = torch.arange(held + 1, held + length + 1, device=x.device, dtype=x.dtype)
        counts = counts.clamp(max=self.window).view(1, 1, length, 1, 1)
        return sums / counts


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
        self.reset()

    def reset(self) -> None:
        self._frames: Optional[torch.Tensor] = None

    def __call__(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        if self._frames is not None:
            x = torch.cat([self._frames, x], dim=2)
        keep = self.window - 1
        self._frames = x[:, :, -keep:].contiguous() if keep else None
        if x.shape[2] < self.window:
            return None
        return F.avg_pool3d(x, (self.window, 1, 1), stride=1)


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
        self._squeeze = WindowSqueeze(window) if scope == "window" else None
        self.receptive_field = window if scope == "window" else 1

    def reset(self) -> None:
        if self._squeeze is not None:
            self._squeeze.reset()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._squeeze is None:
            squeezed = x.mean(dim=(3, 4), keepdim=True)
        else:
            squeezed = self._squeeze(x)
        return x * self.se.gate(squeezed)
