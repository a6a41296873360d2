"""Small operators shared by the model families: width rounding, Swish, squeeze-excitation."""
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


class Swish(nn.Module):
    """x * sigmoid(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class SE(nn.Module):
    """Squeeze-excitation: global average pool, 1x1x1 conv + ReLU, 1x1x1 conv + sigmoid, gate.

    The bottleneck width is `round_width(dim_in, ratio)`; both convs carry a bias.
    """

    def __init__(self, dim_in: int, ratio: float, relu_act: bool = True):
        super().__init__()
        dim_fc = round_width(dim_in, ratio)
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
