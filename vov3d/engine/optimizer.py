"""Optimizer construction with the reference weight-decay grouping, and gradient clipping."""
import logging
from typing import Dict, Iterable, List, Optional

import torch
from yacs.config import CfgNode

logger = logging.getLogger(__name__)


def param_groups(model: torch.nn.Module, cfg: CfgNode) -> List[Dict]:
    """Split trainable parameters into weight-decay groups.

    Reference rule (kept because published numbers depend on it): a parameter whose
    *name* contains "bn" gets BN.WEIGHT_DECAY, everything else SOLVER.WEIGHT_DECAY. The
    D(2+1)D BNs are named `layers.j.a.1.*` / `layers.j.c.1.*`, so they are decayed.
    With SOLVER.ZERO_WD_1D_PARAM every remaining 1-D parameter and every bias is moved
    to a zero-decay group. Frozen parameters (requires_grad False) are left out.
    """
    bn, decay, zero = [], [], []
    frozen = 0
    named = list(model.named_parameters())
    for name, p in named:
        if not p.requires_grad:
            frozen += 1
        elif "bn" in name:
            bn.append(p)
        elif cfg.SOLVER.ZERO_WD_1D_PARAM and (p.ndim <= 1 or name.endswith(".bias")):
            zero.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY, "name": "decay"},
        {"params": bn, "weight_decay": cfg.BN.WEIGHT_DECAY, "name": "bn"},
        {"params": zero, "weight_decay": 0.0, "name": "zero_wd_1d"},
    ]
    groups = [g for g in groups if g["params"]]
    grouped = sum(len(g["params"]) for g in groups)
    if grouped + frozen != len(named) or len({id(p) for g in groups for p in g["params"]}) != grouped:
        raise AssertionError(f"parameter grouping is inconsistent: {len(named)} parameters, "
                             f"{grouped} grouped, {frozen} frozen.")
    logger.info("Optimizer groups: %s; %d frozen parameter tensors excluded.",
                ", ".join(f"{g['name']} ({len(g['params'])} tensors, wd {g['weight_decay']:g})"
                          for g in groups), frozen)
    return groups


def construct_optimizer(model: torch.nn.Module, cfg: CfgNode) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZING_METHOD sgd / adam / adamw over `param_groups`, at BASE_LR."""
    groups = param_groups(model, cfg)
    method = cfg.SOLVER.OPTIMIZING_METHOD
    lr = cfg.SOLVER.BASE_LR
    if method == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.SOLVER.MOMENTUM,
                               dampening=cfg.SOLVER.DAMPENING, nesterov=cfg.SOLVER.NESTEROV)
    if method == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999))
    if method == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    raise NotImplementedError(f"Unknown optimizer {method!r} (SOLVER.OPTIMIZING_METHOD); "
                              "known: sgd, adam, adamw.")


def clip_gradients(params: Iterable[torch.nn.Parameter], cfg: CfgNode) -> Optional[float]:
    """Clip by value (SOLVER.CLIP_GRAD_VAL) or by global L2 norm (SOLVER.CLIP_GRAD_L2NORM).

    Returns the pre-clipping L2 norm when clipping by norm (it is computed anyway),
    otherwise None. Call after `GradScaler.unscale_` under mixed precision.
    """
    if cfg.SOLVER.CLIP_GRAD_VAL is not None:
        torch.nn.utils.clip_grad_value_(params, cfg.SOLVER.CLIP_GRAD_VAL)
    elif cfg.SOLVER.CLIP_GRAD_L2NORM is not None:
        return float(torch.nn.utils.clip_grad_norm_(params, cfg.SOLVER.CLIP_GRAD_L2NORM))
    return None
