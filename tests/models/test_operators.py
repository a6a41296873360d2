"""Shared operators: SE width rounding and the 2-D evaluation of channel-wise 3-D convs."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vov3d.models.operators import SE, ChannelwiseConv3d, round_width


@pytest.mark.parametrize("channels,expected", [(40, 8), (48, 8), (54, 8), (80, 8), (96, 8), (108, 8),
                                               (160, 16), (192, 16), (216, 16), (320, 24), (384, 24),
                                               (432, 32)])
def test_se_width_rounding_matches_the_reference_table(channels, expected):
    assert round_width(channels, 0.0625) == expected
    se = SE(channels, 0.0625)
    assert (se.fc1.in_channels, se.fc1.out_channels, se.fc2.out_channels) == (channels, expected, channels)
    assert se.fc1.bias is not None and se.fc2.bias is not None
    assert isinstance(se.fc1_act, nn.ReLU)


@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    ((1, 3, 3), (1, 2, 2), (0, 1, 1), 1),    # D(2+1)D spatial, strided
    ((1, 3, 3), 1, (0, 1, 1), 1),
    ((3, 1, 1), 1, (1, 0, 0), 1),            # D(2+1)D temporal
    ((3, 1, 1), 1, (2, 0, 0), (2, 1, 1)),    # temporally dilated
    ((5, 1, 1), 1, (2, 0, 0), 1),            # X3D stem
    ((3, 3, 3), (1, 2, 2), 1, 1),            # X3D / CSN channel-wise, strided
    ((3, 3, 3), 1, 1, 1),
    ((3, 3, 3), (2, 1, 1), 1, 1),            # temporal stride: the 3-D kernel
])
def test_channelwise_conv_equals_conv3d_in_value_and_gradient(kernel, stride, padding, dilation):
    torch.manual_seed(0)
    conv = ChannelwiseConv3d(6, kernel, stride, padding, dilation, bias=True).double()
    x = torch.randn(2, 6, 5, 9, 9, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    ref = F.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, groups=6)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(out.square().sum(), [x, conv.weight, conv.bias])
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, conv.weight, conv.bias])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-10)


def test_channelwise_conv_keeps_conv3d_state_dict_and_handles_channels_last():
    conv = ChannelwiseConv3d(4, (1, 3, 3), padding=(0, 1, 1))
    plain = torch.nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1), groups=4, bias=False)
    assert {k: v.shape for k, v in conv.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(1, 4, 3, 6, 6).contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(conv(x), plain(x))
