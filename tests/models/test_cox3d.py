"""CoX3D: X3D weight compatibility; the exact stream/clip equalities (P1: clip mode is X3D;
P2: a whole stream is the network with front temporal padding; P3: in steady state a step
is the unpadded network on the last receptive-field frames; P4, the negative control: it is
not stock X3D on the clip ending there); warm-up and receptive field, FLOPs per frame, and
the streaming API contract.

Numerics use X3D-S topology (26 blocks) at 32 px with random weights and randomised BN
statistics, in float64 unless stated. The oracles are clip computations written here
with explicit temporal padding (both ends / front only / none) over the model's own
modules, independent of the streaming code.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import REPO_ROOT, reference_listing
from vov3d.config import assert_and_infer_cfg, get_cfg, merge_file, merge_overrides
from vov3d.config.merge import ConfigError
from vov3d.models import build_model
from vov3d.models.cox3d import CoX3D, stream_macs_per_frame
from vov3d.models.x3d import X3D

CONFIGS = os.path.join(REPO_ROOT, "configs", "Kinetics")
F64_TOL = 1e-10


def make_cfg(size="S", model="CoX3D", overrides=()):
    cfg = get_cfg()
    merge_file(cfg, os.path.join(CONFIGS, "cox3d", f"cox3d_{size}.yaml") if size in "SML"
               else os.path.join(CONFIGS, "x3d", f"X3D_{size}.yaml"))
    merge_overrides(cfg, ["NUM_GPUS", "0", "MODEL.MODEL_NAME", model] + list(overrides))
    return assert_and_infer_cfg(cfg)


def tiny_cfg(frames=4, window=0, fill="zeros", scope="frame", model="CoX3D", crop=32):
    """X3D-S topology at a tiny crop: head pool [frames, 1, 1]."""
    return make_cfg("S", model, [
        "DATA.NUM_FRAMES", str(frames), "DATA.TRAIN_CROP_SIZE", str(crop),
        "DATA.TEST_CROP_SIZE", str(crop), "DATA.TRAIN_JITTER_SCALES", f"[{crop}, {crop + 8}]",
        "MODEL.NUM_CLASSES", "7", "COX3D.TEMPORAL_WINDOW", str(window),
        "COX3D.TEMPORAL_FILL", fill, "COX3D.SE_SCOPE", scope])


def randomise(model, seed=0):
    """Random BN statistics/affine and SE biases so that no layer is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if not p.is_floating_point():
                continue
            if name.endswith("c_bn.weight"):  # keep 26 residual additions near unit scale
                p.copy_(torch.rand(p.shape, generator=g) * 0.3 + 0.1)
            elif name.endswith("running_var") or (name.endswith("weight") and p.dim() == 1):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5)
    return model


_MODELS = {}


def tiny_model(dtype=torch.float64, **kw):
    key = (dtype, tuple(sorted(kw.items())))
    if key not in _MODELS:
        torch.manual_seed(0)
        _MODELS[key] = randomise(build_model(tiny_cfg(**kw))).to(dtype).eval()
    model = _MODELS[key]
    model.reset()
    return model


# ---------------------------------------------------------------- clip-mode oracles

def _front(x, pad, fill):
    if fill == "zeros":
        return F.pad(x, (0, 0, 0, 0, pad, 0))
    return torch.cat([x[:, :, :1].expand(-1, -1, pad, -1, -1), x], dim=2)


def _bn(m, x):
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


