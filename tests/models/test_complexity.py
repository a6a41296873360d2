"""The analytic conv+linear count agrees with fvcore, and the summary is consistent."""
import torch

from tests.models.model_helpers import small_cfg
from vov3d.models import build_model
from vov3d.models.complexity import (clip_shapes, complexity_summary, conv_linear_flops,
                                     count_params, format_complexity, fvcore_counts)

VOV3D_M = "configs/Kinetics/vov3d/vov3d_M.yaml"


def test_hook_count_equals_fvcore_conv_linear_and_leaves_model_untouched():
    torch.manual_seed(0)
    # A shallow VoV3D keeps fvcore's tracing cheap and still has every layer kind: strided,
    # depthwise and SE convs, and the classifier applied at 2x2 head positions.
    cfg = small_cfg(VOV3D_M, 4, 32, 64, "VOV3D.STAGE_DEPTHS", "[1, 1, 1, 2]", "VOV3D.NUM_CONV", "2")
    model = build_model(cfg)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for shape in ((1, 3, 4, 64, 64),):
        flops = conv_linear_flops(model, shape)
        fv = fvcore_counts(model, shape)
        assert flops == round(fv["fvcore_conv_linear_gflops"] * 1e9)
        # fvcore's default count adds batch norm on top of conv+linear.
        assert fv["fvcore_gflops"] > fv["fvcore_conv_linear_gflops"]
        assert fv["activations_m"] > 0
    assert model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_flops_scale_linearly_in_time_and_summary_fields():
    cfg = small_cfg(VOV3D_M, 4, 32, 64)
    with torch.device("meta"):
        model = build_model(cfg)
    f4, f8, f12 = (conv_linear_flops(model, (1, 3, t, 32, 32)) for t in (4, 8, 12))
    # Affine in T: every conv before the head pool runs per frame, the head after the pool
    # runs at T - 3 window positions, and only the SE convs (on pooled features) are constant.
    assert f12 - f8 == f8 - f4 > 0
    assert clip_shapes(cfg) == {"train": (1, 3, 4, 32, 32), "test": (1, 3, 4, 64, 64)}
    summary = complexity_summary(model, cfg, with_fvcore=False)
    assert summary["params"] == count_params(model)
    assert summary["train_gflops_conv_linear"] == f4 / 1e9
    text = format_complexity(summary)
    assert f"{count_params(model):,}" in text and "test crop 1x3x4x64x64" in text
