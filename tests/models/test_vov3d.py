"""VoV3D: D(2+1)D unit, T-OSA block and whole-network numerics against a functional
reference, structure (SE placement, concat order, residuals), init, config handling."""
import pytest
import torch

from tests.models import reference_functional as ref
from tests.models.model_helpers import small_cfg
from vov3d.config import ConfigError
from vov3d.models import build_model
from vov3d.models.resblock import ResBlock
from vov3d.models.vov3d import D2Plus1DUnit, TOSAModule

VOV3D_M = "configs/Kinetics/vov3d/vov3d_M.yaml"
VOV3D_M_V1 = "configs/Kinetics/vov3d/vov3d_M_v1.yaml"


@pytest.fixture(scope="module")
def vov3d_m64():
    torch.manual_seed(0)
    model = build_model(small_cfg(VOV3D_M)).double()
    return ref.randomize_(model).eval()


@pytest.mark.parametrize("dim_in,stride,use_se", [(16, 2, True), (8, 1, False), (16, 1, True)])
def test_unit_matches_functional_reference(dim_in, stride, use_se):
    unit = ref.randomize_(D2Plus1DUnit(dim_in, 16, stride, use_se=use_se).double()).eval()
    assert unit.residual == (dim_in == 8 and stride == 1)
    x = torch.randn(2, dim_in, 4, 10, 10, dtype=torch.float64)
    sd = {"u." + k: v for k, v in unit.state_dict().items()}
    torch.testing.assert_close(unit(x), ref.d2plus1d_unit(x, sd, "u", stride), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim_in,dim_out,stride", [(8, 16, 2), (16, 16, 1), (8, 8, 2)])
def test_block_matches_functional_reference(dim_in, dim_out, stride):
    block = ResBlock(dim_in, dim_out, (1, stride, stride),
                     TOSAModule(dim_in, dim_out, 16, stride, num_conv=5))
    block = ref.randomize_(block.double()).eval()
    tosa = block.branch2
    assert [hasattr(u, "se") for u in tosa.layers] == [True, False, True, False, True]
    assert tosa.c.in_channels == 5 * 8 + (dim_in if stride == 1 else 0)
    assert hasattr(block, "branch1") == (stride != 1 or dim_in != dim_out)
    x = torch.randn(2, dim_in, 4, 10, 10, dtype=torch.float64)
    sd = {"blk." + k: v for k, v in block.state_dict().items()}
    torch.testing.assert_close(block(x), ref.vov3d_block(x, sd, "blk", stride), rtol=0, atol=1e-12)


def test_concat_puts_block_input_first():
    tosa = ref.randomize_(TOSAModule(8, 8, 16, 1, num_conv=2).double()).eval()
    x = torch.randn(1, 8, 2, 4, 4, dtype=torch.float64)
    seen = []
    handle = tosa.c.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    tosa(x)
    handle.remove()
    u0 = tosa.layers[0](x)
    torch.testing.assert_close(seen[0], torch.cat([x, u0, tosa.layers[1](u0)], 1), rtol=0, atol=0)


def test_network_matches_functional_reference_at_train_and_test_crop(vov3d_m64):
    sd = vov3d_m64.state_dict()
    for side in (32, 64):
        x = torch.randn(2, 3, 4, side, side, dtype=torch.float64)
        out = vov3d_m64([x])
        torch.testing.assert_close(out, ref.network(x, sd, ref.vov3d_block, [4, 1, 1]),
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(out.sum(1), torch.ones(2, dtype=torch.float64))


def test_channels_last_and_round_trip(vov3d_m64):
    x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    out = vov3d_m64(x)
    vov3d_m64.to(memory_format=torch.channels_last_3d)
    try:
        out_cl = vov3d_m64(x.to(memory_format=torch.channels_last_3d))
    finally:
        vov3d_m64.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(out_cl, out, rtol=0, atol=1e-12)
    torch.manual_seed(1)
    other = build_model(small_cfg(VOV3D_M)).double().eval()
    other.load_state_dict(vov3d_m64.state_dict(), strict=True)
    assert torch.equal(other(x), out)


def test_v1_checkpoint_does_not_load_into_v2():
    with torch.device("meta"):
        v1 = build_model(small_cfg(VOV3D_M_V1))
        v2 = build_model(small_cfg(VOV3D_M))
    assert len(v1.s3.pathway0_res0.branch2.layers) == 4
    assert sum(1 for _ in v1.s3.children()) == 1
    with pytest.raises(RuntimeError):
        v2.load_state_dict(v1.state_dict(), strict=True, assign=True)


def test_structure_widths_and_residual_units():
    with torch.device("meta"):
        model = build_model(small_cfg(VOV3D_M))
    assert model.s1.pathway0_stem.conv_xy.out_channels == 20
    for s, depth, m in zip(range(2, 6), (1, 2, 3, 2), (40, 80, 160, 320)):
        for i, block in enumerate(getattr(model, f"s{s}").children()):
            assert i < depth
            assert hasattr(block, "branch1") == (i == 0)
            units = block.branch2.layers
            assert [u.residual for u in units] == [i > 0] + [True] * 4
            assert units[0].b1.stride == ((1, 2, 2) if i == 0 else (1, 1, 1))
            assert all(u.a[0].out_channels == m and u.b2.groups == m for u in units)
    assert model.head.conv_5.in_channels == 160 and model.head.conv_5.out_channels == 320


def test_init_zeroes_only_the_aggregation_bn():
    torch.manual_seed(0)
    model = build_model(small_cfg(VOV3D_M))
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            assert torch.all(m.weight == (0.0 if name.endswith("branch2.c_bn") else 1.0)), name
    w = model.s5.pathway0_res0.branch2.layers[0].b1.weight  # fan_out = 320 * 9
    assert abs(w.std().item() - (2 / 2880) ** 0.5) < 0.06 * (2 / 2880) ** 0.5


def test_temporal_dilation_and_per_stage_strides_work():
    base = build_model(small_cfg(VOV3D_M)).double().eval()
    cfg = small_cfg(VOV3D_M, 4, 32, 64, "VOV3D.TEMPORAL_DILATIONS", "[[1], [2], [1], [3]]")
    dilated = build_model(cfg).double().eval()
    b2 = dilated.s5.pathway0_res1.branch2.layers[3].b2
    assert b2.dilation == (3, 1, 1) and b2.padding == (3, 0, 0)
    assert dilated.s2.pathway0_res0.branch2.layers[0].b2.dilation == (1, 1, 1)
    dilated.load_state_dict(ref.randomize_(base).state_dict(), strict=True)
    x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    assert not torch.allclose(dilated(x), base(x))

    cfg = small_cfg(VOV3D_M, 4, 32, 64, "VOV3D.SPATIAL_STRIDES", "[[2], [2], [2], [1]]")
    model = build_model(cfg).eval()
    assert model.head.avg_pool.kernel_size == [4, 2, 2]
    block0 = model.s5.pathway0_res0
    assert block0.branch1.stride == (1, 1, 1)
    assert block0.branch2.c.in_channels == 80 + 5 * 160  # input concatenated when not strided
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 400)


def test_vov3d_head_reads_the_x3d_keys_as_the_reference():
    cfg = small_cfg(VOV3D_M, 4, 32, 64, "X3D.DIM_C5", "1024", "X3D.BN_LIN5", "True")
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.head.lin_5.out_channels == 1024 and hasattr(model.head, "lin_5_bn")
    cfg = small_cfg(VOV3D_M, 4, 32, 64, "VOV3D.DIM_C5", "1024", "VOV3D.BN_LIN5", "True")
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.head.lin_5.out_channels == 2048 and not hasattr(model.head, "lin_5_bn")


@pytest.mark.parametrize("overrides,match", [
    (["VOV3D.DEPTH", "19"], r"VOV3D.DEPTH is 19; expected 31 .* or 70"),
    (["VOV3D.TRANS_FUNC", "OSA_transform"], "t_osa_2plus1_transform"),
    (["VOV3D.STAGE_DEPTHS", "[1, 2]"], "VOV3D.STAGE_DEPTHS"),
    (["VOV3D.SPATIAL_STRIDES", "[[3], [2], [2], [2]]"], "VOV3D.SPATIAL_STRIDES"),
    (["VOV3D.TEMPORAL_DILATIONS", "[[0], [1], [1], [1]]"], "VOV3D.TEMPORAL_DILATIONS"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        with torch.device("meta"):
            build_model(small_cfg(VOV3D_M, 4, 32, 64, *overrides))


def test_reference_default_depth_with_stage_depths_builds():
    cfg = small_cfg(VOV3D_M, 4, 32, 64, "VOV3D.DEPTH", "19", "VOV3D.STAGE_DEPTHS", "[1, 1, 1, 1]")
    with torch.device("meta"):
        model = build_model(cfg)
    assert sum(1 for _ in model.s4.children()) == 1
