"""SEVNet: the paper's sizes, the spec's exact counts, module layout and a functional check."""
import os
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.models.model_helpers import build_on_meta, model_cfg, project_cfg, randomise_bn
from vov3d.config import ConfigError
from vov3d.models import build_model
from vov3d.models.complexity import conv_linear_gflops, count_params
from vov3d.models.resblock import ResBlock
from vov3d.models.sevnet import SEVBranch, SEVDownsampleModule, SEVNet, sevnet_stage_specs


def sev_cfg(g=8, frames=16, classes=174, crop=224, **overrides):
    return model_cfg("SEVNet", classes, frames, crop, "SEVNET", {"GROUP_WIDTH": g}, **overrides)


def meta_sevnet(**kwargs) -> SEVNet:
    return build_on_meta(sev_cfg(**kwargs))


# (G, frames, classes, extra keys) -> exact params, conv+fc GFLOPs
# measured on the spec's prototype, and the paper's (params M, GFLOPs) where published.
ROWS = [
    (6, 16, 174, {}, 2_512_134, 8.301, (2.5, 8.3)),
    (8, 16, 174, {}, 4_427_662, 14.443, (4.4, 14.4)),
    (6, 24, 174, {}, 2_512_134, 12.452, (2.5, 12.5)),
    (8, 24, 174, {}, 4_427_662, 21.664, (4.4, 21.7)),
    (8, 16, 400, {}, 4_543_600, 14.443, (4.5, 14.4)),
    (12, 16, 400, {}, 10_049_824, 31.788, (10.0, 31.8)),
    (12, 16, 174, {}, 9_876_030, 31.788, None),
    (6, 16, 174, {"SEVNET__SE": True}, 2_795_448, 8.301, (2.8, None)),
    (8, 16, 174, {"SEVNET__SE": True}, 4_929_958, 14.443, (4.9, None)),
    (6, 16, 174, {"SEVNET__BLOCK": "r2plus1d"}, 2_513_814, 7.731, (2.5, 7.7)),
    (8, 16, 174, {"SEVNET__BLOCK": "r2plus1d"}, 4_432_846, 13.430, (4.4, 13.4)),
    (6, 16, 174, {"SEVNET__BLOCK": "r3d"}, 2_808_837, 8.421, (2.8, 8.4)),
    (8, 16, 174, {"SEVNET__BLOCK": "r3d"}, 4_927_229, 14.711, (4.9, 14.7)),
]


@pytest.mark.parametrize("g,frames,classes,extra,params,gflops,paper", ROWS)
def test_size_matches_spec_and_paper(g, frames, classes, extra, params, gflops, paper):
    model = meta_sevnet(g=g, frames=frames, classes=classes, **extra)
    measured_gflops = conv_linear_gflops(model, (1, 3, frames, 224, 224))
    assert count_params(model) == params
    assert measured_gflops == pytest.approx(gflops, rel=5e-3)
    if paper is not None:
        paper_params, paper_gflops = paper
        assert params / 1e6 == pytest.approx(paper_params, rel=0.01)
        if paper_gflops is not None:
            assert measured_gflops == pytest.approx(paper_gflops, rel=0.01)


def closed_form_params(g: int, classes: int) -> int:
    """The closed-form parameter count of a SEVNet-G with `classes` classes."""
    c0 = 4 * g
    total = 147 * c0 + 3 * c0 ** 2 + 4 * c0 + 64 * g * classes + classes
    for k, depth in enumerate((3, 4, 6, 3)):
        c, c_out = c0 * 2 ** k, c0 * 2 ** (k + 1)
        total += 5 * c * c + 9 * g * c + 8 * c
        total += (depth - 1) * (4 * c_out ** 2 + 9 * g * c_out + 6 * c_out)
    return total


@pytest.mark.parametrize("g,classes", [(4, 10), (10, 51), (16, 313)])
def test_closed_form_parameter_count(g, classes):
    assert count_params(meta_sevnet(g=g, classes=classes)) == closed_form_params(g, classes)


def test_se_adds_only_the_se_layers():
    plain = dict(meta_sevnet(g=8).named_parameters())
    with_se = dict(meta_sevnet(g=8, SEVNET__SE=True).named_parameters())
    extra = set(with_se) - set(plain)
    assert set(plain) <= set(with_se)
    assert all(".branch2.se.fc" in k for k in extra) and len(extra) == 16 * 4
    assert sum(with_se[k].numel() for k in extra) == 502_296
    se = meta_sevnet(g=8, SEVNET__SE=True).s2.pathway0_res0.branch2.se
    assert (se.fc1.in_channels, se.fc1.out_channels) == (32, 8)  # exactly C/4, C = 32


