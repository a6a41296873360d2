import torch
import torch.nn as nn

from vov3d.config import assert_and_infer_cfg, get_cfg, merge_overrides
from vov3d.engine.optimizer import clip_gradients, construct_optimizer, param_groups


class DPlusUnit(nn.Module):
    """The D(2+1)D naming that decides the reference's BN weight decay."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv3d(4, 8, 1, bias=False), nn.BatchNorm3d(8))
        self.b1 = nn.Conv3d(8, 8, (1, 3, 3), groups=8, bias=False)
        self.b_bn = nn.BatchNorm3d(8)
        self.c = nn.Sequential(nn.Conv3d(8, 4, 1, bias=False), nn.BatchNorm3d(4))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([DPlusUnit()])
        self.head = nn.Module()
        self.head.projection = nn.Linear(4, 3)
        self.frozen = nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def _cfg(*overrides):
    cfg = get_cfg()
    merge_overrides(cfg, ["SOLVER.WEIGHT_DECAY", "5e-5", "BN.WEIGHT_DECAY", "0.0"] + list(overrides))
    return assert_and_infer_cfg(cfg)


def _decay_by_name(model, groups):
    ids = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    return {n: ids.get(id(p)) for n, p in model.named_parameters()}


def test_reference_bn_substring_rule():
    model = Net()
    wd = _decay_by_name(model, param_groups(model, _cfg()))
    # "a.1" / "c.1" BNs have no "bn" in their names: decayed, as in the reference.
    assert wd["layers.0.a.1.weight"] == 5e-5 and wd["layers.0.a.1.bias"] == 5e-5
    assert wd["layers.0.c.1.weight"] == 5e-5
    assert wd["layers.0.b_bn.weight"] == 0.0 and wd["layers.0.b_bn.bias"] == 0.0
    assert wd["layers.0.b1.weight"] == 5e-5
    assert wd["head.projection.bias"] == 5e-5
    assert wd["frozen.weight"] is None and wd["frozen.bias"] is None
    trainable = [p for p in model.parameters() if p.requires_grad]
    grouped = [p for g in param_groups(model, _cfg()) for p in g["params"]]
    assert len(grouped) == len(trainable) == len({id(p) for p in grouped})


def test_zero_wd_1d_param_moves_all_1d_and_biases():
    model = Net()
    wd = _decay_by_name(model, param_groups(model, _cfg("SOLVER.ZERO_WD_1D_PARAM", "True")))
    assert wd["layers.0.a.1.weight"] == 0.0 and wd["layers.0.c.1.bias"] == 0.0
    assert wd["head.projection.bias"] == 0.0
    assert wd["head.projection.weight"] == 5e-5 and wd["layers.0.a.0.weight"] == 5e-5


def test_optimizers_and_hyperparameters():
    model = Net()
    sgd = construct_optimizer(model, _cfg("SOLVER.BASE_LR", "0.05", "SOLVER.DAMPENING", "0.0"))
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.9 and g["lr"] == 0.05 for g in sgd.param_groups)
    assert isinstance(construct_optimizer(model, _cfg("SOLVER.OPTIMIZING_METHOD", "adamw")), torch.optim.AdamW)
    assert isinstance(construct_optimizer(model, _cfg("SOLVER.OPTIMIZING_METHOD", "adam")), torch.optim.Adam)


def test_gradient_clipping_by_value_and_norm():
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, -4.0, 0.0, 0.0])
    clip_gradients([p], _cfg("SOLVER.CLIP_GRAD_VAL", "1.0"))
    assert torch.equal(p.grad, torch.tensor([1.0, -1.0, 0.0, 0.0]))
    p.grad = torch.tensor([3.0, -4.0, 0.0, 0.0])
    norm = clip_gradients([p], _cfg("SOLVER.CLIP_GRAD_L2NORM", "1.0"))
    assert abs(norm - 5.0) < 1e-6
    assert torch.allclose(p.grad, torch.tensor([0.6, -0.8, 0.0, 0.0]), atol=1e-5)


class BnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 1)
        self.bn = nn.BatchNorm3d(4)


def test_sgd_takes_momentum_dampening_and_nesterov_from_the_config():
    # SGD(momentum=MOMENTUM, dampening=DAMPENING, nesterov=NESTEROV), as in PySlowFast.
    opt = construct_optimizer(BnNet(), _cfg("SOLVER.MOMENTUM", "0.8", "SOLVER.DAMPENING", "0.1",
                                            "SOLVER.NESTEROV", "False", "SOLVER.BASE_LR", "0.3"))
    assert isinstance(opt, torch.optim.SGD)
    for group in opt.param_groups:
        assert (group["momentum"], group["dampening"], group["nesterov"], group["lr"]) == (0.8, 0.1, False, 0.3)


def test_bn_group_uses_bn_weight_decay():
    # Parameters whose names contain "bn" get BN.WEIGHT_DECAY (0.0 by default, so a
    # non-default value is needed to tell it from a hard-coded zero).
    model = BnNet()
    groups = param_groups(model, _cfg("BN.WEIGHT_DECAY", "1e-4", "SOLVER.WEIGHT_DECAY", "5e-5"))
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert {n: wd[id(p)] for n, p in model.named_parameters()} == {
        "conv.weight": 5e-5, "conv.bias": 5e-5, "bn.weight": 1e-4, "bn.bias": 1e-4}


def test_adam_betas():
    # PySlowFast's adam uses betas (0.9, 0.999).
    opt = construct_optimizer(BnNet(), _cfg("SOLVER.OPTIMIZING_METHOD", "adam"))
    assert all(g["betas"] == (0.9, 0.999) for g in opt.param_groups)
