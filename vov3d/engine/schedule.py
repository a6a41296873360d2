"""Learning-rate schedule: a pure function of the fractional epoch.

The LR is recomputed before every iteration at `e = epoch + iter / iters_per_epoch` and
written into every parameter group, so nothing schedule-related needs to be stored in a
checkpoint for resumption (PySlowFast semantics).
"""
import math

from yacs.config import CfgNode


def _cosine(cfg: CfgNode, epoch: float) -> float:
    solver = cfg.SOLVER
    offset = solver.WARMUP_EPOCHS if solver.COSINE_AFTER_WARMUP else 0.0
    span = solver.MAX_EPOCH - offset
    progress = (epoch - offset) / span
    return solver.COSINE_END_LR + (solver.BASE_LR - solver.COSINE_END_LR) * (math.cos(math.pi * progress) + 1.0) * 0.5


def _steps_with_relative_lrs(cfg: CfgNode, epoch: float) -> float:
    """LRS[k] * BASE_LR with k the last STEPS entry <= epoch (STEPS starts at 0)."""
    solver = cfg.SOLVER
    k = sum(1 for start in solver.STEPS if start <= epoch) - 1
    return solver.LRS[max(k, 0)] * solver.BASE_LR


_POLICIES = {"cosine": _cosine, "steps_with_relative_lrs": _steps_with_relative_lrs}


def policy_lr(cfg: CfgNode, epoch: float) -> float:
    """The main policy without warm-up."""
    try:
        policy = _POLICIES[cfg.SOLVER.LR_POLICY]
    except KeyError:
        raise NotImplementedError(f"Unknown LR policy: {cfg.SOLVER.LR_POLICY!r} (SOLVER.LR_POLICY); "
                                  f"known: {', '.join(_POLICIES)}.") from None
    return policy(cfg, epoch)


def lr_at_epoch(cfg: CfgNode, epoch: float) -> float:
    """LR at a fractional epoch, with the linear warm-up that ends on the policy's value."""
    warmup = cfg.SOLVER.WARMUP_EPOCHS
    lr = policy_lr(cfg, epoch)
    if epoch < warmup:
        start = cfg.SOLVER.WARMUP_START_LR
        lr = start + epoch * (policy_lr(cfg, warmup) - start) / warmup
    return lr


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