@pytest.mark.parametrize("frames", [16, 24])
def test_stage_shapes_keep_time(frames):
    model = meta_sevnet(g=8, frames=frames)
    shapes = {}
    for n in range(1, 6):
        getattr(model, f"s{n}").register_forward_hook(
            lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
    model.eval()(torch.empty(1, 3, frames, 224, 224, device="meta"))
    t = frames
    assert shapes == {1: (32, t, 112, 112), 2: (64, t, 56, 56), 3: (128, t, 28, 28),
                      4: (256, t, 14, 14), 5: (512, t, 7, 7)}
    assert model.head.pathway0_avgpool.kernel_size == [frames, 7, 7]


def test_module_layout():
    model = meta_sevnet(g=8)
    stem = model.s1.pathway0_stem
    assert stem.conv_xy.kernel_size == (1, 7, 7) and stem.conv_xy.stride == (1, 2, 2)
    assert stem.conv.kernel_size == (3, 1, 1) and stem.conv.groups == 1
    assert not any(isinstance(m, nn.MaxPool3d) for m in model.modules())
    for n, width in zip(range(2, 6), (32, 64, 128, 256)):
        stage = getattr(model, f"s{n}")
        down = stage.pathway0_res0
        assert isinstance(down, SEVDownsampleModule)
        assert down.branch1_pool.stride == (1, 2, 2) and down.branch1.in_channels == width
        assert down.branch2.b.stride == (1, 2, 2) and down.branch2.a.stride == (1, 1, 1)
        # G = 8 channels per group: groups = C / 8, independent of the stage's input width.
        assert down.branch2.b.groups == width // 8
        for block in list(stage.children())[1:]:
            assert isinstance(block, ResBlock) and block.branch2.b.groups == 2 * width // 8
            assert not hasattr(block, "branch1") and not hasattr(block, "relu")  # x + branch2(x)
            assert block.branch2.c.kernel_size == (3, 1, 1) and block.branch2.c.groups == 1


def _cbr(x, conv, bn, stride=1, padding=0, groups=1):
    x = F.conv3d(x, conv.weight, stride=stride, padding=padding, groups=groups)
    return F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                               False, 0.0, bn.eps))


def _reference_branch(x, b, stride, se):
    y = _cbr(x, b.a, b.a_bn)
    y = _cbr(y, b.b, b.b_bn, stride=stride, padding=(0, 1, 1), groups=b.b.in_channels // 4)
    y = _cbr(y, b.c, b.c_bn, padding=(1, 0, 0))
    if se:
        s = y.mean(dim=(2, 3, 4), keepdim=True)
        s = torch.sigmoid(F.conv3d(F.relu(F.conv3d(s, b.se.fc1.weight, b.se.fc1.bias)),
                                   b.se.fc2.weight, b.se.fc2.bias))
        y = y * s
    return y


def test_downsample_module_matches_functional_reference():
    torch.manual_seed(0)
    dim = 16
    branch = SEVBranch(dim, "sev", 4, (1, 2, 2), 2.0, 2.6, se_reduction=4)
    module = SEVDownsampleModule(dim, branch, pool_kernel=3, shortcut_bn=True, shortcut_act=True,
                                 shortcut_first=True).double().eval()
    randomise_bn(module)
    x = torch.randn(2, dim, 3, 7, 6, dtype=torch.float64)
    pooled = F.avg_pool3d(x, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))  # pool, then conv
    shortcut = _cbr(pooled, module.branch1, module.branch1_bn)
    expected = torch.cat([shortcut, _reference_branch(x, branch, (1, 2, 2), se=True)], dim=1)
    seen = []  # pool and 1x1x1 conv commute numerically, so check where the conv runs
    module.branch1.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    with torch.no_grad():
        out = module(x)
    assert seen == [(2, dim, 3, 4, 3)] and out.shape == (2, 2 * dim, 3, 4, 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    module.shortcut_first = False
    with torch.no_grad():
        torch.testing.assert_close(module(x), torch.cat([expected[:, dim:], expected[:, :dim]], 1))


def test_standard_module_matches_functional_reference():
    torch.manual_seed(1)
    branch = SEVBranch(16, "sev", 4, (1, 1, 1), 2.0, 2.6, se_reduction=0)
    module = ResBlock(16, 16, (1, 1, 1), branch, post_add_relu=False).double().eval()
    assert not hasattr(module, "branch1") and not hasattr(module, "relu")
    randomise_bn(module)
    x = torch.randn(1, 16, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        out = module(x)
    torch.testing.assert_close(out, x + _reference_branch(x, branch, 1, se=False), rtol=0, atol=1e-12)
    assert out.min() < 0  # no ReLU after the addition by default


def test_network_matches_functional_reference():
    torch.manual_seed(0)
    cfg = model_cfg("SEVNet", 5, 4, 64, "SEVNET", {"GROUP_WIDTH": 4, "SE": True})
    model = build_model(cfg).double().eval()
    randomise_bn(model)

    def cbr(x, conv, bn, **kw):
        return F.relu(F.batch_norm(F.conv3d(x, conv.weight, **kw), bn.running_mean, bn.running_var,
                                   bn.weight, bn.bias, False, 0.0, bn.eps))

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
    pooled = F.avg_pool3d(h, (4, 2, 2), stride=1).permute(0, 2, 3, 4, 1)
    expected = torch.softmax(F.linear(pooled, model.head.projection.weight, model.head.projection.bias),
                             dim=-1).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_ablation_branches():
    r2 = SEVBranch(32, "r2plus1d", 8, (1, 2, 2), 2.0, 2.6, 0)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.groups) for c in (r2.a, r2.b, r2.c)] == [
        (32, 16, (1, 1, 1), 1), (16, 16, (1, 3, 3), 1), (16, 32, (3, 1, 1), 1)]
    r3 = SEVBranch(256, "r3d", 8, (1, 2, 2), 2.0, 2.6, 0)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in (r3.a, r3.b, r3.c)] == [
        (256, 98, (1, 1, 1)), (98, 98, (3, 3, 3)), (98, 256, (1, 1, 1))]
    assert r3.b.stride == (1, 2, 2)
    with pytest.raises(ConfigError, match="SEVNET.GROUP_WIDTH is 8; expected a divisor of the SEV "
                                          "branch width 20"):
        SEVBranch(20, "sev", 8, (1, 1, 1), 2.0, 2.6, 0)


