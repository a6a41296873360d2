"""Continual operators against their clip counterparts (float64, exact up to rounding), and
the functional contract: frames stepped before an operator's stream starts (negative
positions) change nothing."""
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vov3d.models.continual import (ContinualConv3d, ContinualSE, DelayLine, SlidingTemporalAverage,
                                    WindowSqueeze)
from vov3d.models.operators import SE

TOL = 1e-12


def front_padded(x, pad, fill):
    """The clip with `pad` fill frames in front only (zeros or copies of frame 0)."""
    if pad == 0:
        return x
    if fill == "zeros":
        return F.pad(x, (0, 0, 0, 0, pad, 0))
    return torch.cat([x[:, :, :1].expand(-1, -1, pad, -1, -1), x], dim=2)


def causal_conv(conv, x, fill):
    """The clip convolution with its temporal padding at the front only."""
    pad_t = conv.padding[0]
    return F.conv3d(front_padded(x, pad_t, fill), conv.weight, conv.bias, conv.stride,
                    (0,) + tuple(conv.padding[1:]), conv.dilation, conv.groups)


def run_steps(op, x, start=0):
    """Step the frames of clip `x` one by one from the initial state, the operator's stream
    starting at frame `start`; None where there is no stream output (yet)."""
    state = op.init_state(x[:, :, :1])
    outs = []
    for t in range(x.shape[2]):
        y, state = op.step(x[:, :, t:t + 1], state, torch.tensor(t - start))
        assert len(state) == op.num_states
        outs.append(y if t - start >= op.delay else None)
    return outs


def late_start(op, x, lead=3):
    """The same stream after `lead` unrelated frames stepped at negative positions."""
    torch.manual_seed(99)
    noise = torch.randn(x.shape[:2] + (lead,) + x.shape[3:], dtype=x.dtype) * 5 + 3
    return run_steps(op, torch.cat([noise, x], dim=2), start=lead)[lead:]


@pytest.mark.parametrize("k,same,depthwise,stride,fill", [
    (k, same, dw, s, fill) for k, same, dw, s, fill in itertools.product(
        (1, 3, 5), (True, False), (True, False), (1, 2), ("zeros", "replicate"))
    if not (k == 1 and not same)])
def test_conv_steps_equal_front_padded_clip_conv(k, same, depthwise, stride, fill):
    torch.manual_seed(k * 10 + stride)
    c = 4
    pad_t = (k - 1) // 2 if same else 0
    conv = nn.Conv3d(c, c, (k, 3, 3), stride=(1, stride, stride), padding=(pad_t, 1, 1),
                     groups=c if depthwise else 1, bias=not depthwise).double()
    x = torch.randn(2, c, 9, 7, 6, dtype=torch.float64)
    op = ContinualConv3d(conv, fill)
    delay = k - 1 - pad_t
    assert op.delay == delay and op.receptive_field == k

    outs = run_steps(op, x)
    assert all(o is None for o in outs[:delay])
    got = torch.cat(outs[delay:], dim=2)
    want = causal_conv(conv, x, fill)
    assert got.shape == want.shape == (2, c, 9 - delay, conv(x).shape[3], conv(x).shape[4])
    assert (got - want).abs().max() < TOL
    if fill == "zeros" and same:
        # Zero fill at the front is the clip convolution's own padding there.
        full = conv(x)
        n = 9 - delay - pad_t
        assert (got[:, :, :n] - full[:, :, :n]).abs().max() < TOL

    # Frames before the operator's stream starts leave its state (and fill) untouched.
    late = late_start(op, x)
    assert all(o is None for o in late[:delay])
    assert (torch.cat(late[delay:], dim=2) - want).abs().max() < TOL


def test_conv_fill_only_affects_the_transient():
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 3, (5, 1, 1), padding=(2, 0, 0), groups=3, bias=False).double()
    x = torch.randn(1, 3, 8, 4, 4, dtype=torch.float64) + 1.0
    zeros = torch.cat(run_steps(ContinualConv3d(conv, "zeros"), x)[2:], dim=2)
    repl = torch.cat(run_steps(ContinualConv3d(conv, "replicate"), x)[2:], dim=2)
    # Output j sees frames j-2 .. j+2: fill matters for j < 2 only.
    assert (zeros[:, :, :2] - repl[:, :, :2]).abs().min() > 1e-6
    assert (zeros[:, :, 2:] - repl[:, :, 2:]).abs().max() < TOL


def test_conv_rejects_what_a_stream_cannot_do():
    with pytest.raises(ValueError, match="temporal stride 1"):
        ContinualConv3d(nn.Conv3d(2, 2, 3, stride=(2, 1, 1), padding=1))
    with pytest.raises(ValueError, match="padding_mode"):
        ContinualConv3d(nn.Conv3d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="fill"):
        ContinualConv3d(nn.Conv3d(2, 2, 3, padding=1), fill="mirror")
    with pytest.raises(TypeError):
        ContinualConv3d(nn.Conv2d(2, 2, 3))


