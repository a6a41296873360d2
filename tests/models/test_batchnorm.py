"""Batch norm in every model: the reference eps and momentum, and MODEL.FROZEN_BN /
BN.FROZEN_AFFINE acting on every model built by build_model."""
import pytest
import torch
import torch.nn as nn

from tests.models.model_helpers import model_cfg, small_cfg
from vov3d.config import ConfigError, assert_and_infer_cfg, merge_overrides
from vov3d.models import build_model


@pytest.mark.parametrize("config", ["configs/Kinetics/x3d/X3D_M.yaml", "configs/Kinetics/vov3d/vov3d_M.yaml"])
def test_frozen_bn_keeps_statistics_and_optionally_affine(config):
    torch.manual_seed(0)
    cfg = small_cfg(config, 4, 32, 32, "MODEL.FROZEN_BN", "True", "BN.FROZEN_AFFINE", "True")
    model = build_model(cfg)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    model.eval()
    model.train()
    assert model.training and bns and not any(bn.training for bn in bns)
    before = [(bn.running_mean.clone(), bn.num_batches_tracked.clone()) for bn in bns]
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    assert all(torch.equal(m, bn.running_mean) and torch.equal(n, bn.num_batches_tracked)
               for (m, n), bn in zip(before, bns))
    assert all(p.grad is None and not p.requires_grad for bn in bns for p in bn.parameters())
    assert model.head.projection.weight.grad is not None


def test_unfrozen_model_updates_statistics():
    model = build_model(small_cfg("configs/Kinetics/x3d/X3D_M.yaml", 4, 32, 32))
    bn = model.s1.pathway0_stem.bn
    model.train()
    model(torch.randn(2, 3, 4, 32, 32))
    assert bn.training and bn.num_batches_tracked.item() == 1


def test_affine_freeze_needs_frozen_statistics():
    cfg = small_cfg("configs/Kinetics/x3d/X3D_M.yaml", 4, 32, 32)
    cfg.defrost()
    merge_overrides(cfg, ["BN.FROZEN_AFFINE", "True", "MODEL.FROZEN_BN", "False"])
    with pytest.raises(ConfigError, match="BN.FROZEN_AFFINE"):
        assert_and_infer_cfg(cfg)


@pytest.mark.parametrize("model_name,group,values,eps", [
    ("X3D", "X3D", {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 0.5, "BOTTLENECK_FACTOR": 2.25}, 1e-5),
    ("CoX3D", "X3D", {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 0.5, "BOTTLENECK_FACTOR": 2.25}, 1e-5),
    ("VoV3D", "VOV3D", {"DEPTH": 31, "INNER_CH": 16, "TRANS_FUNC": "t_osa_2plus1_transform"}, 1e-5),
    ("SEVNet", "SEVNET", {"GROUP_WIDTH": 4}, 1e-5),
    ("CSN", "CSN", {"DEPTH": 50, "BN_EPS": 1e-3}, 1e-3),
])
def test_every_bn_has_the_reference_eps_and_momentum(model_name, group, values, eps):
    cfg = model_cfg(model_name, 10, 8, 64, group, values)
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


def test_sub_batch_norm_normalises_groups_and_keeps_whole_batch_statistics():
    import torch
    import torch.nn as nn

    from vov3d.models.batchnorm import SubBatchNorm3d, use_sub_batch_norm

    torch.manual_seed(0)
    bn = nn.BatchNorm3d(4)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    groups = [nn.BatchNorm3d(4) for _ in range(3)]
    for g in groups:
        g.load_state_dict(bn.state_dict())
    keys = list(bn.state_dict())
    model = use_sub_batch_norm(nn.Sequential(bn), base_size=2)
    assert type(model[0]) is SubBatchNorm3d and list(model.state_dict()) == ["0." + k for k in keys]
    x = torch.randn(6, 4, 2, 3, 3) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1, 1)
    y = model(x)
    for i, g in enumerate(groups):  # clips i, i + 3: group i, as PySlowFast splits
        assert torch.allclose(y[i::3], g(x[i::3]), atol=1e-5)
    count = 2 * 2 * 3 * 3
    split = x.view(2, 3, 4, -1).permute(1, 2, 0, 3).reshape(3, 4, -1)  # [group, channel, values]
    # The mean unbiased group variance plus the variance of the group means.
    pooled_var = split.var(dim=2).mean(0) + split.mean(dim=2).var(dim=0, unbiased=False)
    assert torch.allclose(bn.running_mean, 0.1 * split.mean(dim=2).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, 0.9 + 0.1 * pooled_var, atol=1e-5) and split.shape[2] == count
    odd = model(torch.randn(5, 4, 1, 2, 2))  # 5 clips: no whole groups of 2 divide it -> plain BN
    assert odd.shape == (5, 4, 1, 2, 2)
    model.eval()
    assert torch.allclose(model(x), nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias),
                          atol=1e-6)
