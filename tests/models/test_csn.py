"""CSN: exact sizes of all six published variants, block layout, head window, frozen BN."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.models.model_helpers import build_on_meta, model_cfg, project_cfg, randomise_bn
from vov3d.config import ConfigError
from vov3d.models import build_model
from vov3d.models.complexity import conv_linear_gflops, count_params
from vov3d.models.csn import CSN, CSNBranch, csn_stage_specs
from vov3d.models.resblock import ResBlock

# The published sizes: exact parameters (400 classes), conv+fc GFLOPs at 32x224^2 and the
# number of state-dict entries / parameter tensors.
SPEC = {
    ("ir", 50): (13_131_152, 42.31, 320, 161),
    ("ip", 50): (14_396_176, 47.65, 416, 209),
    ("ir", 101): (22_213_776, 56.47, 626, 314),
    ("ip", 101): (24_601_616, 63.56, 824, 413),
    ("ir", 152): (29_703_568, 74.05, 932, 467),
    ("ip", 152): (33_016_592, 83.29, 1232, 617),
}


def csn_cfg(depth=50, block="ir", num_frames=32, crop=224, num_classes=400, **overrides):
    return model_cfg("CSN", num_classes, num_frames, crop, "CSN", {"DEPTH": depth, "BLOCK": block},
                     **overrides)


def meta_csn(**kwargs) -> CSN:
    return build_on_meta(csn_cfg(**kwargs))


@pytest.mark.parametrize("block,depth", sorted(SPEC))
def test_size_matches_the_published_table(block, depth):
    params, gflops, state_entries, param_tensors = SPEC[(block, depth)]
    model = meta_csn(depth=depth, block=block)
    assert count_params(model) == params
    assert len(model.state_dict()) == state_entries
    assert len(list(model.parameters())) == param_tensors
    assert conv_linear_gflops(model, (1, 3, 32, 224, 224)) == pytest.approx(gflops, rel=5e-3)


def test_other_inputs_and_class_counts():
    ir50 = meta_csn(depth=50)
    assert conv_linear_gflops(ir50, (1, 3, 32, 256, 256)) == pytest.approx(55.26, rel=5e-3)
    ir50_8 = meta_csn(depth=50, num_frames=8)
    assert conv_linear_gflops(ir50_8, (1, 3, 8, 224, 224)) == pytest.approx(10.58, rel=5e-3)
    assert count_params(meta_csn(depth=152, num_classes=174)) == 29_240_494


def test_stage_shapes_and_stride_placement():
    model = meta_csn(depth=50, block="ip")
    shapes = {}
    for n in range(2, 6):
        getattr(model, f"s{n}").register_forward_hook(
            lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
    model.eval()(torch.empty(1, 3, 32, 224, 224, device="meta"))
    assert shapes == {2: (256, 32, 56, 56), 3: (512, 16, 28, 28), 4: (1024, 8, 14, 14),
                      5: (2048, 4, 7, 7)}
    for n in range(2, 6):
        for i, block in enumerate(getattr(model, f"s{n}").children()):
            stride = (2, 2, 2) if (i == 0 and n > 2) else (1, 1, 1)
            b2 = block.branch2
            # The stride sits on the depthwise conv and the shortcut, never on a 1x1x1 conv.
            assert b2.b.stride == stride and b2.b.groups == b2.b.in_channels == b2.b.out_channels
            assert b2.a.stride == b2.b_pw.stride == b2.c.stride == (1, 1, 1)
            assert hasattr(block, "branch1") == (i == 0)
            if i == 0:
                assert block.branch1.stride == stride
    assert model.head.pathway0_avgpool.kernel_size == [4, 7, 7]


def test_ir_and_ip_differ_only_by_the_pointwise_conv():
    ir = set(meta_csn(block="ir").state_dict())
    ip = set(meta_csn(block="ip").state_dict())
    assert ir < ip
    extra = ip - ir
    assert extra and all(".branch2.b_pw." in k or ".branch2.b_pw_bn." in k for k in extra)
    assert len(extra) == 16 * 6  # one conv weight + 5 BN entries in each of the 16 blocks


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def csn_bottleneck(dim_in, dim_inner, dim_out, stride, ip, bn_eps):
    """A CSN bottleneck as the stages build it: a ResBlock around a CSNBranch."""
    return ResBlock(dim_in, dim_out, stride, CSNBranch(dim_in, dim_inner, dim_out, stride, ip, bn_eps),
                    bn_eps=bn_eps)


@pytest.mark.parametrize("ip", [False, True])
def test_bottleneck_matches_functional_reference(ip):
    torch.manual_seed(0)
    block = csn_bottleneck(8, 4, 16, (2, 2, 2), ip, bn_eps=1e-3).double().eval()
    assert block.branch1.stride == (2, 2, 2) and block.branch1_bn.eps == 1e-3
    randomise_bn(block)
    x = torch.randn(2, 8, 5, 6, 7, dtype=torch.float64)
    b2 = block.branch2
    y = F.relu(_bn(F.conv3d(x, b2.a.weight), b2.a_bn))
    if ip:  # no ReLU between the pointwise conv and the depthwise conv
        y = _bn(F.conv3d(y, b2.b_pw.weight), b2.b_pw_bn)
    y = F.relu(_bn(F.conv3d(y, b2.b.weight, stride=2, padding=1, groups=4), b2.b_bn))
    y = _bn(F.conv3d(y, b2.c.weight), b2.c_bn)
    shortcut = _bn(F.conv3d(x, block.branch1.weight, stride=2), block.branch1_bn)
    expected = F.relu(shortcut + y)
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, 16, 3, 3, 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def _csn_reference(model, x):
    """Stem conv 3x7x7 / BN / ReLU / max-pool 1x3x3, bottlenecks whose depthwise conv and
    shortcut both stride (2,2,2) in the first block of res3-res5, then the head."""
    stem = model.s1.pathway0_stem
    x = F.relu(_bn(F.conv3d(x, stem.conv.weight, stride=(1, 2, 2), padding=(1, 3, 3)), stem.bn))
    x = F.max_pool3d(x, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    for n in range(2, 6):
        for i, block in enumerate(getattr(model, f"s{n}").children()):
            stride = 2 if (i == 0 and n > 2) else 1
            b = block.branch2
            y = F.relu(_bn(F.conv3d(x, b.a.weight), b.a_bn))
            if hasattr(b, "b_pw"):
                y = _bn(F.conv3d(y, b.b_pw.weight), b.b_pw_bn)
            y = F.relu(_bn(F.conv3d(y, b.b.weight, stride=stride, padding=1, groups=y.shape[1]),
                           b.b_bn))
            y = _bn(F.conv3d(y, b.c.weight), b.c_bn)
            skip = (_bn(F.conv3d(x, block.branch1.weight, stride=stride), block.branch1_bn)
                    if hasattr(block, "branch1") else x)
            x = F.relu(skip + y)
    return x


def _positions_softmax_mean(x, pool, projection):
    x = F.avg_pool3d(x, pool, stride=1).permute(0, 2, 3, 4, 1)
    return torch.softmax(F.linear(x, projection.weight, projection.bias), dim=-1).mean(dim=(1, 2, 3))


def test_network_matches_functional_reference_with_its_bn_eps():
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


def test_identity_block_adds_its_input():
    torch.manual_seed(0)
    block = csn_bottleneck(16, 4, 16, (1, 1, 1), False, bn_eps=1e-5).double().eval()
    assert not hasattr(block, "branch1")
    for p in block.branch2.c_bn.parameters():
        nn.init.zeros_(p)
    x = torch.randn(1, 16, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(x))


def test_forward_contract_and_larger_test_crop():
    torch.manual_seed(0)
    model = build_model(csn_cfg(depth=50, num_frames=8, crop=64, num_classes=7))
    x = torch.randn(2, 3, 8, 64, 64)
    model.train()
    logits = model([x])
    assert logits.shape == (2, 7)
    model.eval()
    with torch.no_grad():
        probs = model(x)
        big = model(torch.randn(1, 3, 8, 96, 96))  # 3x3 final map -> 2x2 positions averaged
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)
    assert big.shape == (1, 7) and torch.allclose(big.sum(1), torch.ones(1), atol=1e-5)
    # Short clips still work: the head window is ceil(T / 8).
    short = build_model(csn_cfg(depth=50, num_frames=4, crop=32, num_classes=3)).eval()
    assert short.head.pathway0_avgpool.kernel_size == [1, 1, 1]
    with torch.no_grad():
        assert short(torch.randn(1, 3, 4, 32, 32)).shape == (1, 3)


def test_init_follows_the_framework_contract():
    torch.manual_seed(0)
    model = build_model(csn_cfg(depth=50, RESNET__ZERO_INIT_FINAL_BN=True, MODEL__FC_INIT_STD=0.02))
    block = model.s3.pathway0_res1
    assert torch.count_nonzero(block.branch2.c_bn.weight) == 0
    assert torch.all(block.branch2.b_bn.weight == 1) and torch.all(block.branch2.a_bn.weight == 1)
    assert torch.all(model.s3.pathway0_res0.branch1_bn.weight == 1)
    w = model.head.projection.weight
    assert abs(w.std().item() - 0.02) < 0.002 and torch.count_nonzero(model.head.projection.bias) == 0
    conv = model.s4.pathway0_res0.branch2.a  # fan_out = 256 outputs x 1 -> std sqrt(2 / 256)
    assert abs(conv.weight.std().item() - (2 / 256) ** 0.5) < 0.005


def test_frozen_bn_survives_train_and_freezes_affine():
    torch.manual_seed(0)
    model = build_model(csn_cfg(depth=50, num_frames=4, crop=32, MODEL__FROZEN_BN=True,
                                BN__FROZEN_AFFINE=True))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    for _ in range(2):
        model.eval()
        model.train()
        assert model.training and not any(bn.training for bn in bns)
        assert model.head.training
    before = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns))
    assert all(not p.requires_grad and p.grad is None for bn in bns for p in bn.parameters())
    assert model.s2.pathway0_res0.branch2.a.weight.grad is not None

    stats_only = build_model(csn_cfg(depth=50, MODEL__FROZEN_BN=True))
    assert not any(m.training for m in stats_only.modules() if isinstance(m, nn.BatchNorm3d))
    assert all(p.requires_grad for p in stats_only.parameters())


@pytest.mark.parametrize("overrides,needle", [
    ({"CSN__DEPTH": 34}, r"CSN\.DEPTH is 34; expected one of \[50, 101, 152\]"),
    ({"CSN__BLOCK": "dw"}, r"CSN\.BLOCK is 'dw'; expected one of \['ir', 'ip'\]"),
    ({"MODEL__DROPCONNECT_RATE": 0.2}, r"MODEL\.DROPCONNECT_RATE is 0\.2; CSN has no drop-connect, expected 0\.0"),
])
def test_bad_config_is_named(overrides, needle):
    cfg = csn_cfg()
    for key, value in overrides.items():
        group, name = key.split("__")
        cfg[group][name] = value
    with pytest.raises(ConfigError, match=needle):
        with torch.device("meta"):
            CSN(cfg)


def test_stage_specs():
    stem_dim, specs = csn_stage_specs(csn_cfg(depth=101, block="ip", CSN__BN_EPS=1e-3))
    assert stem_dim == 64
    assert [(s.depth, s.dim_in, s.dim_inner, s.dim_out, s.stride) for s in specs] == [
        (3, 64, 64, 256, (1, 1, 1)), (4, 256, 128, 512, (2, 2, 2)),
        (23, 512, 256, 1024, (2, 2, 2)), (3, 1024, 512, 2048, (2, 2, 2))]
    assert all(s.interaction_preserved and s.bn_eps == 1e-3 and s.drop_connect_rate == 0.0
               for s in specs)


CONFIGS = {  # config -> (depth, block, classes, exact params)
    "Kinetics/csn/ircsn_r50_32x2.yaml": (50, "ir", 400, 13_131_152),
    "Kinetics/csn/ircsn_r101_32x2.yaml": (101, "ir", 400, 22_213_776),
    "Kinetics/csn/ircsn_r152_32x2.yaml": (152, "ir", 400, 29_703_568),
    "Kinetics/csn/ipcsn_r50_32x2.yaml": (50, "ip", 400, 14_396_176),
    "Kinetics/csn/ipcsn_r101_32x2.yaml": (101, "ip", 400, 24_601_616),
    "Kinetics/csn/ipcsn_r152_32x2.yaml": (152, "ip", 400, 33_016_592),
    "SSv2/csn/ircsn_r152.yaml": (152, "ir", 174, 29_240_494),
}


@pytest.mark.parametrize("relpath", sorted(CONFIGS))
def test_configs_build_the_intended_model(relpath):
    depth, block, classes, params = CONFIGS[relpath]
    cfg = project_cfg(os.path.join("configs", relpath))
    assert (cfg.MODEL.MODEL_NAME, cfg.MODEL.ARCH, cfg.CSN.DEPTH, cfg.CSN.BLOCK) == ("CSN", "csn", depth, block)
    assert (cfg.MODEL.NUM_CLASSES, cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE) == (classes, 32, 224)
    if relpath.startswith("Kinetics"):  # PySlowFast's CSN_32x2_R101 recipe
        assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.WARMUP_EPOCHS) == (0.1, 196, 34.0)
        assert (cfg.DATA.SAMPLING_RATE, cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS) == (2, 10, 3)
        assert cfg.CSN.BN_EPS == 1e-5 and cfg.RESNET.ZERO_INIT_FINAL_BN
    else:  # fine-tuning mmaction2 weights: their BN epsilon, frozen BN
        assert cfg.CSN.BN_EPS == 1e-3 and cfg.MODEL.FROZEN_BN and cfg.BN.FROZEN_AFFINE
        assert cfg.SOLVER.BASE_LR == pytest.approx(5e-4 * 64 / 96)
    with torch.device("meta"):
        assert count_params(build_model(cfg)) == params