@torch.no_grad()
def reference(model, clip, padding, fill="zeros", se="frame", window=None, logits=True):
    """The model's weights on a clip with temporal `padding` "both" (stock X3D), "front"
    (causal, `fill`) or "none" (valid); SE squeeze over the clip or per frame. Returns
    (N, K, positions) scores (positions = temporal outputs of the head pool)."""
    def tconv(conv, x):
        p = conv.padding[0]
        if padding == "both":
            x = F.pad(x, (0, 0, 0, 0, p, p))
        elif padding == "front":
            x = _front(x, p, fill)
        return F.conv3d(x, conv.weight, None, conv.stride, (0,) + conv.padding[1:],
                        conv.dilation, conv.groups)

    def skip_for(skip, length, p):
        if padding == "both":
            return skip
        return skip[:, :, :length] if padding == "front" else skip[:, :, p:p + length]

    stem = model.s1.pathway0_stem
    x = F.relu(_bn(stem.bn, tconv(stem.conv, stem.conv_xy(clip))))
    for stage in (model.s2, model.s3, model.s4, model.s5):
        for block in stage.children():
            b = block.branch2
            y = _bn(b.b_bn, tconv(b.b, F.relu(_bn(b.a_bn, b.a(x)))))
            if hasattr(b, "se"):
                dims = (2, 3, 4) if se == "clip" else (3, 4)
                y = y * b.se.gate(y.mean(dim=dims, keepdim=True))
            y = _bn(b.c_bn, b.c(F.silu(y)))
            skip = _bn(block.branch1_bn, block.branch1(x)) if hasattr(block, "branch1") else x
            x = F.relu(skip_for(skip, y.shape[2], b.b.padding[0]) + y)
    head = model.head
    x = F.relu(_bn(head.conv_5_bn, head.conv_5(x)))
    pool = list(head.pool_size)
    pool[0] = window or pool[0]
    x = F.relu(head.lin_5(F.avg_pool3d(x, pool, stride=1)))
    x = head.projection(x.permute(0, 2, 3, 4, 1))
    if not logits:
        x = head.act(x)
    return x.mean(dim=(2, 3)).transpose(1, 2)


def stream(model, frames, logits=True):
    return [model.forward_step(frames[:, :, t], logits=logits) for t in range(frames.shape[2])]


def max_rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ---------------------------------------------------------------- (a) weights

@pytest.mark.parametrize("size", ["XS", "S", "M", "L"])
def test_state_dict_is_x3d_state_dict(size):
    cox_cfg = make_cfg(size, "CoX3D")
    x3d_cfg = make_cfg(size, "X3D")
    with torch.device("meta"):
        cox, x3d = build_model(cox_cfg), build_model(x3d_cfg)
    assert type(cox) is CoX3D and type(x3d) is X3D
    a, b = cox.state_dict(), x3d.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert "s1.pathway0_stem.conv.weight" in a and "head.projection.bias" in a
    blocks = 26 if size != "L" else 55
    assert sum(k.endswith("branch2.b.weight") for k in a) == blocks


@pytest.mark.parametrize("size,listing", [("M", "x3d_M_k400"), ("L", "x3d_L_pyslowfast_k400")])
def test_state_dict_is_the_reference_x3d_listing(size, listing):
    """The reference (PySlowFast-named) X3D checkpoint layout: same keys, order, shapes."""
    reference_entries = reference_listing(listing)["state_dict"]
    with torch.device("meta"):
        model = build_model(make_cfg(size))
    assert [[k, list(v.shape), str(v.dtype).replace("torch.", "")]
            for k, v in model.state_dict().items()] == reference_entries


def test_strict_load_both_ways_and_state_dict_untouched_by_streaming():
    torch.manual_seed(0)
    x3d = randomise(build_model(tiny_cfg(model="X3D")), seed=3).eval()
    cox = build_model(tiny_cfg(window=16, scope="window")).eval()
    assert not cox.load_state_dict(x3d.state_dict(), strict=True).missing_keys
    before = {k: v.clone() for k, v in cox.state_dict().items()}
    clip = torch.randn(2, 3, 8, 32, 32)
    cox.forward_steps(clip)
    cox.forward_step(clip[:, :, 0])
    after = cox.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    fresh = build_model(tiny_cfg(model="X3D"))
    fresh.load_state_dict(after, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], before[k]) for k in before)
    # Streaming options do not change the state dict either.
    other = build_model(tiny_cfg(window=64, fill="replicate"))
    assert list(other.state_dict()) == list(before)


# ---------------------------------------------------------------- (b) equivalences

def test_reference_both_ends_is_stock_x3d():
    model = tiny_model()
    clip = torch.randn(2, 3, 6, 32, 32, dtype=torch.float64)
    want = X3D.forward(model, [clip])
    got = reference(model, clip, "both", se="clip", logits=False).mean(dim=2)
    assert (got - want).abs().max() < F64_TOL


