"""Small operators shared by the model families: width rounding, Swish, squeeze-excitation."""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """Scale `width` and round it to a multiple of `divisor` (halves up), at least `min_width`.

    When rounding down loses more than 10 % of the scaled width, one more `divisor` is
    added (this is why SE(160) has 16 channels, not 8, in X3D and VoV3D).
    A falsy multiplier returns the width unchanged.
    """
    if not multiplier:
        return width
    width *= multiplier
    min_width = min_width or divisor
    rounded = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


def exporting_to_onnx() -> bool:
    """Whether torch.onnx.export is tracing (torch.onnx is only looked at once imported)."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


class Swish(nn.Module):
    """x * sigmoid(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class SE(nn.Module):
    """Squeeze-excitation: global average pool, 1x1x1 conv + ReLU, 1x1x1 conv + sigmoid, gate.

    The bottleneck width is `round_width(dim_in, ratio)` (a multiple of `divisor`, 8 as in
    X3D; `divisor=1` keeps `dim_in * ratio` rounded to an integer); both convs carry a bias.
    """

    def __init__(self, dim_in: int, ratio: float, relu_act: bool = True, divisor: int = 8):
        super().__init__()
        dim_fc = round_width(dim_in, ratio, min_width=divisor, divisor=divisor)
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc1 = nn.Conv3d(dim_in, dim_fc, 1, bias=True)
        self.fc1_act = nn.ReLU() if relu_act else Swish()
        self.fc2 = nn.Conv3d(dim_fc, dim_in, 1, bias=True)
        self.fc2_sig = nn.Sigmoid()

    def gate(self, pooled: torch.Tensor) -> torch.Tensor:
        """The per-channel gate for an already pooled (N, C, 1, 1, 1) input."""
        return self.fc2_sig(self.fc2(self.fc1_act(self.fc1(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.avg_pool(x))


class ChannelwiseConv3d(nn.Conv3d):
    """A depthwise Conv3d (groups = channels) evaluated with 2-D convolutions where that is
    faster on the CPU. Parameters, state dict and results are those of nn.Conv3d.

    PyTorch's 3-D depthwise kernels are slow on the CPU, above all in backward (4-6x slower
    than 2-D depthwise for the same work). A purely spatial kernel (1, kh, kw) becomes one
    2-D conv over the frames folded into the channels; a purely temporal kernel (kt, 1, 1)
    one 2-D conv over (T, H*W). A full (kt, kh, kw) kernel becomes kt spatial convs whose
    outputs are shifted along T and summed — used when gradients are needed, since the
    direct 3-D kernel is as fast in inference, and in ONNX export: ONNX Runtime's 3-D
    depthwise kernel is 1.1-12x slower than its 2-D one on X3D-M's stages (measured on this
    CPU). Inputs that are not in the default contiguous layout (e.g. channels_last_3d) take
    the 3-D kernel.
    """

    def __init__(self, channels: int, kernel_size, stride=1, padding=0, dilation=1, bias: bool = False):
        super().__init__(channels, channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kt, kh, kw = self.kernel_size
        if x.dim() != 5 or not x.is_contiguous() or self.padding_mode != "zeros":
            return super().forward(x)
        if kt == 1 and self.stride[0] == 1 and self.padding[0] == 0:
            return self._spatial(x, self.weight[:, :, 0], self.bias)
        if kh == kw == 1 and self.stride[1:] == (1, 1) and self.padding[1:] == (0, 0):
            return self._temporal(x)
        if (self.stride[0] == 1 and self.dilation[0] == 1 and 2 * self.padding[0] == kt - 1
                and (exporting_to_onnx() or torch.is_grad_enabled()
                     and (x.requires_grad or self.weight.requires_grad))):
            return self._temporal_taps(x)
        return super().forward(x)

    def _spatial(self, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        n, c, t, h, w = x.shape
        folded = F.conv2d(x.reshape(n, c * t, h, w), weight.repeat_interleave(t, dim=0),
                          None if bias is None else bias.repeat_interleave(t),
                          self.stride[1:], self.padding[1:], self.dilation[1:], groups=c * t)
        return folded.view(n, c, t, folded.shape[-2], folded.shape[-1])

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        y = F.conv2d(x.reshape(n, c, t, h * w), self.weight[..., 0], self.bias,
                     (self.stride[0], 1), (self.padding[0], 0), (self.dilation[0], 1), groups=c)
        return y.view(n, c, y.shape[2], h, w)

    def _temporal_taps(self, x: torch.Tensor) -> torch.Tensor:
        # out[:, :, i] = sum_k spatial_k(x[:, :, i + k - pad]), with zeros outside the clip.
        kt, pad, t = self.kernel_size[0], self.padding[0], x.shape[2]
        out = None
        for k in range(kt):
            tap = self._spatial(x, self.weight[:, :, k], None)
            shift = k - pad
            if shift == 0:
                out = tap if out is None else out + tap
                continue
            src = tap[:, :, max(shift, 0):t + min(shift, 0)]
            padded = F.pad(src, (0, 0, 0, 0, max(-shift, 0), max(shift, 0)))
            out = padded if out is None else out + padded
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out
