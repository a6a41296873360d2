"""Spec facts that decide whether reference checkpoints and reference training runs are
reproduced value for value, and that the other model tests leave open:

* seeded initialisation equals the reference build draw for draw (design/keys order);
* training mode: batch-statistic BN with momentum 0.1, dropout on the 2048-d lin_5
  features, raw logits (vov3d_x3d.md 1.1 X3DHead, 10.3 "Loss");
* eval mode: HEAD_ACT at every temporal and spatial position, then the mean;
* the head window is ceil(TRAIN_CROP_SIZE / 32), so a training clip pools to one position;
* every BN's eps and momentum; the SE width table (vov3d_x3d.md 1.1);
* whole-network functional references for CSN (incl. CSN.BN_EPS in the stem) and SEVNet.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.conftest import reference_listing
from tests.models import reference_functional as ref
from tests.models.model_helpers import model_cfg, project_cfg, randomise_bn, small_cfg
from vov3d.models import build_model
from vov3d.models.operators import SE, round_width

X3D_M = "configs/Kinetics/x3d/X3D_M_256e.yaml"
VOV3D_M = "configs/Kinetics/vov3d/vov3d_M.yaml"
FAMILIES = [(X3D_M, ref.x3d_block), (VOV3D_M, ref.vov3d_block)]
FAMILY_IDS = ["x3d", "vov3d"]


def _listing(name):
    return reference_listing(name)


def _reference_init(listing, seed, fc_init_std, zero_init_final_bn):
    """The parameters a reference build gets after torch.manual_seed(seed).

    The reference constructs its modules (each Conv3d / Linear draws its default
    uniform init once, BN draws nothing) and then runs `init_weights` over
    `model.modules()`, i.e. in state-dict order: c2_msra_fill for every Conv3d
    (Kaiming normal, fan_out, ReLU gain; zero bias), N(0, FC_INIT_STD) for the Linear,
    BN weight 1 (0 for a block's final BN `branch2.c_bn`) and bias 0.
    """
    shapes = {key: tuple(shape) for key, shape, _ in listing["state_dict"]}
    bn_layers = {k[: -len(".running_mean")] for k in shapes if k.endswith(".running_mean")}
    learned = [k for k in shapes if k.rsplit(".", 1)[0] not in bn_layers]
    torch.manual_seed(seed)
    for key in learned:  # construction-time draws: one uniform per element
        torch.empty(shapes[key]).uniform_()
    expected = {}
    for key in learned:
        t = torch.empty(shapes[key])
        if key.endswith(".bias"):
            t.zero_()
        elif t.dim() == 2:
            nn.init.normal_(t, 0.0, fc_init_std)
        else:
            nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")
        expected[key] = t
    for layer in bn_layers:
        final = zero_init_final_bn and layer.endswith(".branch2.c_bn")
        expected[layer + ".weight"] = torch.full(shapes[layer + ".weight"], 0.0 if final else 1.0)
        expected[layer + ".bias"] = torch.zeros(shapes[layer + ".bias"])
    return expected


@pytest.mark.parametrize("name", ["x3d_M_k400", "x3d_L_k400", "vov3d_M_k400", "vov3d_L_k400",
                                  "vov3d_M_v1_k400"])
def test_seeded_init_is_the_reference_init_draw_for_draw(name):
    listing = _listing(name)
    cfg = project_cfg(listing["project_config"], *listing["reference_overrides"])
    assert cfg.RESNET.ZERO_INIT_FINAL_BN and cfg.MODEL.FC_INIT_STD == 0.01
    torch.manual_seed(7)
    state = build_model(cfg).state_dict()
    expected = _reference_init(listing, 7, cfg.MODEL.FC_INIT_STD, cfg.RESNET.ZERO_INIT_FINAL_BN)
    mismatched = [k for k, v in expected.items() if not torch.equal(state[k], v)]
    assert not mismatched, mismatched[:5]
    for key, value in state.items():  # running statistics keep PyTorch's defaults
        if key.endswith("running_mean") or key.endswith("num_batches_tracked"):
            assert torch.count_nonzero(value) == 0, key
        elif key.endswith("running_var"):
            assert torch.all(value == 1), key


def _training_bn(buffers, momentum=0.1, eps=1e-5):
    """Functional train-mode BN: batch statistics, running stats updated in `buffers`."""

    def bn(x, sd, p):
        return F.batch_norm(x, buffers[p + ".running_mean"], buffers[p + ".running_var"],
                            sd[p + ".weight"], sd[p + ".bias"], True, momentum, eps)

    return bn


def _training_head(x, sd, pool, bn, seed, dropout_rate):
    x = F.relu(bn(F.conv3d(x, sd["head.conv_5.weight"]), sd, "head.conv_5_bn"))
    x = F.relu(F.conv3d(F.avg_pool3d(x, pool, stride=1), sd["head.lin_5.weight"]))
    x = x.permute(0, 2, 3, 4, 1)
    torch.manual_seed(seed)
    x = F.dropout(x, dropout_rate, training=True)
    x = F.linear(x, sd["head.projection.weight"], sd["head.projection.bias"])
    return x.reshape(x.shape[0], -1)


@pytest.mark.parametrize("relpath,block_fn", FAMILIES, ids=FAMILY_IDS)
def test_training_step_matches_reference_bn_momentum_and_dropout(relpath, block_fn, monkeypatch):
    torch.manual_seed(0)
    model = ref.randomize_(build_model(small_cfg(relpath)).double()).train()
    assert model.head.dropout.p == 0.5
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    buffers = {k: v.clone() for k, v in sd.items() if k.endswith(("running_mean", "running_var"))}
    x = torch.randn(3, 3, 4, 32, 32, dtype=torch.float64)

    torch.manual_seed(11)  # the only random op of the forward is the head's dropout
    out = model([x])

    bn = _training_bn(buffers)
    monkeypatch.setattr(ref, "bn", bn)
    h = ref.stem(x, sd)
    for s in range(2, 6):
        i = 0
        while f"s{s}.pathway0_res{i}.branch2.c.weight" in sd:
            h = block_fn(h, sd, f"s{s}.pathway0_res{i}", 2 if i == 0 else 1)
            i += 1
    expected = _training_head(h, sd, [4, 1, 1], bn, 11, 0.5)

    assert out.shape == (3, 400)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    state = model.state_dict()
    for key, value in buffers.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=1e-12, msg=key)
        tracked = key.rsplit(".", 1)[0] + ".num_batches_tracked"
        assert state[tracked].item() == 1, tracked


@pytest.mark.parametrize("relpath,block_fn", FAMILIES, ids=FAMILY_IDS)
def test_eval_averages_softmax_over_temporal_and_spatial_positions(relpath, block_fn):
    torch.manual_seed(0)
    model = ref.randomize_(build_model(small_cfg(relpath)).double()).eval()
    # 6 frames of 64 x 96 px against a 4 x 32 x 32 training clip: 3 x 2 x 3 head positions.
    x = torch.randn(2, 3, 6, 64, 96, dtype=torch.float64)
    logits = []
    hook = model.head.projection.register_forward_hook(lambda m, i, o: logits.append(o))
    with torch.no_grad():
        out = model(x)
    hook.remove()
    assert logits[0].shape == (2, 3, 2, 3, 400)
    torch.testing.assert_close(out, torch.softmax(logits[0], dim=-1).mean(dim=(1, 2, 3)),
                               rtol=0, atol=1e-14)
    torch.testing.assert_close(out, ref.network(x, model.state_dict(), block_fn, [4, 1, 1]),
                               rtol=0, atol=1e-12)


def test_eval_sigmoid_head_and_no_dropout_module_at_rate_zero():
    torch.manual_seed(0)
    cfg = small_cfg(X3D_M, 4, 32, 64, "MODEL.HEAD_ACT", "sigmoid", "MODEL.DROPOUT_RATE", "0.0")
    model = ref.randomize_(build_model(cfg).double())
    assert not hasattr(model.head, "dropout")
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    x = torch.randn(1, 3, 4, 64, 64, dtype=torch.float64)
    logits = []
    hook = model.head.projection.register_forward_hook(lambda m, i, o: logits.append(o))
    with torch.no_grad():
        probs = model.eval()(x)
        raw = model.train()(x)  # BN now uses batch statistics: only check the head contract
    hook.remove()
    torch.testing.assert_close(probs, torch.sigmoid(logits[0]).mean(dim=(1, 2, 3)), rtol=0, atol=1e-14)
    torch.testing.assert_close(raw, logits[1].mean(dim=(1, 2, 3)), rtol=0, atol=0)


@pytest.mark.parametrize("relpath,block_fn", FAMILIES, ids=FAMILY_IDS)
def test_head_window_rounds_up_so_training_clips_pool_to_one_position(relpath, block_fn):
    # 48 px: the final map is ceil(48 / 32) = 2 wide, and so is the window (floor would be 1).
    torch.manual_seed(0)
    model = ref.randomize_(build_model(small_cfg(relpath, 4, 48, 64)).double()).train()
    assert list(model.head.avg_pool.kernel_size) == [4, 2, 2]
    for m in model.modules():  # running statistics, so train and eval differ only in the head
        if isinstance(m, nn.BatchNorm3d):
            m.eval()
    model.head.dropout.p = 0.0
    x = torch.randn(2, 3, 4, 48, 48, dtype=torch.float64)
    out = model(x)
    torch.testing.assert_close(out, ref.network(x, model.state_dict(), block_fn, [4, 2, 2], training=True),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("model_name,group,values,eps", [
    ("X3D", "X3D", {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 0.5, "BOTTLENECK_FACTOR": 2.25}, 1e-5),
    ("CoX3D", "X3D", {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 0.5, "BOTTLENECK_FACTOR": 2.25}, 1e-5),
    ("VoV3D", "VOV3D", {"DEPTH": 31, "INNER_CH": 16, "TRANS_FUNC": "t_osa_2plus1_transform"}, 1e-5),
    ("SEVNet", "SEVNET", {"GROUP_WIDTH": 4}, 1e-5),
    ("CSN", "CSN", {"DEPTH": 50, "BN_EPS": 1e-3}, 1e-3),
])
def test_every_bn_has_the_reference_eps_and_momentum(model_name, group, values, eps):
    cfg = model_cfg(model_name, 10, 8, 32, group, values)
    if model_name in ("X3D", "CoX3D"):
        cfg.RESNET.TRANS_FUNC = "x3d_transform"
    cfg.DATA.INPUT_CHANNEL_NUM = [3]
    with torch.device("meta"):
        model = build_model(cfg)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns
    for m in bns:
        assert type(m) is nn.BatchNorm3d
        assert (m.eps, m.momentum, m.affine, m.track_running_stats) == (eps, 0.1, True, True)


@pytest.mark.parametrize("channels,expected", [(40, 8), (48, 8), (54, 8), (80, 8), (96, 8), (108, 8),
                                               (160, 16), (192, 16), (216, 16), (320, 24), (384, 24),
                                               (432, 32)])
def test_se_width_table(channels, expected):
    se = SE(channels, 0.0625)
    assert (se.fc1.in_channels, se.fc1.out_channels, se.fc2.out_channels) == (channels, expected, channels)
    assert se.fc1.bias is not None and se.fc2.bias is not None
    assert isinstance(se.fc1_act, nn.ReLU)
    assert round_width(channels, 0.0625) == expected


def _bn_eval(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _csn_reference(model, x):
    """csn.md 1-3: stem conv 3x7x7 / BN / ReLU / max-pool 1x3x3, bottlenecks whose depthwise
    conv and shortcut both stride (2,2,2) in the first block of res3-res5, then the head."""
    stem = model.s1.pathway0_stem
    x = F.relu(_bn_eval(F.conv3d(x, stem.conv.weight, stride=(1, 2, 2), padding=(1, 3, 3)), stem.bn))
    x = F.max_pool3d(x, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    for n in range(2, 6):
        for i, block in enumerate(getattr(model, f"s{n}").children()):
            stride = 2 if (i == 0 and n > 2) else 1
            b = block.branch2
            y = F.relu(_bn_eval(F.conv3d(x, b.a.weight), b.a_bn))
            if hasattr(b, "b_pw"):
                y = _bn_eval(F.conv3d(y, b.b_pw.weight), b.b_pw_bn)
            y = F.relu(_bn_eval(F.conv3d(y, b.b.weight, stride=stride, padding=1, groups=y.shape[1]),
                                b.b_bn))
            y = _bn_eval(F.conv3d(y, b.c.weight), b.c_bn)
            skip = (_bn_eval(F.conv3d(x, block.branch1.weight, stride=stride), block.branch1_bn)
                    if hasattr(block, "branch1") else x)
            x = F.relu(skip + y)
    return x


def _positions_softmax_mean(x, pool, projection):
    x = F.avg_pool3d(x, pool, stride=1).permute(0, 2, 3, 4, 1)
    return torch.softmax(F.linear(x, projection.weight, projection.bias), dim=-1).mean(dim=(1, 2, 3))


def test_csn_network_matches_functional_reference_with_its_bn_eps():
    torch.manual_seed(0)
    cfg = model_cfg("CSN", 5, 8, 32, "CSN", {"DEPTH": 50, "BLOCK": "ir", "BN_EPS": 1e-3})
    model = build_model(cfg).double().eval()
    randomise_bn(model)
    assert model.s1.pathway0_stem.bn.eps == 1e-3
    x = torch.randn(1, 3, 8, 64, 64, dtype=torch.float64)  # 2 x 2 head positions
    with torch.no_grad():
        out = model(x)
        feats = _csn_reference(model, x)
    assert feats.shape == (1, 2048, 1, 2, 2)
    torch.testing.assert_close(out, _positions_softmax_mean(feats, (1, 1, 1), model.head.projection),
                               rtol=0, atol=1e-12)


def test_sevnet_network_matches_functional_reference():
    torch.manual_seed(0)
    cfg = model_cfg("SEVNet", 5, 4, 64, "SEVNET", {"GROUP_WIDTH": 4, "SE": True})
    model = build_model(cfg).double().eval()
    randomise_bn(model)

    def cbr(x, conv, bn, **kw):
        return F.relu(_bn_eval(F.conv3d(x, conv.weight, **kw), bn))

    def branch(x, b, stride):
        y = cbr(x, b.a, b.a_bn)
        y = cbr(y, b.b, b.b_bn, stride=stride, padding=(0, 1, 1), groups=y.shape[1] // 4)
        y = cbr(y, b.c, b.c_bn, padding=(1, 0, 0))
        s = F.relu(F.conv3d(y.mean(dim=(2, 3, 4), keepdim=True), b.se.fc1.weight, b.se.fc1.bias))
        return y * torch.sigmoid(F.conv3d(s, b.se.fc2.weight, b.se.fc2.bias))

    x = torch.randn(2, 3, 4, 64, 64, dtype=torch.float64)
    stem = model.s1.pathway0_stem  # 1x7x7 (stride 2) -> BN -> ReLU -> dense 3x1x1 -> BN -> ReLU
    h = cbr(x, stem.conv_xy, stem.bn_xy, stride=(1, 2, 2), padding=(0, 3, 3))
    h = cbr(h, stem.conv, stem.bn, padding=(1, 0, 0))
    for n in range(2, 6):
        for i, block in enumerate(getattr(model, f"s{n}").children()):
            if i == 0:  # avg-pool (padding counted) -> 1x1x1 -> BN -> ReLU, concatenated first
                pooled = F.avg_pool3d(h, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
                h = torch.cat([cbr(pooled, block.branch1, block.branch1_bn),
                               branch(h, block.branch2, (1, 2, 2))], dim=1)
            else:
                h = h + branch(h, block.branch2, 1)
    assert h.shape == (2, 256, 4, 2, 2)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, _positions_softmax_mean(h, (4, 2, 2), model.head.projection),
                               rtol=0, atol=1e-12)
