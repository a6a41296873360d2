"""Training and fine-tuning: `train(cfg)` runs a `Trainer` on every process of the job.

One epoch = optimiser steps (`TrainStep`: k micro-batches each, LR set per step at the
fractional epoch), then on checkpoint/eval epochs: precise BN, the checkpoint (global rank 0,
atomic), validation (of the weight EMA with MODEL.EMA.EVAL). Asked to stop (SIGTERM,
SIGUSR1, a scheduler's signal), every rank stops after the same step, a mid-epoch checkpoint
is written and auto-resume continues from it exactly.
"""
import logging
import math
import os
from collections import deque
from functools import partial
from typing import Optional, Sequence

import torch
from yacs.config import CfgNode

from vov3d.engine import distributed as du
from vov3d.engine.checkpointer import Checkpointer, prepare_checkpoint_dir
from vov3d.engine.ema import EMA_STATE, ModelEma
from vov3d.engine.input_step import InputStep
from vov3d.engine.logging import drop_epoch_records_after, log_json_stats
from vov3d.engine.losses import get_loss_func
from vov3d.engine.meters import EpochMeter, progress_bar
from vov3d.engine.mixup import MixUp
from vov3d.engine.multigrid import Multigrid, prepare_for_multigrid
from vov3d.engine.optimizer import construct_optimizer
from vov3d.engine.position import TrainingPosition
from vov3d.engine.preemption import STOP_SIGNALS, StopSignals, TrainingStopped, stopped_message
from vov3d.engine.runtime import (add_scalars, device, prepare_model, setup_process, tensorboard_writer,
                                  unwrap_model)
from vov3d.engine.schedule import lr_at_epoch, set_lr
from vov3d.engine.train_step import TrainStep
from vov3d.engine.validation import Validator
from vov3d.utils import comm
from vov3d.utils.checkpoint_io import checkpoint_dir, checkpoint_path
from vov3d.utils.errors import UserError
from vov3d.utils.processes import per_process_batch, processes_per_machine
from vov3d.utils.seeding import epoch_seed, iteration_seed, seed_all
from vov3d.utils.threads import governed

logger = logging.getLogger(__name__)

# Warn when waiting for data takes more than half of the iteration time (it dominates).
_DATA_BOUND_WARNING = 0.5


class LossDivergedError(UserError, RuntimeError):
    """A non-finite or exploding loss; raised on every rank at the same iteration."""


