"""X3D: block and whole-network numerics against a functional reference, structure,
init, head behaviour, round trip, config handling."""
import pytest
import torch

from tests.models import reference_functional as ref
from tests.models.model_helpers import small_cfg
from vov3d.config import ConfigError
from vov3d.models import build_model
from vov3d.models.resblock import ResBlock
from vov3d.models.x3d import X3DBottleneck, x3d_stage_specs

X3D_M = "configs/Kinetics/x3d/X3D_M_256e.yaml"


@pytest.fixture(scope="module")
def x3d_m64():
    """X3D-M at 4 x 32^2 in float64 with random weights and statistics, eval mode."""
    torch.manual_seed(0)
    model = build_model(small_cfg(X3D_M)).double()
    return ref.randomize_(model).eval()


@pytest.mark.parametrize("stride,dim_in,use_se", [(2, 8, True), (1, 16, False), (1, 16, True)])
def test_block_matches_functional_reference(stride, dim_in, use_se):
    torch.manual_seed(0)
    block = ResBlock(dim_in, 16, (1, stride, stride),
                     X3DBottleneck(dim_in, 16, 36, stride, use_se=use_se))
    block = ref.randomize_(block.double()).eval()
    assert hasattr(block, "branch1") == (stride != 1 or dim_in != 16)
    assert hasattr(block.branch2, "se") == use_se
    x = torch.randn(2, dim_in, 4, 10, 10, dtype=torch.float64)
    sd = {"blk." + k: v for k, v in block.state_dict().items()}
    torch.testing.assert_close(block(x), ref.x3d_block(x, sd, "blk", stride), rtol=0, atol=1e-12)


def test_network_matches_functional_reference_at_train_and_test_crop(x3d_m64):
    sd = x3d_m64.state_dict()
    for side in (32, 64):  # 64: the 1x1 window leaves 2x2 positions, averaged after softmax
        x = torch.randn(2, 3, 4, side, side, dtype=torch.float64)
        out = x3d_m64(x)
        torch.testing.assert_close(out, ref.network(x, sd, ref.x3d_block, [4, 1, 1]),
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(out.sum(1), torch.ones(2, dtype=torch.float64))


def test_training_returns_logits_matching_reference(x3d_m64):
    x = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)
    x3d_m64.train()
    # Keep BN on running statistics and switch dropout off: the only differences left
    # between train and eval mode are then in the head (logits, no softmax).
    for m in x3d_m64.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.eval()
    x3d_m64.head.dropout.p = 0.0
    try:
        out = x3d_m64([x])
    finally:
        x3d_m64.head.dropout.p = 0.5
        x3d_m64.eval()
    expected = ref.network(x, x3d_m64.state_dict(), ref.x3d_block, [4, 1, 1], training=True)
    assert out.shape == (2, 400)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert not torch.allclose(out.sum(1), torch.ones(2, dtype=torch.float64))