def test_p1_clip_mode_is_x3d():
    torch.manual_seed(1)
    x3d = randomise(build_model(tiny_cfg(model="X3D"))).double()
    cox = build_model(tiny_cfg()).double()
    cox.load_state_dict(x3d.state_dict())
    for clip in (torch.randn(2, 3, 4, 32, 32, dtype=torch.float64),
                 torch.randn(1, 3, 9, 48, 40, dtype=torch.float64)):
        x3d.eval(), cox.eval()
        assert (cox([clip]) - x3d([clip])).abs().max() < F64_TOL
    clip = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)
    x3d.train(), cox.train()
    torch.manual_seed(5)
    want = x3d([clip])
    torch.manual_seed(5)
    assert (cox([clip]) - want).abs().max() < F64_TOL


@pytest.mark.parametrize("fill", ["zeros", "replicate"])
def test_p2_whole_stream_is_front_padded_network(fill):
    model = tiny_model(fill=fill)
    delay, rf = model.delay, model.receptive_field
    assert (delay, rf) == (31, 60)
    torch.manual_seed(2)
    frames = torch.randn(1, 3, rf + 12, 32, 32, dtype=torch.float64)
    outs = stream(model, frames)
    assert all(o is None for o in outs[:delay])
    assert all(o is not None and o.shape == (1, 7) for o in outs[delay:])
    got = torch.stack(outs[delay:], dim=2)
    want = reference(model, frames, "front", fill)
    assert got.shape == want.shape
    assert (got - want).abs().max() < F64_TOL


def test_p3_steady_state_is_valid_network_on_last_r_frames_and_p4_not_stock():
    zeros, repl = tiny_model(fill="zeros"), tiny_model(fill="replicate")
    delay, rf, frames_t = zeros.delay, zeros.receptive_field, 4
    torch.manual_seed(3)
    frames = torch.randn(1, 3, rf + 6, 32, 32, dtype=torch.float64) + 0.5
    # forward_steps is stepping in chunks (tested below); one chunk keeps this fast.
    out_z = [None] * delay + list(zeros.forward_steps(frames, logits=True).unbind(2))
    out_r = [None] * delay + list(repl.forward_steps(frames, logits=True).unbind(2))
    for n in range(rf - 1, frames.shape[2]):
        want = reference(zeros, frames[:, :, n - rf + 1:n + 1], "none")
        assert want.shape[2] == 1
        assert (out_z[n] - want[:, :, 0]).abs().max() < F64_TOL
        assert (out_r[n] - want[:, :, 0]).abs().max() < F64_TOL
        # P4: not stock X3D on the NUM_FRAMES clip ending at n (nor at n - conv delay).
        for end in (n, n - (delay - frames_t + 1)):
            stock = reference(zeros, frames[:, :, end - frames_t + 1:end + 1], "both", se="clip")
            assert (out_z[n] - stock[:, :, 0]).abs().max() > 1e-6
    transient = [(out_z[n] - out_r[n]).abs().max().item() for n in range(delay, rf - 1)]
    assert max(transient) > 1e-6


def test_float32_stream_matches_reference():
    model = tiny_model(dtype=torch.float32, window=6)
    torch.manual_seed(4)
    frames = torch.randn(2, 3, model.delay + 8, 32, 32)
    got = model.forward_steps(frames, logits=True)
    want = reference(model.double(), frames.double(), "front", window=6).float()
    model.float()
    assert got.shape == want.shape == (2, 7, 8)
    assert (got - want).abs().max() < 1e-4 and max_rel(got, want) < 1e-4


def test_larger_frames_average_head_positions_and_window_se_runs():
    model = tiny_model(scope="window")
    torch.manual_seed(6)
    frames = torch.randn(1, 3, model.delay + 3, 64, 48, dtype=torch.float64)
    probs = model.forward_steps(frames)
    assert probs.shape == (1, 7, 3)
    assert torch.allclose(probs.sum(dim=1), torch.ones(1, 3, dtype=torch.float64))
    # Window SE squeezes over the last NUM_FRAMES frames: not the per-frame network.
    per_frame = reference(model, frames, "front", logits=False)
    assert (probs - per_frame).abs().max() > 1e-8


# ---------------------------------------------------------------- (c) delay and FLOPs

