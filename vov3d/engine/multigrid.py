"""Multigrid training (Wu et al., CVPR 2020) under PySlowFast's MULTIGRID keys.

Long cycle: the epochs are split into ranges, each training at a (batch, frames, crop)
shape whose clip volume x batch equals the base shape's (DEFAULT_T x DEFAULT_S^2 x
DEFAULT_B), with the LR scaled by the batch factor; SOLVER.STEPS, LRS and MAX_EPOCH are
rewritten to that schedule exactly as PySlowFast does, MAX_EPOCH becoming EPOCH_FACTOR x the
base schedule's. Short cycle: within an epoch, iterations cycle through crops of
SHORT_CYCLE_FACTORS x DEFAULT_S and the full crop, with batches grown to match
(datasets/short_cycle.py); on its own it stretches STEPS and MAX_EPOCH by EPOCH_FACTOR.

The model is the same at every shape: heads pool adaptively and BN normalises over
sub-batches of BN_BASE_SIZE clips (models/heads.py, models/batchnorm.py), so weights,
optimiser and state dicts carry over; only the training loader is rebuilt when the shape
changes. Validation, precise BN and the test run at the base shape.

Differences from PySlowFast, on purpose: the long cycle on its own (SHORT_CYCLE False)
fine-tunes at the last long-cycle shape (PySlowFast indexes a third short-cycle shape that
does not exist there); the LR of step k is SOLVER.LRS[k] x the batch factor instead of
SOLVER.GAMMA^k x the factor (vov3d has no GAMMA; PySlowFast's multigrid configs use
LRS = GAMMA^k, which gives the same numbers).
"""
import copy
import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.datasets.clip_dataset import short_cycle_crop
from vov3d.datasets.short_cycle import short_cycle_batch_sizes

logger = logging.getLogger(__name__)

Shape = Tuple[int, int, int]  # (batch factor relative to DEFAULT_B, frames, crop)


@dataclass(frozen=True)
class Stage:
    step_index: int  # index into the original SOLVER.STEPS (the fine-tuning phase: len - 1)
    shape: Shape
    end_epoch: int  # exclusive


def _short_cycle_crops(cfg: CfgNode) -> List[float]:
    return [cfg.MULTIGRID.DEFAULT_S * f for f in cfg.MULTIGRID.SHORT_CYCLE_FACTORS]


def long_cycle_schedule(cfg: CfgNode) -> List[Stage]:
    """The long-cycle stages of a config whose MULTIGRID.DEFAULT_* are set (PySlowFast's
    rules: each base shape gets epochs in proportion to its mean batch, iterations saved
    on the fine-tuning phase as on the rest, then all scaled to EPOCH_FACTOR x MAX_EPOCH)."""
    mg, steps = cfg.MULTIGRID, list(cfg.SOLVER.STEPS)
    default_size = float(cfg.DATA.NUM_FRAMES * cfg.DATA.TRAIN_CROP_SIZE ** 2)
    mean_batches, all_shapes = [], []
    for t_factor, s_factor in mg.LONG_CYCLE_FACTORS:
        base_t = int(round(cfg.DATA.NUM_FRAMES * t_factor))
        base_s = int(round(cfg.DATA.TRAIN_CROP_SIZE * s_factor))
        sizes = [(base_t, s) for s in _short_cycle_crops(cfg)] if mg.SHORT_CYCLE else []
        sizes.append((base_t, base_s))
        shapes = [(int(round(default_size / (t * s * s))), t, s) for t, s in sizes]
        mean_batches.append(sum(b for b, _, _ in shapes) / len(shapes))
        all_shapes.append(shapes)
    stages, total_iters = [], 0.0
    for k in range(len(steps) - 1):
        step_epochs = steps[k + 1] - steps[k]
        for mean, shapes in zip(mean_batches, all_shapes):
            epochs = step_epochs * mean / sum(mean_batches)
            total_iters += epochs / mean
            stages.append((k, shapes[-1], epochs))
    iter_saving = steps[-1] / total_iters
    fine_tune = (cfg.SOLVER.MAX_EPOCH - steps[-1]) / iter_saving * mean_batches[-1]
    stages.append((len(steps) - 1, all_shapes[-1][-1], fine_tune))
    scale = cfg.SOLVER.MAX_EPOCH * mg.EPOCH_FACTOR / sum(e for _, _, e in stages)
    result, total = [], 0.0
    for k, shape, epochs in stages:
        total += epochs * scale
        b, t, s = shape
        result.append(Stage(k, (b, t, int(s)), int(round(total))))
    return result


def rewrite_solver(cfg: CfgNode, schedule: Optional[List[Stage]]) -> None:
    """SOLVER.STEPS / LRS / MAX_EPOCH of the multigrid schedule (in place)."""
    solver = cfg.SOLVER
    if schedule is None:  # short cycle only: the same schedule, EPOCH_FACTOR times longer
        solver.STEPS = [int(s * cfg.MULTIGRID.EPOCH_FACTOR) for s in solver.STEPS]
        solver.MAX_EPOCH = int(solver.MAX_EPOCH * cfg.MULTIGRID.EPOCH_FACTOR)
        return
    steps = [0] + [s.end_epoch for s in schedule]
    steps[-1] = (steps[-2] + steps[-1]) // 2  # the fine-tuning phase's LR drops half-way
    lrs = [solver.LRS[s.step_index] * s.shape[0] for s in schedule]
    solver.STEPS, solver.LRS = steps, lrs[:-1] + [lrs[-2], lrs[-1]]
    solver.MAX_EPOCH = schedule[-1].end_epoch