def test_eval_head_averages_softmax_over_positions(x3d_m64):
    x = torch.randn(1, 3, 4, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        feats = x3d_m64.s5(x3d_m64.s4(x3d_m64.s3(x3d_m64.s2(x3d_m64.s1(x)))))
        h = x3d_m64.head
        pooled = h.lin_5_relu(h.lin_5(h.avg_pool(h.conv_5_relu(h.conv_5_bn(h.conv_5(feats))))))
        assert pooled.shape[2:] == (1, 2, 2)
        probs = [torch.softmax(h.projection(pooled[0, :, 0, i, j]), 0) for i in range(2) for j in range(2)]
        torch.testing.assert_close(x3d_m64(x)[0], torch.stack(probs).mean(0), rtol=0, atol=1e-14)


def test_input_list_is_not_modified_and_channels_last_agrees(x3d_m64):
    x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    inputs = [x]
    out = x3d_m64(inputs)
    assert inputs[0] is x
    cl = x3d_m64.to(memory_format=torch.channels_last_3d)
    try:
        out_cl = cl(x.to(memory_format=torch.channels_last_3d))
    finally:
        x3d_m64.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(out_cl, out, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="one clip"):
        x3d_m64([x, x])
    with pytest.raises(ValueError, match="smaller than the head's pooling window"):
        x3d_m64(torch.randn(1, 3, 2, 32, 32, dtype=torch.float64))


def test_structure_se_on_even_blocks_and_projection_on_block0():
    with torch.device("meta"):
        model = build_model(small_cfg(X3D_M))
    for s, depth in zip(range(2, 6), (3, 5, 11, 7)):
        stage = getattr(model, f"s{s}")
        blocks = list(stage.children())
        assert len(blocks) == depth
        for i, block in enumerate(blocks):
            assert hasattr(block.branch2, "se") == (i % 2 == 0)
            assert hasattr(block, "branch1") == (i == 0)
            assert block.branch2.b.stride == ((1, 2, 2) if i == 0 else (1, 1, 1))
            assert block.branch2.b.groups == block.branch2.b.in_channels
    stem_dim, specs = x3d_stage_specs(small_cfg(X3D_M))
    assert stem_dim == 24
    assert [(s.dim_out, s.dim_inner) for s in specs] == [(24, 54), (48, 108), (96, 216), (192, 432)]


def test_init_statistics_and_zero_init_final_bn():
    torch.manual_seed(0)
    model = build_model(small_cfg(X3D_M))
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            expected = 0.0 if name.endswith("branch2.c_bn") else 1.0
            assert torch.all(m.weight == expected), name
            assert torch.all(m.bias == 0), name
        if name.endswith("se.fc1") or name.endswith("se.fc2"):
            assert torch.all(m.bias == 0)
    w = model.head.lin_5.weight  # fan_out = 2048
    assert abs(w.std().item() - (2 / 2048) ** 0.5) < 0.02 * (2 / 2048) ** 0.5
    w = model.s5.pathway0_res0.branch2.b.weight  # depthwise 3x3x3: fan_out = 432 * 27
    assert abs(w.std().item() - (2 / (432 * 27)) ** 0.5) < 0.05 * (2 / (432 * 27)) ** 0.5
    p = model.head.projection
    assert abs(p.weight.std().item() - 0.01) < 0.0005 and torch.all(p.bias == 0)

    plain = build_model(small_cfg(X3D_M, 4, 32, 64, "RESNET.ZERO_INIT_FINAL_BN", "False"))
    assert all(torch.all(m.weight == 1) for m in plain.modules() if isinstance(m, torch.nn.BatchNorm3d))


def test_strict_round_trip(x3d_m64):
    torch.manual_seed(1)
    other = build_model(small_cfg(X3D_M)).double().eval()
    other.load_state_dict(x3d_m64.state_dict(), strict=True)
    x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    assert torch.equal(other(x), x3d_m64(x))


def test_drop_connect_only_in_training():
    torch.manual_seed(0)
    block = ResBlock(8, 8, (1, 1, 1), X3DBottleneck(8, 8, 16, 1), drop_connect_rate=0.5)
    ref.randomize_(block)
    x = torch.randn(64, 8, 2, 4, 4)
    block.eval()
    full = block(x)
    block.train()
    block.branch2.eval()  # keep BN deterministic; only the drop mask is random
    dropped = block(x)
    kept_only_shortcut = [torch.equal(dropped[i], torch.relu(x[i])) for i in range(64)]
    assert 10 < sum(kept_only_shortcut) < 54
    f = block.branch2(x)
    for i in range(64):
        if not kept_only_shortcut[i]:
            torch.testing.assert_close(dropped[i], torch.relu(x[i] + 2 * f[i]))
    assert not torch.equal(full, dropped)


def test_model_reads_drop_connect_rate_per_stage():
    cfg = small_cfg(X3D_M, 4, 32, 64, "MODEL.DROPCONNECT_RATE", "0.5")
    _, specs = x3d_stage_specs(cfg)
    assert [s.drop_connect_rate for s in specs] == pytest.approx([0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize("key,value,match", [
    ("RESNET.TRANS_FUNC", "bottleneck_transform", "RESNET.TRANS_FUNC"),
    ("DATA.INPUT_CHANNEL_NUM", "[3, 3]", "DATA.INPUT_CHANNEL_NUM"),
    ("NONLOCAL.LOCATION", "[[[0]], [[]], [[]], [[]]]", "NONLOCAL.LOCATION"),
    ("MODEL.ARCH", "slowfast", "MODEL.ARCH"),
])
def test_config_errors_name_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        with torch.device("meta"):
            build_model(small_cfg(X3D_M, 4, 32, 64, key, value))


def test_dilation_stride_1x1_and_bn_lin5_options():
    cfg = small_cfg(X3D_M, 4, 32, 64, "RESNET.SPATIAL_DILATIONS", "[[1], [1], [2], [2]]",
                    "RESNET.STRIDE_1X1", "True", "X3D.BN_LIN5", "True")
    model = build_model(cfg).eval()
    b = model.s4.pathway0_res1.branch2
    assert b.b.dilation == (1, 2, 2) and b.b.padding == (1, 2, 2)
    assert model.s3.pathway0_res0.branch2.a.stride == (1, 2, 2)
    assert model.s3.pathway0_res0.branch2.b.stride == (1, 1, 1)
    assert "head.lin_5_bn.running_var" in model.state_dict()
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 400)


def test_scale_res2_and_full_3x3x3_options():
    cfg = small_cfg(X3D_M, 4, 32, 64, "X3D.SCALE_RES2", "True", "X3D.CHANNELWISE_3x3x3", "False")
    stem_dim, specs = x3d_stage_specs(cfg)
    assert stem_dim == 24 and [s.dim_out for s in specs] == [48, 96, 192, 384]
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.s2.pathway0_res0.branch2.b.groups == 1
    assert model.s2.pathway0_res0.branch2.b.weight.shape == (108, 108, 3, 3, 3)