def test_delay_line():
    x = torch.arange(7.0).view(1, 1, 7, 1, 1)
    line = DelayLine(2)
    outs = run_steps(line, x)
    assert outs[0] is None and outs[1] is None
    assert [o.item() for o in outs[2:]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    late = late_start(line, x)
    assert late[0] is None and late[1] is None
    assert [o.item() for o in late[2:]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert DelayLine(0).num_states == 0
    assert DelayLine(0).step(x, [], torch.tensor(0))[0] is x


def test_sliding_average_equals_avgpool():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 11, 2, 2, dtype=torch.float64)
    for window in (1, 4, 11):
        op = SlidingTemporalAverage(window)
        assert op.delay == window - 1
        outs = run_steps(op, x)
        assert all(o is None for o in outs[:window - 1])
        got = torch.cat(outs[window - 1:], dim=2)
        want = nn.AvgPool3d((window, 1, 1), stride=1)(x)
        assert (got - want).abs().max() < TOL
        got_late = torch.cat(late_start(op, x)[window - 1:], dim=2)
        assert (got_late - want).abs().max() < TOL
    assert run_steps(SlidingTemporalAverage(3), x[:, :, :2]) == [None, None]


def test_frame_se_is_the_clip_se_on_one_frame():
    torch.manual_seed(2)
    se = SE(16, 0.0625).double()
    nn.init.normal_(se.fc1.bias)
    nn.init.normal_(se.fc2.bias)
    x = torch.randn(2, 16, 5, 3, 4, dtype=torch.float64)
    op = ContinualSE(se, "frame")
    got = torch.cat(run_steps(op, x), dim=2)
    want = torch.cat([se(x[:, :, t:t + 1]) for t in range(5)], dim=2)
    assert (got - want).abs().max() < TOL
    # Not the clip-wide squeeze.
    assert (got - se(x)).abs().max() > 1e-6


def test_window_se_squeezes_the_last_frames():
    torch.manual_seed(3)
    se = SE(8, 0.0625).double()
    x = torch.randn(1, 8, 7, 3, 3, dtype=torch.float64)
    window = 3
    op = ContinualSE(se, "window", window)
    got = torch.cat(run_steps(op, x), dim=2)
    for t in range(7):
        past = x[:, :, max(0, t - window + 1):t + 1]
        want = x[:, :, t:t + 1] * se.gate(past.mean(dim=(2, 3, 4), keepdim=True))
        assert (got[:, :, t:t + 1] - want).abs().max() < TOL
    # The squeeze of a full window is the clip SE's squeeze of that window.
    assert (got[:, :, -1:] - se(x[:, :, -window:])[:, :, -1:]).abs().max() < TOL
    squeeze = WindowSqueeze(window)
    stepped = torch.cat(run_steps(squeeze, x), dim=2)
    late = torch.cat(late_start(squeeze, x), dim=2)
    assert (late - stepped).abs().max() < TOL
    # The squeeze of frame t is the mean of the frame means in its window.
    means = x.mean(dim=(3, 4), keepdim=True)
    assert (stepped[:, :, 1:2] - means[:, :, :2].mean(dim=2, keepdim=True)).abs().max() < TOL
    with pytest.raises(ValueError, match="scope"):
        ContinualSE(se, "clip")


@pytest.mark.parametrize("projection", [False, True])
def test_delayed_residual_matches_front_padded_clip_residual(projection):
    """relu(skip(x) + bn(conv3x3x3(x))) with the skip delayed by the branch's delay."""
    torch.manual_seed(4)
    c_in, c_out = (4, 6) if projection else (4, 4)
    stride = 2 if projection else 1
    branch = nn.Conv3d(c_in, c_out, 3, stride=(1, stride, stride), padding=1).double()
    skip = nn.Conv3d(c_in, c_out, 1, stride=(1, stride, stride), bias=False).double() \
        if projection else nn.Identity()
    x = torch.randn(1, c_in, 8, 6, 6, dtype=torch.float64)

    conv = ContinualConv3d(branch)
    line = DelayLine(conv.delay)
    assert line.delay == conv.delay == 1
    skips, branches = run_steps(line, skip(x)), run_steps(conv, x)
    assert [s is None for s in skips] == [b is None for b in branches]
    outs = [None if b is None else F.relu(s + b) for s, b in zip(skips, branches)]
    assert outs[0] is None
    got = torch.cat(outs[1:], dim=2)
    want = F.relu(skip(x)[:, :, :7] + causal_conv(branch, x, "zeros"))
    assert (got - want).abs().max() < TOL
    # Adding the undelayed skip would pair frame t with branch position t-1.
    wrong = F.relu(skip(x)[:, :, 1:] + causal_conv(branch, x, "zeros"))
    assert (got - wrong).abs().max() > 1e-6