@pytest.mark.parametrize("size,window,delay,rf", [
    ("XS", 0, 31, 60), ("S", 0, 40, 69), ("M", 0, 43, 72), ("L", 0, 72, 130),
    ("S", 64, 91, 120), ("M", 64, 91, 120), ("L", 64, 120, 178)])
def test_warm_up_and_receptive_field(size, window, delay, rf):
    overrides = ["COX3D.TEMPORAL_WINDOW", str(window)]
    cfg = make_cfg(size, overrides=overrides) if size != "XS" else \
        make_cfg("XS", overrides=overrides + ["MODEL.ARCH", "cox3d"])
    with torch.device("meta"):
        model = build_model(cfg).eval()
    assert (model.delay, model.receptive_field) == (delay, rf)
    with pytest.raises(AttributeError):
        model.delay = 3


@pytest.mark.parametrize("size,clip_gmac,frame_gmac", [
    ("XS", 0.605, 0.153), ("S", 1.963, 0.153), ("M", 4.732, 0.298), ("L", 18.368, 1.150)])
def test_flops_per_frame_and_per_clip(size, clip_gmac, frame_gmac):
    windows = (0, 64) if size == "S" else (0,)
    for window in windows:
        cfg = make_cfg(size, overrides=["COX3D.TEMPORAL_WINDOW", str(window),
                                        "MODEL.ARCH", "cox3d"])
        crop, frames = cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.NUM_FRAMES
        with torch.device("meta"):
            model = build_model(cfg).eval()
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                model([torch.empty(1, 3, frames, crop, crop)])
        per_clip = counter.get_total_flops() / 2e9
        per_frame = stream_macs_per_frame(model, crop, crop) / 1e9
        assert abs(per_clip / clip_gmac - 1) < 0.01, per_clip
        assert abs(per_frame / frame_gmac - 1) < 0.01, per_frame
        ratio = clip_gmac / frame_gmac
        assert abs(per_clip / per_frame / ratio - 1) < 0.02


# ---------------------------------------------------------------- (d) streaming API

def test_forward_steps_equals_stacked_steps_and_continues():
    model = tiny_model()
    torch.manual_seed(7)
    frames = torch.randn(1, 3, model.delay + 9, 32, 32, dtype=torch.float64)
    stepped = torch.stack([o for o in stream(model, frames) if o is not None], dim=2)
    model.reset()
    assert model.forward_steps(frames[:, :, :model.delay]) is None
    part1 = model.forward_steps(frames[:, :, model.delay:model.delay + 4], logits=True)
    part2 = model.forward_steps(frames[:, :, model.delay + 4:], logits=True)
    assert part1.shape == (1, 7, 4) and part2.shape == (1, 7, 5)
    assert (torch.cat([part1, part2], dim=2) - stepped).abs().max() < F64_TOL
    # Probabilities by default.
    model.reset()
    probs = model.forward_steps(frames)
    assert (probs - stepped.softmax(dim=1)).abs().max() < F64_TOL


def test_reset_between_videos_and_batch_independence():
    model = tiny_model()
    delay = model.delay
    torch.manual_seed(8)
    a = torch.randn(2, 3, 40, 32, 32, dtype=torch.float64)
    b = torch.randn(2, 3, 40, 32, 32, dtype=torch.float64)
    fresh_b = model.forward_steps(b, logits=True)
    assert fresh_b.shape == (2, 7, 40 - delay)
    model.reset()
    model.forward_steps(a)
    continued = model.forward_steps(b, logits=True)  # no reset: answers at once, mixing in a
    assert continued.shape == (2, 7, 40)
    assert (continued[:, :, delay:] - fresh_b).abs().max() > 1e-6
    model.reset()
    again = stream(model, b)
    assert [o is None for o in again] == [True] * delay + [False] * (40 - delay)
    assert (torch.stack(again[delay:], dim=2) - fresh_b).abs().max() < F64_TOL
    # A batch of two streams is the two streams run one by one.
    for i in range(2):
        model.reset()
        alone = model.forward_steps(b[i:i + 1], logits=True)
        assert (alone[0] - fresh_b[i]).abs().max() < F64_TOL


