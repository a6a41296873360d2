"""MODEL.FROZEN_BN / BN.FROZEN_AFFINE act on every model built by build_model."""
import pytest
import torch
import torch.nn as nn

from tests.models.model_helpers import small_cfg
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
