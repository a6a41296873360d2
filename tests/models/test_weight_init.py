"""Weight initialisation: a seeded build draws exactly what the reference build draws."""
import pytest
import torch
import torch.nn as nn

from tests.conftest import reference_listing
from tests.models.model_helpers import project_cfg
from vov3d.models import build_model


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
    listing = reference_listing(name)
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