def test_stream_errors_are_clear():
    model = tiny_model()
    frame = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.forward_step(frame)
    model.eval()
    with pytest.raises(ValueError, match="channels"):
        model.forward_step(torch.randn(1, 4, 32, 32, dtype=torch.float64))
    with torch.device("meta"):
        x3d_s = build_model(make_cfg("S")).eval()  # train crop 160: head pool 5 x 5
        with pytest.raises(ValueError, match="at least as large"):
            x3d_s.forward_step(torch.empty(1, 3, 128, 160))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model.forward_step(torch.randn(1, 3, 2, 32, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(N, C, T, H, W\)"):
        model.forward_steps(frame)
    model.forward_step(frame)
    with pytest.raises(ValueError, match="batch size 1 -> 2.*reset"):
        model.forward_step(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match="height 32 -> 40"):
        model.forward_step(torch.randn(1, 3, 40, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype"):
        model.forward_step(frame.float())
    model.reset()
    assert model.forward_step(torch.randn(2, 3, 40, 32, dtype=torch.float64)) is None
    with pytest.raises(ConfigError, match="COX3D.TEMPORAL_FILL"):
        build_model(tiny_cfg(fill="reflect"))
    with pytest.raises(ConfigError, match="COX3D.SE_SCOPE"):
        build_model(tiny_cfg(scope="clip"))


def test_inference_mode_and_no_autograd_state():
    model = tiny_model()
    torch.manual_seed(9)
    frames = torch.randn(1, 3, model.delay + 2, 32, 32, dtype=torch.float64)
    want = model.forward_steps(frames, logits=True)
    model.reset()
    with torch.inference_mode():
        first = model.forward_steps(frames[:, :, :-1], logits=True)
    last = model.forward_step(frames[:, :, -1], logits=True)  # grad mode switched mid-stream
    assert not last.requires_grad
    assert (torch.cat([first, last[:, :, None]], dim=2) - want).abs().max() < F64_TOL


# ---------------------------------------------------------------- (e) the functional step

def test_stream_step_is_a_pure_function_of_frame_and_state():
    model = tiny_model(window=3, scope="window")
    names = model.stream_state_names()
    state = model.initial_state(2, 32, 32)
    # The frame counter, the stem's conv cache, per block a skip delay line and a conv cache
    # (plus an SE window on the 2 + 3 + 6 + 4 even-numbered blocks, the ones with SE), the
    # head's 2-frame pool memory.
    assert len(state) == len(names) == 1 + 1 + 26 * 2 + 15 + 1
    assert names[:3] == ["step", "s1.pathway0_stem.conv", "s2.pathway0_res0.skip"]
    assert names[3:5] == ["s2.pathway0_res0.conv", "s2.pathway0_res0.se"] and names[-1] == "head.pool"
    assert state[0].dtype == torch.int64 and state[0].item() == 0
    assert all(s.shape[0] == 2 and s.dtype == torch.float64 and not s.any() for s in state[1:])
    assert state[-1].shape == (2, 432, 2, 1, 1)
    torch.manual_seed(10)
    frames = torch.randn(2, 3, model.delay + 4, 32, 32, dtype=torch.float64)
    stepped = []
    for t in range(frames.shape[2]):
        before = [s.clone() for s in state]
        scores, valid, *new = model.stream_step(frames[:, :, t], *state, logits=True)
        assert all(torch.equal(a, b) for a, b in zip(state, before))  # inputs are not modified
        again = model.stream_step(frames[:, :, t], *state, logits=True)
        assert torch.equal(again[0], scores) and all(torch.equal(a, b) for a, b in zip(again[2:], new))
        assert valid.dtype == torch.bool and bool(valid) == (t >= model.delay)
        assert new[0].item() == t + 1 and [s.shape for s in new] == [s.shape for s in state]
        stepped.append(scores if valid else None)
        state = new
    eager = stream(model, frames)
    assert [o is None for o in eager] == [o is None for o in stepped]
    assert all(torch.equal(a, b) for a, b in zip(eager[model.delay:], stepped[model.delay:]))
    with pytest.raises(ValueError, match=f"takes {len(names)} state tensors"):
        model.stream_step(frames[:, :, 0], *state[:-1])