def is_checkpoint_epoch(cfg: CfgNode, epoch: int) -> bool:
    return (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0 or epoch + 1 == cfg.SOLVER.MAX_EPOCH


def is_eval_epoch(cfg: CfgNode, epoch: int) -> bool:
    return (epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or epoch + 1 == cfg.SOLVER.MAX_EPOCH


class Trainer:
    def __init__(self, cfg: CfgNode, stop: Optional[StopSignals] = None):
        """`stop`: the signals that ask this run to stop; None never stops it."""
        self.cfg = cfg
        self.stop = stop
        prepare_checkpoint_dir(cfg)  # before the model is built: a refusal costs nothing
        # Multigrid rewrites SOLVER.STEPS/LRS/MAX_EPOCH to its schedule, as PySlowFast does.
        self.multigrid = Multigrid(cfg) if Multigrid.enabled(cfg) else None
        self.device = device(cfg)
        self.input_step = InputStep(cfg, self.device)
        self.model = prepare_model(cfg, train=True)
        if self.multigrid is not None:
            prepare_for_multigrid(self.multigrid, unwrap_model(self.model))
        self.optimizer = construct_optimizer(self.model, cfg)
        self.amp = bool(cfg.TRAIN.MIXED_PRECISION and cfg.NUM_GPUS > 0)
        if cfg.TRAIN.MIXED_PRECISION and not self.amp:
            logger.warning("TRAIN.MIXED_PRECISION is ignored on the CPU (NUM_GPUS 0): training in float32.")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.mixup = MixUp.from_cfg(cfg)
        self.ema = ModelEma(self.model, cfg.MODEL.EMA.DECAY) if cfg.MODEL.EMA.ENABLE else None
        self.step = TrainStep(cfg, self.model, self.optimizer, self.scaler, get_loss_func(cfg.MODEL.LOSS_FUNC),
                              self.input_step, self.amp, self.mixup, self.ema)
        self.build_loaders()
        self.steps_per_epoch = self.step.steps_per_epoch(len(self.train_loader))
        self.checkpointer = Checkpointer(cfg, self.model, self.optimizer, self.scaler, self.class_names)
        if self.ema is not None:
            self.checkpointer.register(EMA_STATE, self.ema)
        self.position = TrainingPosition()
        self.checkpointer.register("position", self.position)
        self.start_epoch = self.checkpointer.resume_or_load("train").epoch + 1
        self.use_epoch_shape(self.start_epoch)
        self._start_ema()
        world = comm.get_world_size()
        start_step = self.position.resume(self.start_epoch, world, per_process_batch(cfg, "train") * world
                                          * self.step.micro_batches, self.steps_per_epoch)
        # Records of steps a killed attempt ran past its last checkpoint are written again.
        drop_epoch_records_after(self.start_epoch, start_step)
        self.writer = tensorboard_writer(cfg)
        self.train_meter = EpochMeter("train", self.steps_per_epoch, cfg.SOLVER.MAX_EPOCH, cfg.LOG_PERIOD)
        self.validator = Validator(cfg, self.val_loader, self.input_step, self.device)
        self.recent_losses = deque(maxlen=5)
        # Augmented copies of each video in a batch (AUG.NUM_SAMPLE); the position counts videos.
        self.copies = cfg.AUG.NUM_SAMPLE if cfg.AUG.ENABLE else 1
        self.log_batch_semantics()

    # -- set-up --------------------------------------------------------------------
    def build_loaders(self) -> None:
        from vov3d.datasets.loader import construct_loader

        self.train_loader = self.train_loader_of(0)
        self.val_loader = construct_loader(self.cfg, "val")
        self.precise_loader = construct_loader(self.cfg, "train") if self.cfg.BN.USE_PRECISE_STATS else None

    def train_loader_of(self, epoch: int):
        """The training loader; with multigrid, of `epoch`'s long-cycle shape and with the
        short cycle's batches."""
        from vov3d.datasets.loader import construct_loader

        if self.multigrid is None:
            return construct_loader(self.cfg, "train")
        self.loader_shape = self.multigrid.shape_at(epoch)
        return self.multigrid.train_loader(epoch)

    def use_epoch_shape(self, epoch: int) -> None:
        """With a multigrid long cycle, a new training loader (and steps per epoch) when
        `epoch`'s shape differs from the current one."""
        if self.multigrid is None or self.multigrid.shape_at(epoch) == self.loader_shape:
            return
        self.train_loader = self.train_loader_of(epoch)
        self.steps_per_epoch = self.step.steps_per_epoch(len(self.train_loader))
        if hasattr(self, "train_meter"):
            self.train_meter.iters = self.steps_per_epoch

    def is_checkpoint_epoch(self, epoch: int) -> bool:
        return self.multigrid.is_checkpoint_epoch(epoch) if self.multigrid else is_checkpoint_epoch(self.cfg, epoch)

    def is_eval_epoch(self, epoch: int) -> bool:
        return self.multigrid.is_eval_epoch(epoch) if self.multigrid else is_eval_epoch(self.cfg, epoch)

    @property
    def class_names(self):
        """The training lists' class names in label order, if they give them."""
        return getattr(self.train_loader.dataset, "class_names", None)

    def _start_ema(self) -> None:
        """The average starts at the weights training starts from, unless a checkpoint held it."""
        if self.ema is None:
            return
        restored = self.ema.restored
        if not restored:
            self.ema.copy_from(self.model)
        logger.info("Weight EMA: decay %g per optimiser step, %s; %s.", self.cfg.MODEL.EMA.DECAY,
                    "restored from the checkpoint" if restored else "starting at the weights training starts from",
                    "validation and the test use the averaged weights" if self.cfg.MODEL.EMA.EVAL else
                    "validation and the test use the trained weights (MODEL.EMA.EVAL False)")

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validation scores: the EMA with MODEL.EMA.ENABLE and EVAL."""
        return self.ema.module if self.ema is not None and self.cfg.MODEL.EMA.EVAL else self.model

    def log_batch_semantics(self) -> None:
        cfg = self.cfg
        expected = per_process_batch(cfg, "train")
        actual = getattr(self.train_loader, "batch_size", None) or expected
        if actual != expected:
            logger.warning("The train loader gives %d clips per process; TRAIN.BATCH_SIZE %d over %d "
                           "processes per machine means %d. Reporting the loader's value.",
                           actual, cfg.TRAIN.BATCH_SIZE, processes_per_machine(cfg), expected)
        if cfg.AUG.ENABLE and cfg.AUG.NUM_SAMPLE > 1:
            logger.info("AUG.NUM_SAMPLE %d: every video of a batch is decoded once and augmented %d times, so a "
                        "process's batch holds %d clips (the LR is not scaled for the copies).", cfg.AUG.NUM_SAMPLE,
                        cfg.AUG.NUM_SAMPLE, actual * cfg.AUG.NUM_SAMPLE)
        world, k = comm.get_world_size(), self.step.micro_batches
        self.global_batch = actual * world
        self.effective_batch = self.global_batch * k
        logger.info("Batch: %d clips per process x %d processes (%d per machine x %d machines) = global "
                    "batch %d; x %d micro-batches per optimiser step (TRAIN.GRAD_ACCUMULATION_STEPS) = "
                    "effective batch %d, %d optimiser steps per epoch. LR: SOLVER.BASE_LR %g (after any "
                    "shard/reference-batch scaling), %s, %g epochs of warm-up from %g; LR at the start "
                    "epoch %d: %g.",
                    actual, world, processes_per_machine(cfg), max(world // processes_per_machine(cfg), 1),
                    self.global_batch, k, self.effective_batch, self.steps_per_epoch, cfg.SOLVER.BASE_LR,
                    cfg.SOLVER.LR_POLICY, cfg.SOLVER.WARMUP_EPOCHS, cfg.SOLVER.WARMUP_START_LR,
                    self.start_epoch + 1, lr_at_epoch(cfg, self.start_epoch))

    # -- the loop ------------------------------------------------------------------
    def fit(self) -> None:
        cfg = self.cfg
        if self.start_epoch >= cfg.SOLVER.MAX_EPOCH:
            logger.info("Training already finished: the checkpoint holds epoch %d of SOLVER.MAX_EPOCH %d, "
                        "nothing to train (raise SOLVER.MAX_EPOCH to train longer).", self.start_epoch,
                        cfg.SOLVER.MAX_EPOCH)
        else:
            logger.info("Start epoch: %d of %d", self.start_epoch + 1, cfg.SOLVER.MAX_EPOCH)
        for epoch in range(self.start_epoch, cfg.SOLVER.MAX_EPOCH):
            self.use_epoch_shape(epoch)
            self.seed_epoch(epoch)
            self.train_epoch(epoch)
            save, evaluate = self.is_checkpoint_epoch(epoch), self.is_eval_epoch(epoch)
            if (save or evaluate) and cfg.BN.USE_PRECISE_STATS:
                self.precise_bn(epoch)
            self.position.start_epoch(epoch + 1, comm.get_world_size())
            if save:
                self.checkpointer.save(epoch)
            if evaluate:
                self.validate(epoch)
            if self._stop_agreed():
                self._stop(epoch, None, saved=save)
        # The test job that follows must find the last checkpoint written by rank 0.
        du.barrier()
        if self.writer is not None:
            self.writer.close()

    def seed_epoch(self, epoch: int) -> None:
        """Everything random in the epoch (shuffle order, augmentation, dropout, mixing) then
        depends on (RNG_SEED, epoch, rank) and the step or sample only, not on how many epochs
        or steps this process has run (see seed_step), so a run resumed at an epoch boundary
        or in the middle of an epoch repeats the uninterrupted run bit for bit."""
        from vov3d.datasets.loader import set_epoch

        if not self.position.resumes_in(epoch):
            self.position.start_epoch(epoch, comm.get_world_size())
        seed_all(epoch_seed(self.cfg.RNG_SEED, epoch, comm.get_rank(), "process"))
        set_epoch(self.train_loader, self.cfg.RNG_SEED, epoch, start=self.position.samples)
        if self.mixup is not None:
            self.mixup.seed(epoch_seed(self.cfg.RNG_SEED, epoch, comm.get_rank(), "mixup"))

    def seed_step(self, epoch: int, step: int) -> None:
        """This process's generators (dropout, drop-connect) and the mixing parameters of an
        optimiser step depend on its place in the epoch only."""
        rank = comm.get_rank()
        seed_all(iteration_seed(self.cfg.RNG_SEED, epoch, rank, step))
        if self.mixup is not None:
            self.mixup.seed(iteration_seed(self.cfg.RNG_SEED, epoch, rank, step, "mixup"))
        if self.step.eraser is not None:
            self.step.eraser.seed(iteration_seed(self.cfg.RNG_SEED, epoch, rank, step, "erasing"))

    def _stop_agreed(self) -> bool:
        """Whether any rank was asked to stop; a collective, so every rank asks at the same point."""
        return self.stop is not None and du.any_rank(self.stop.requested, self.device)

    def _stop(self, epoch: int, step: Optional[int], saved: bool = False) -> None:
        """Save where the run is (after `step` optimiser steps of `epoch`; None: the epoch is
        finished, `saved` already) on every rank, then raise TrainingStopped."""
        if not saved:
            self.checkpointer.save(epoch, step)
        path = checkpoint_path(self.cfg.OUTPUT_DIR, epoch, step) if comm.is_root_proc() else None
        message = stopped_message(self.stop.received, epoch, self.cfg.SOLVER.MAX_EPOCH, step,
                                  self.steps_per_epoch, path)
        logger.warning(message)
        raise TrainingStopped(message, self.stop.received)

    def _check_loss(self, loss: torch.Tensor, epoch: int, it: int, lr: float) -> None:
        """Stop every rank together on a non-finite (or exploding) loss, before backward."""
        value = float(loss.detach())
        bad = not math.isfinite(value)
        factor = self.cfg.TRAIN.KILL_LOSS_EXPLOSION_FACTOR
        exploded = (factor > 0 and len(self.recent_losses) == self.recent_losses.maxlen
                    and value > factor * sum(self.recent_losses) / len(self.recent_losses))
        self.recent_losses.append(value)
        if du.any_rank(bad or exploded, self.device):
            what = (f"loss {value}" if bad or exploded else "a non-finite or exploding loss on another rank")
            message = (f"Training stopped at epoch {epoch + 1}/{self.cfg.SOLVER.MAX_EPOCH}, iteration "
                       f"{it + 1}/{self.steps_per_epoch}, lr {lr:.6g}: {what}"
                       f"{' (> %g x the mean of the previous 5)' % factor if exploded else ''}. "
                       "Nothing was saved after this point; lower SOLVER.BASE_LR, enable gradient clipping "
                       "(SOLVER.CLIP_GRAD_L2NORM) or check the input data.")
            logger.error(message)
            raise LossDivergedError(message)

    def train_epoch(self, epoch: int) -> None:
        """`steps_per_epoch` optimiser steps, the LR set before each at its fractional epoch."""
        cfg, meter, steps = self.cfg, self.train_meter, self.steps_per_epoch
        self.model.train()
        meter.reset()
        first = self.position.iteration  # > 0 when a stopped run continues this epoch
        if first:
            meter.restore_totals(self.position.meter)
        world = comm.get_world_size()
        failures = 0
        batches = governed(progress_bar(self.train_loader, f"epoch {epoch + 1}"))
        for step in range(first, steps):
            self.seed_step(epoch, step)
            lr = lr_at_epoch(cfg, epoch + step / steps)
            set_lr(self.optimizer, lr)
            result = self.step.run(batches, partial(self._check_loss, epoch=epoch, it=step, lr=lr))
            loss_v, top1, top5 = (float(v) for v in du.all_reduce_mean([result.loss, result.top1_err,
                                                                         result.top5_err]))
            meter.update_time(result.dt_data, result.dt_net)
            meter.update_stats(top1, top5, result.samples * comm.get_world_size(), loss=loss_v, lr=lr)
            failures += result.failures
            add_scalars(self.writer, {"Train/loss": loss_v, "Train/lr": lr, "Train/Top1_err": top1,
                                      "Train/Top5_err": top5, "Train/Data_time": result.dt_data},
                        steps * epoch + step)
            stats = meter.iter_stats(epoch, step)
            if stats is not None:
                log_json_stats(stats)
            self.position.advance(result.samples * world // self.copies)  # videos of the epoch's order
            if self._stop_agreed():  # between two steps no gradient is pending
                self.position.meter = meter.totals()
                self._stop(epoch, step + 1)
        stats = meter.epoch_stats(epoch)
        stats["data_failures"] = int(du.all_reduce_sum([failures], self.device)[0])
        log_json_stats(stats)
        add_scalars(self.writer, {"Train_epoch/loss": stats["loss"], "Train_epoch/lr": stats["lr"],
                                  "Train_epoch/Top1_err": stats["top1_err"], "Train_epoch/Top5_err": stats["top5_err"],
                                  "Train_epoch/Data_time": stats["dt_data"]}, epoch + 1)
        if stats["data_failures"]:
            logger.warning("%d clip loads failed and were retried in epoch %d (see OUTPUT_DIR/bad_videos.txt).",
                           stats["data_failures"], epoch + 1)
        share = meter.data_bound_fraction()
        if share > _DATA_BOUND_WARNING:
            logger.warning("Waiting for data took %.0f%% of the iteration time in epoch %d: the loader is "
                           "the bottleneck. Raise DATA_LOADER.NUM_WORKERS, pre-resize videos to a 256 px "
                           "short side, or measure with tools/benchmark_data.py.", 100 * share, epoch + 1)

    def validate(self, epoch: int) -> None:
        self.validator.run(self.eval_model, epoch, self.writer, self.class_names)
        self.model.train()

    def precise_bn(self, epoch: int) -> None:
        """Exact BN statistics over NUM_BATCHES_PRECISE training batches (each rank its own),
        drawn as a function of (RNG_SEED, epoch, rank), like the epoch's own batches."""
        from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

        from vov3d.datasets.loader import set_epoch

        model = unwrap_model(self.model)
        if not get_bn_modules(model):
            return
        num = min(self.cfg.BN.NUM_BATCHES_PRECISE, len(self.precise_loader))
        # The EMA's statistics are recomputed for its own weights, over the same batches.
        for name, net in (("", model), (" of the EMA weights", self.ema and self.ema.module)):
            if net is None:
                continue
            set_epoch(self.precise_loader, self.cfg.RNG_SEED, epoch, "precise_bn")
            inputs = (self.input_step.inputs(batch[0]) for batch in self.precise_loader)
            logger.info("Precise BN: recomputing the BN statistics%s over %d training batches.", name, num)
            was_training = net.training
            net.train()
            update_bn_stats(net, inputs, num)
            net.train(was_training)


def train(cfg: CfgNode, stop_signals: Sequence[int] = STOP_SIGNALS) -> None:
    """Entry point for `launch_job`: one process's share of the training job. While it
    trains, `stop_signals` stop it cleanly after the next step (TrainingStopped)."""
    setup_process(cfg)
    logger.info("Train with config:\n%s", cfg.dump())
    _warn_unusable_test_path(cfg)
    with StopSignals(stop_signals) as stop:
        Trainer(cfg, stop).fit()


def _warn_unusable_test_path(cfg: CfgNode) -> None:
    """A TEST.CHECKPOINT_FILE_PATH typo would only fail after training: say so now."""
    path = cfg.TEST.CHECKPOINT_FILE_PATH
    if not (cfg.TEST.ENABLE and path) or os.path.isfile(path):
        return
    inside_run = os.path.abspath(path).startswith(os.path.abspath(checkpoint_dir(cfg.OUTPUT_DIR)) + os.sep)
    if not inside_run:  # a checkpoint this run will write is fine
        logger.warning("!!! TEST.CHECKPOINT_FILE_PATH '%s' %s: the test after training will fail. !!!", path,
                       "is a directory" if os.path.isdir(path) else "does not exist")