def test_shortcut_options():
    base = count_params(meta_sevnet(g=8))
    assert count_params(meta_sevnet(g=8, SEVNET__SHORTCUT_BN=False, SEVNET__SHORTCUT_ACT=False)) \
        == base - 960
    model = meta_sevnet(g=8, SEVNET__SHORTCUT_POOL_KERNEL=2, SEVNET__POST_ADD_RELU=True)
    assert model.s3.pathway0_res0.branch1_pool.kernel_size == (1, 2, 2)
    assert isinstance(model.s3.pathway0_res1.relu, nn.ReLU)
    assert conv_linear_gflops(model, (1, 3, 16, 224, 224)) == pytest.approx(14.443, rel=1e-3)


def test_forward_contract():
    torch.manual_seed(0)
    model = build_model(sev_cfg(g=4, frames=4, classes=5, crop=64))
    x = torch.randn(2, 3, 4, 64, 64)
    assert model([x]).shape == (2, 5)
    model.eval()
    with torch.no_grad():
        probs = model(x)
        big = model(torch.randn(1, 3, 4, 96, 96))
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)
    assert big.shape == (1, 5) and torch.allclose(big.sum(1), torch.ones(1), atol=1e-5)


def test_frozen_bn_statistics_survive_train():
    model = meta_sevnet(g=4, MODEL__FROZEN_BN=True)
    model.eval().train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert model.training and bns and not any(bn.training for bn in bns)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("overrides,needle", [
    ({"SEVNET__BLOCK": "r21d"}, "SEVNET.BLOCK is 'r21d'; expected one of"),
    ({"SEVNET__DEPTHS": [3, 4, 6]}, "SEVNET.DEPTHS is [3, 4, 6]; expected four stage depths"),
    ({"SEVNET__SHORTCUT_POOL_KERNEL": 5}, "SEVNET.SHORTCUT_POOL_KERNEL is 5; expected 2 or 3"),
    ({"SEVNET__CONCAT_ORDER": "main"}, "SEVNET.CONCAT_ORDER is 'main'; expected one of"),
    ({"SEVNET__GROUP_WIDTH": 0}, "SEVNET.GROUP_WIDTH is 0; expected a positive"),
    ({"SEVNET__R2PLUS1D_RATIO": 0.0}, "SEVNET.R2PLUS1D_RATIO is 0.0; expected > 0"),
    ({"SEVNET__R3D_RATIO": -1.0}, "SEVNET.R3D_RATIO is -1.0; expected > 0"),
    ({"SEVNET__SE": True, "SEVNET__SE_REDUCTION": 0}, "SEVNET.SE_REDUCTION is 0; expected >= 1"),
    ({"SEVNET__SHORTCUT_BN": False}, "SEVNET.SHORTCUT_ACT is True; expected False when"),
    ({"crop": 32}, "DATA.TRAIN_CROP_SIZE is 32; SEVNet with SEVNET.SHORTCUT_POOL_KERNEL 3 cannot downsample "
                   "it four times (the pooled shortcut must be at least 3 px and as large as the strided "
                   "branch); the next size that works is 33."),
    ({"crop": 40, "SEVNET__SHORTCUT_POOL_KERNEL": 2}, "the next size that works is 63."),
    ({"MODEL__DROPCONNECT_RATE": 0.1}, "MODEL.DROPCONNECT_RATE is 0.1; SEVNet has no drop-connect"),
])
def test_bad_config_is_named(overrides, needle):
    cfg = sev_cfg(**overrides)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        with torch.device("meta"):
            SEVNet(cfg)


