"""Every model family in clip mode trains at every multigrid shape: heads pool adaptively,
BN goes over sub-batches, state dicts stay as they were, and shapes a model cannot take are
refused before training."""
import copy

import pytest
import torch

from tests.models.model_helpers import build_on_meta, project_cfg, small_cfg
from vov3d.config import ConfigError
from vov3d.engine.multigrid import Multigrid, check_model_shapes, prepare_for_multigrid
from vov3d.models import build_model
from vov3d.models.batchnorm import SubBatchNorm3d

FAMILIES = ["configs/Kinetics/x3d/X3D_M.yaml", "configs/Kinetics/vov3d/vov3d_M.yaml",
            "configs/Kinetics/csn/ircsn_r50_32x2.yaml", "configs/Kinetics/sevnet/sevnet_G8.yaml",
            "configs/Kinetics/cox3d/cox3d_M.yaml"]
MULTIGRID = ("MULTIGRID.LONG_CYCLE", "True", "MULTIGRID.SHORT_CYCLE", "True", "SOLVER.LR_POLICY",
             "steps_with_relative_lrs", "SOLVER.STEPS", "[0, 40]", "SOLVER.LRS", "[1, 0.1]", "SOLVER.MAX_EPOCH", "50")


@pytest.mark.parametrize("relpath", FAMILIES)
def test_every_family_takes_every_shape_of_the_default_schedule(relpath):
    cfg = project_cfg(relpath, *MULTIGRID)
    cfg.defrost()
    multigrid = Multigrid(cfg)
    model = build_on_meta(cfg)
    keys = list(model.state_dict())
    prepare_for_multigrid(multigrid, model)  # raises ConfigError for a shape the model cannot take
    assert list(model.state_dict()) == keys
    assert any(isinstance(m, SubBatchNorm3d) for m in model.modules())
    for frames, crop in (multigrid.shapes()[0], multigrid.shapes()[-1]):
        out = model([torch.empty(4, 3, frames, crop, crop, device="meta")])
        assert tuple(out.shape) == (4, cfg.MODEL.NUM_CLASSES)


def test_at_the_base_shape_the_adapted_model_computes_what_the_built_one_does():
    cfg = small_cfg("configs/Kinetics/x3d/X3D_S.yaml", 4, 32, 32, "MULTIGRID.SHORT_CYCLE", "True",
                    "MULTIGRID.BN_BASE_SIZE", "2")
    torch.manual_seed(0)
    built = build_model(cfg)
    adapted = copy.deepcopy(built)
    prepare_for_multigrid(Multigrid(cfg), adapted)
    x = torch.randn(2, 3, 4, 32, 32)
    built.eval(), adapted.eval()
    assert torch.allclose(built([x]), adapted([x]), atol=1e-6)
    built.train(), adapted.train()  # a batch of BN_BASE_SIZE clips: one BN group, plain BN
    outputs = []
    for model in (built, adapted):
        torch.manual_seed(1)  # the same dropout draws
        outputs.append(model([x]))
    assert torch.allclose(*outputs, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), adapted.state_dict().values()))
    small = adapted([torch.randn(4, 3, 2, 16, 16)])  # another shape, two BN groups
    assert small.shape == (4, cfg.MODEL.NUM_CLASSES)


def test_a_shape_the_model_cannot_take_is_a_config_error():
    cfg = project_cfg("configs/Kinetics/sevnet/sevnet_G8.yaml", *MULTIGRID, "MULTIGRID.SHORT_CYCLE_FACTORS",
                      "[0.25, 0.5]", "MULTIGRID.LONG_CYCLE_FACTORS", "[(0.5, 0.3), (1, 1)]")
    cfg.defrost()
    multigrid = Multigrid(cfg)
    with pytest.raises(ConfigError, match=r"MULTIGRID: the model SEVNet cannot train on clips of \d+ frames x \d+"):
        check_model_shapes(multigrid, build_on_meta(cfg))