class Multigrid:
    """The schedule of one training run; `init` rewrites the config as PySlowFast does."""

    def __init__(self, cfg: CfgNode):
        mg = cfg.MULTIGRID
        was_frozen = cfg.is_frozen()
        cfg.defrost()
        mg.DEFAULT_B, mg.DEFAULT_T, mg.DEFAULT_S = cfg.TRAIN.BATCH_SIZE, cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE
        self.base = (cfg.TRAIN.BATCH_SIZE, cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE)
        self.base_max_epoch = cfg.SOLVER.MAX_EPOCH
        self.schedule = long_cycle_schedule(cfg) if mg.LONG_CYCLE else None
        rewrite_solver(cfg, self.schedule)
        if was_frozen:
            cfg.freeze()
        self.cfg = cfg

    @staticmethod
    def enabled(cfg: CfgNode) -> bool:
        return bool(cfg.MULTIGRID.LONG_CYCLE or cfg.MULTIGRID.SHORT_CYCLE)

    def shape_at(self, epoch: int) -> Shape:
        """The long-cycle base shape of `epoch` ((1, T, S) of the base without long cycle)."""
        if self.schedule is None:
            return (1, self.base[1], self.base[2])
        return next((s.shape for s in self.schedule if epoch < s.end_epoch), self.schedule[-1].shape)

    def epoch_cfg(self, epoch: int) -> CfgNode:
        """The config the training loader of `epoch` is built from."""
        b, t, s = self.shape_at(epoch)
        cfg = copy.deepcopy(self.cfg)
        cfg.defrost()
        cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = t, s
        cfg.TRAIN.BATCH_SIZE = b * self.base[0]
        if self.schedule is not None:
            cfg.MULTIGRID.LONG_CYCLE_SAMPLING_RATE = cfg.DATA.SAMPLING_RATE * (self.base[1] // t)
        cfg.freeze()
        return cfg

    def train_loader(self, epoch: int):
        """The training loader of `epoch`'s long-cycle shape, with the short cycle's batches."""
        from vov3d.datasets.loader import construct_loader

        cfg = self.epoch_cfg(epoch)
        loader = construct_loader(cfg, "train", short_cycle=cfg.MULTIGRID.SHORT_CYCLE)
        logger.info("Multigrid shape from epoch %d: batch %d x %d frames (sampling rate up to %d) x %d^2 px, "
                    "%d loader batches per epoch.", epoch + 1, cfg.TRAIN.BATCH_SIZE, cfg.DATA.NUM_FRAMES,
                    max(cfg.MULTIGRID.LONG_CYCLE_SAMPLING_RATE, cfg.DATA.SAMPLING_RATE), cfg.DATA.TRAIN_CROP_SIZE,
                    len(loader))
        return loader

    def _period_hit(self, epoch: int) -> Optional[bool]:
        """PySlowFast's EVAL_FREQ rule: about EVAL_FREQ evaluations per stage, the last at its end."""
        if epoch + 1 == self.cfg.SOLVER.MAX_EPOCH:
            return True
        if self.schedule is None:
            return None
        previous = 0
        for stage in self.schedule:
            if epoch < stage.end_epoch:
                period = max((stage.end_epoch - previous) // self.cfg.MULTIGRID.EVAL_FREQ + 1, 1)
                return (stage.end_epoch - 1 - epoch) % period == 0
            previous = stage.end_epoch
        return None

    def is_eval_epoch(self, epoch: int) -> bool:
        hit = self._period_hit(epoch)
        return hit if hit is not None else (epoch + 1) % self.cfg.TRAIN.EVAL_PERIOD == 0

    def is_checkpoint_epoch(self, epoch: int) -> bool:
        hit = self._period_hit(epoch)
        return hit if hit is not None else (epoch + 1) % self.cfg.TRAIN.CHECKPOINT_PERIOD == 0

    def describe(self) -> str:
        b, t, s = self.base
        lines = [f"Multigrid: base shape batch {b} x {t} frames x {s}^2; "
                 f"SOLVER.MAX_EPOCH {self.cfg.SOLVER.MAX_EPOCH}, STEPS {list(self.cfg.SOLVER.STEPS)}, "
                 f"LRS {[round(v, 6) for v in self.cfg.SOLVER.LRS]}"]
        if self.cfg.MULTIGRID.SHORT_CYCLE:
            crops = [int(round(c)) for c in _short_cycle_crops(self.cfg)]
            lines.append(f"  short cycle: crops {crops} then the stage's crop, batches grown by the area ratio")
        if self.schedule is not None:
            lines.append("  long cycle: step  epochs         batch  frames  crop")
            start = 0
            for stage in self.schedule:
                sb, st, ss = stage.shape
                lines.append(f"              {stage.step_index:<4d}  [{start:>4d}, {stage.end_epoch:>4d})  "
                             f"{sb * b:>5d}  {st:>6d}  {ss:>4d}")
                start = stage.end_epoch
        return "\n".join(lines)

    def shapes(self) -> List[Tuple[int, int]]:
        """Every (frames, crop) the model will see in training."""
        stages = self.schedule or [Stage(0, (1, self.base[1], self.base[2]), 0)]
        crops = [int(round(c)) for c in _short_cycle_crops(self.cfg)] if self.cfg.MULTIGRID.SHORT_CYCLE else []
        return sorted({(s.shape[1], c) for s in stages for c in crops + [s.shape[2]]})


def epoch_clip_mix(multigrid: Multigrid, epoch: int) -> List[Tuple[float, int, int]]:
    """(share of the epoch's clips, frames, crop) of the shapes `epoch` trains on."""
    b, t, s = multigrid.shape_at(epoch)
    if not multigrid.cfg.MULTIGRID.SHORT_CYCLE:
        return [(1.0, t, s)]
    stage_cfg = multigrid.epoch_cfg(epoch)
    sizes = short_cycle_batch_sizes(stage_cfg, b * multigrid.base[0])
    crops = [short_cycle_crop(stage_cfg, step) for step in (0, 1, 2)]
    return [(size / sum(sizes), t, crop) for size, crop in zip(sizes, crops)]


def schedule_flops(multigrid: Multigrid, model: torch.nn.Module) -> Tuple[float, float]:
    """Forward FLOPs per training video of the whole multigrid schedule and of the plain one
    (the base MAX_EPOCH at the base shape), counted on a meta copy of the model: training
    FLOPs (forward and backward) are proportional to these."""
    from vov3d.models.complexity import conv_linear_flops

    meta = copy.deepcopy(model).to("meta")
    channels = multigrid.cfg.DATA.INPUT_CHANNEL_NUM[0]
    cache = {}

    def flops(frames: int, crop: int) -> int:
        if (frames, crop) not in cache:
            cache[frames, crop] = conv_linear_flops(meta, (1, channels, frames, crop, crop))
        return cache[frames, crop]
    total = sum(share * flops(t, s) for e in range(multigrid.cfg.SOLVER.MAX_EPOCH)
                for share, t, s in epoch_clip_mix(multigrid, e))
    return total, multigrid.base_max_epoch * flops(multigrid.base[1], multigrid.base[2])


def check_model_shapes(multigrid: Multigrid, model: torch.nn.Module) -> None:
    """Refuse, before training, any multigrid shape the model cannot take: each is run
    through a copy of the model on the meta device (no memory, no arithmetic)."""
    meta = copy.deepcopy(model).to("meta").train()
    channels = multigrid.cfg.DATA.INPUT_CHANNEL_NUM[0]
    for frames, crop in multigrid.shapes():
        try:
            with torch.no_grad():
                meta([torch.empty(2, channels, frames, crop, crop, device="meta")])
        except Exception as error:
            mg, (_, t, s) = multigrid.cfg.MULTIGRID, multigrid.base
            reason = str(error).splitlines()[0] if str(error) else ""
            raise ConfigError(
                f"MULTIGRID: the model {multigrid.cfg.MODEL.MODEL_NAME} cannot train on clips of {frames} frames x "
                f"{crop}^2 px, a shape of MULTIGRID.LONG_CYCLE_FACTORS {mg.LONG_CYCLE_FACTORS} / SHORT_CYCLE_FACTORS "
                f"{mg.SHORT_CYCLE_FACTORS} on DATA.NUM_FRAMES {t} and DATA.TRAIN_CROP_SIZE {s} "
                f"({type(error).__name__}: {reason}); choose factors giving larger shapes.") from None


def prepare_for_multigrid(multigrid: Multigrid, model: torch.nn.Module) -> None:
    """Make the bare `model` take every shape of the schedule (adaptive head pooling, BN over
    sub-batches of BN_BASE_SIZE clips), refuse shapes it cannot take, and print the schedule."""
    from vov3d.models.batchnorm import use_sub_batch_norm
    from vov3d.models.heads import use_adaptive_pooling

    use_adaptive_pooling(model)
    use_sub_batch_norm(model, multigrid.cfg.MULTIGRID.BN_BASE_SIZE)
    check_model_shapes(multigrid, model)
    total, plain = schedule_flops(multigrid, model)
    logger.info("%s\n  BN statistics over sub-batches of MULTIGRID.BN_BASE_SIZE %d clips; heads pool the whole "
                "final map; validation, precise BN and the test run at the base shape.\n  FLOPs of the whole "
                "schedule: %.3f of the plain schedule's (%d epochs at the base shape; %.2fx fewer).",
                multigrid.describe(), multigrid.cfg.MULTIGRID.BN_BASE_SIZE, total / plain,
                multigrid.base_max_epoch, plain / total)