@pytest.mark.parametrize("kernel,crops", [(3, (33, 34, 37)), (2, (32, 64))])
def test_every_accepted_crop_runs(kernel, crops):
    torch.manual_seed(0)
    for crop in crops:
        cfg = sev_cfg(g=2, frames=2, classes=3, crop=crop, SEVNET__DEPTHS=[1, 1, 1, 1],
                      SEVNET__SHORTCUT_POOL_KERNEL=kernel, DATA__TEST_CROP_SIZE=crop)
        with torch.no_grad():
            assert build_model(cfg).eval()(torch.randn(1, 3, 2, crop, crop)).shape == (1, 3)


def test_stage_specs():
    stem_dim, specs = sevnet_stage_specs(sev_cfg(g=6, SEVNET__DEPTHS=[2, 1, 3, 1]))
    assert stem_dim == 24
    assert [(s.depth, s.dim_in, s.dim_out, s.stride) for s in specs] == [
        (2, 24, 48, (1, 2, 2)), (1, 48, 96, (1, 2, 2)), (3, 96, 192, (1, 2, 2)), (1, 192, 384, (1, 2, 2))]


CONFIGS = {  # config -> (G, frames, classes, exact params)
    **{f"{ds}/sevnet/sevnet_G{g}_F{f}.yaml": (g, f, 174, {6: 2_512_134, 8: 4_427_662}[g])
       for ds in ("SSv1", "SSv2") for g in (6, 8) for f in (16, 24)},
    "Kinetics/sevnet/sevnet_G8.yaml": (8, 16, 400, 4_543_600),
    "Kinetics/sevnet/sevnet_G12.yaml": (12, 16, 400, 10_049_824),
}


@pytest.mark.parametrize("relpath", sorted(CONFIGS))
def test_configs_follow_the_paper_recipe(relpath):
    g, frames, classes, params = CONFIGS[relpath]
    cfg = project_cfg(os.path.join("configs", relpath))
    kinetics = relpath.startswith("Kinetics")
    assert (cfg.MODEL.MODEL_NAME, cfg.MODEL.ARCH, cfg.SEVNET.GROUP_WIDTH) == ("SEVNet", "sevnet", g)
    assert (cfg.MODEL.NUM_CLASSES, cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE) == (classes, frames, 224)
    assert cfg.TRAIN.DATASET == cfg.TEST.DATASET == relpath.split("/")[0].lower()
    assert (cfg.SOLVER.LR_POLICY, cfg.SOLVER.WARMUP_EPOCHS, cfg.SOLVER.MOMENTUM) == ("cosine", 4.0, 0.9)
    assert (cfg.SOLVER.WEIGHT_DECAY, cfg.TRAIN.BATCH_SIZE, cfg.SOLVER.BASE_LR) == (1e-4, 64, 0.08)
    assert cfg.SOLVER.MAX_EPOCH == (100 if kinetics else 64)
    assert cfg.MODEL.DROPOUT_RATE == (0.2 if kinetics else 0.5)
    views = (cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS, cfg.DATA.TEST_CROP_SIZE)
    if kinetics:
        assert views == (10, 3, 224) and cfg.DATA.SAMPLING_RATE == 4
    else:
        assert views == (1, 1, 224) and cfg.DATA.TRAIN_JITTER_SCALES == [224, 256]
        assert not cfg.DATA.RANDOM_FLIP and cfg.DATA.REVERSE_INPUT_CHANNEL
    with torch.device("meta"):
        assert count_params(build_model(cfg)) == params
