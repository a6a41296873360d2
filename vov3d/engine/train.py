"""Training and fine-tuning: `train(cfg)` runs a `Trainer` on every process of the job.

One epoch = train iterations (LR set per iteration at the fractional epoch), then on
checkpoint/eval epochs: precise BN, the checkpoint (global rank 0, atomic), validation.
"""
import logging
import math
import os
import sys
from collections import deque
import torch
from yacs.config import CfgNode

from vov3d.engine import checkpoint as cu
from vov3d.engine import distributed as du
from vov3d.engine.logging import log_json_stats
from vov3d.engine.losses import get_loss_func
from vov3d.engine.meters import EpochMeter, Timer, topk_errors, topks_correct
from vov3d.engine.optimizer import clip_gradients, construct_optimizer
from vov3d.engine.runtime import (add_scalars, device, epoch_stream_seed, prepare_model, seed_epoch,
                                  setup_process, tensorboard_writer, to_device)
from vov3d.engine.schedule import lr_at_epoch, set_lr
from vov3d.engine.test import results_path
from vov3d.utils.errors import UserError
from vov3d.utils.processes import per_process_batch, processes_per_machine
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


def _progress(loader, desc: str):
    """A tqdm bar with ETA on an interactive console; the plain loader in log files."""
    if not (sys.stdout.isatty() and du.is_master_proc()):
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=len(loader), desc=desc, dynamic_ncols=True, leave=False)


class Trainer:
    def __init__(self, cfg: CfgNode):
        self.cfg = cfg
        self.device = device(cfg)
        self.model = prepare_model(cfg, train=True)
        self.optimizer = construct_optimizer(self.model, cfg)
        self.amp = bool(cfg.TRAIN.MIXED_PRECISION and cfg.NUM_GPUS > 0)
        if cfg.TRAIN.MIXED_PRECISION and not self.amp:
            logger.warning("TRAIN.MIXED_PRECISION is ignored on the CPU (NUM_GPUS 0): training in float32.")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss_fn = get_loss_func(cfg.MODEL.LOSS_FUNC)
        self.build_loaders()
        self.start_epoch = self.load_checkpoint() + 1
        self.writer = tensorboard_writer(cfg)
        self.train_meter = EpochMeter("train", len(self.train_loader), cfg.SOLVER.MAX_EPOCH, cfg.LOG_PERIOD)
        self.val_meter = EpochMeter("val", max(len(self.val_loader), 1), cfg.SOLVER.MAX_EPOCH, cfg.LOG_PERIOD)
        self.recent_losses = deque(maxlen=5)
        self.log_batch_semantics()

    # -- set-up --------------------------------------------------------------------
    def build_loaders(self) -> None:
        from vov3d.datasets.loader import construct_loader

        self.train_loader = construct_loader(self.cfg, "train")
        self.val_loader = construct_loader(self.cfg, "val")
        self.precise_loader = construct_loader(self.cfg, "train") if self.cfg.BN.USE_PRECISE_STATS else None
        self._check_test_lists()

    @property
    def class_names(self):
        """The training lists' class names in label order, if they give them."""
        return getattr(self.train_loader.dataset, "class_names", None)

    def _check_test_lists(self) -> None:
        """Read the test lists now: a missing or malformed test list should stop the run
        before training, not after it."""
        if self.cfg.TEST.ENABLE:
            from vov3d.datasets import build_dataset

            build_dataset(self.cfg.TEST.DATASET, self.cfg, "test")

    def shuffle(self, epoch: int) -> None:
        """Shuffle order and augmentation seeds of the epoch, a function of the epoch only."""
        from vov3d.datasets.loader import shuffle_dataset

        shuffle_dataset(self.train_loader, epoch)
        precise = self.precise_loader
        if precise is not None:
            # Otherwise its generator runs on from the previous epochs of this process, and
            # precise BN after a resume would see other batches than without the interruption.
            if hasattr(precise.sampler, "set_epoch"):
                precise.sampler.set_epoch(epoch)
            if getattr(precise, "generator", None) is not None:
                precise.generator.manual_seed(epoch_stream_seed(self.cfg, epoch, "precise_bn"))

    def load_checkpoint(self) -> int:
        """Auto-resume (newest readable checkpoint) > TRAIN.CHECKPOINT_FILE_PATH > scratch.

        Returns the last finished 0-based epoch (-1 = start from scratch). Rank 0 chooses
        the file so that all ranks load the same one.
        """
        cfg = self.cfg
        if cfg.TRAIN.AUTO_RESUME:
            path = obj = error = None
            if du.is_root_proc():
                try:
                    path, obj = self._find_resumable()
                except cu.CheckpointError as e:
                    error = e
            # The verdict, error included, reaches every rank: none waits for a failed peer.
            path, error = du.broadcast_object((path, error))
            if error is not None:
                raise error
            if path is not None:
                if obj is None:
                    obj = cu.read_checkpoint(path, unsafe=cfg.TRAIN.CHECKPOINT_UNSAFE_LOAD)
                # Refuses a checkpoint of another experiment (stored MODEL_NAME / NUM_CLASSES differ)
                # before comparing tensors: the cause is a reused OUTPUT_DIR, not the file.
                epoch = cu.load_for_resume(path, self.model, self.optimizer, self.scaler, obj=obj,
                                           class_names=self.class_names, cfg=cfg)
                if cfg.TRAIN.CHECKPOINT_FILE_PATH:
                    logger.info("TRAIN.CHECKPOINT_FILE_PATH %s is not used: auto-resume takes precedence.",
                                cfg.TRAIN.CHECKPOINT_FILE_PATH)
                logger.info("Weights source: auto-resume from %s (finished epoch %d).", path, epoch + 1)
                return epoch
        if cfg.TRAIN.CHECKPOINT_FILE_PATH:
            epoch = cu.load_for_finetune(cfg.TRAIN.CHECKPOINT_FILE_PATH, self.model, cfg,
                                         self.optimizer, self.scaler, class_names=self.class_names)
            logger.info("Weights source: initialised from TRAIN.CHECKPOINT_FILE_PATH %s.",
                        cfg.TRAIN.CHECKPOINT_FILE_PATH)
            return epoch
        logger.info("Weights source: random initialisation (no checkpoint to resume, "
                    "TRAIN.CHECKPOINT_FILE_PATH empty).")
        return -1

    def _find_resumable(self):
        """(path, contents) of the newest readable checkpoint, (None, None) for a fresh run.

        Refuses when checkpoints exist but none can be read: starting afresh would overwrite
        them one by one, and when every file fails the cause is rarely the files themselves
        (e.g. written by a newer PyTorch).
        """
        cfg = self.cfg
        path, obj = cu.newest_readable(cfg.OUTPUT_DIR, unsafe=cfg.TRAIN.CHECKPOINT_UNSAFE_LOAD)
        present = cu.list_checkpoints(cfg.OUTPUT_DIR)
        if path is None and present:
            raise cu.CheckpointError(
                f"auto-resume found {len(present)} checkpoint(s) in {cu.checkpoint_dir(cfg.OUTPUT_DIR)} but none "
                f"can be read (newest: '{present[-1]}'; the reasons are logged above). Starting afresh would "
                "overwrite them: move them away or use a new OUTPUT_DIR to start from scratch, or set "
                "TRAIN.AUTO_RESUME False.")
        return path, obj

    def log_batch_semantics(self) -> None:
        cfg = self.cfg
        expected = per_process_batch(cfg, "train")
        actual = getattr(self.train_loader, "batch_size", None) or expected
        if actual != expected:
            logger.warning("The train loader gives %d clips per process; TRAIN.BATCH_SIZE %d over %d "
                           "processes per machine means %d. Reporting the loader's value.",
                           actual, cfg.TRAIN.BATCH_SIZE, processes_per_machine(cfg), expected)
        world = du.get_world_size()
        self.global_batch = actual * world
        logger.info("Batch: %d clips per process x %d processes (%d per machine x %d machines) = global "
                    "batch %d. LR: SOLVER.BASE_LR %g (after any shard/reference-batch scaling), %s, "
                    "%g epochs of warm-up from %g; LR at the start epoch %d: %g.",
                    actual, world, processes_per_machine(cfg), max(world // processes_per_machine(cfg), 1),
                    self.global_batch, cfg.SOLVER.BASE_LR, cfg.SOLVER.LR_POLICY, cfg.SOLVER.WARMUP_EPOCHS,
                    cfg.SOLVER.WARMUP_START_LR, self.start_epoch + 1, lr_at_epoch(cfg, self.start_epoch))

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
            seed_epoch(cfg, epoch)
            self.shuffle(epoch)
            self.train_epoch(epoch)
            save, evaluate = is_checkpoint_epoch(cfg, epoch), is_eval_epoch(cfg, epoch)
            if (save or evaluate) and cfg.BN.USE_PRECISE_STATS:
                self.precise_bn()
            if save and du.is_root_proc():
                cu.save_checkpoint(cfg.OUTPUT_DIR, self.model, self.optimizer, epoch, cfg, self.scaler,
                                   keep_last=cfg.TRAIN.CHECKPOINT_KEEP_LAST, class_names=self.class_names)
            if evaluate:
                self.validate(epoch)
        # The test job that follows must find the last checkpoint written by rank 0.
        du.barrier()
        if self.writer is not None:
            self.writer.close()

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
                       f"{it + 1}/{len(self.train_loader)}, lr {lr:.6g}: {what}"
                       f"{' (> %g x the mean of the previous 5)' % factor if exploded else ''}. "
                       "Nothing was saved after this point; lower SOLVER.BASE_LR, enable gradient clipping "
                       "(SOLVER.CLIP_GRAD_L2NORM) or check the input data.")
            logger.error(message)
            raise LossDivergedError(message)

    def train_epoch(self, epoch: int) -> None:
        cfg, meter = self.cfg, self.train_meter
        self.model.train()
        meter.reset()
        iters = len(self.train_loader)
        failures = 0
        data_timer = Timer()
        batches = governed(_progress(self.train_loader, f"epoch {epoch + 1}"))
        for it, (inputs, labels, _, meta) in enumerate(batches):
            dt_data = data_timer.seconds()
            net_timer = Timer()
            inputs, labels = to_device(inputs, self.device), to_device(labels, self.device)
            lr = lr_at_epoch(cfg, epoch + it / iters)
            set_lr(self.optimizer, lr)
            with torch.autocast(device_type=self.device.type, enabled=self.amp):
                preds = self.model(inputs)
                loss = self.loss_fn(preds, labels)
            self._check_loss(loss, epoch, it, lr)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.SOLVER.CLIP_GRAD_VAL is not None or cfg.SOLVER.CLIP_GRAD_L2NORM is not None:
                self.scaler.unscale_(self.optimizer)
                clip_gradients(self.model.parameters(), cfg)
            self.scaler.step(self.optimizer)
            self.scaler.update()

            hard = labels if labels.ndim == 1 else labels.argmax(dim=1)
            top1, top5 = topk_errors(preds.detach(), hard, (1, 5))
            loss_v, top1, top5 = (float(v) for v in du.all_reduce_mean([loss.detach(), top1, top5]))
            meter.update_time(dt_data, net_timer.seconds())
            meter.update_stats(top1, top5, labels.shape[0] * du.get_world_size(), loss=loss_v, lr=lr)
            failures += int(meta["num_failures"].sum()) if "num_failures" in meta else 0
            add_scalars(self.writer, {"Train/loss": loss_v, "Train/lr": lr, "Train/Top1_err": top1,
                                      "Train/Top5_err": top5}, iters * epoch + it)
            stats = meter.iter_stats(epoch, it)
            if stats is not None:
                log_json_stats(stats)
            data_timer.reset()
        stats = meter.epoch_stats(epoch)
        stats["data_failures"] = int(du.all_reduce_sum([failures], self.device)[0])
        log_json_stats(stats)
        if stats["data_failures"]:
            logger.warning("%d clip loads failed and were retried in epoch %d (see OUTPUT_DIR/bad_videos.txt).",
                           stats["data_failures"], epoch + 1)
        share = meter.data_bound_fraction()
        if share > _DATA_BOUND_WARNING:
            logger.warning("Waiting for data took %.0f%% of the iteration time in epoch %d: the loader is "
                           "the bottleneck. Raise DATA_LOADER.NUM_WORKERS, pre-resize videos to a 256 px "
                           "short side, or measure with tools/benchmark_data.py.", 100 * share, epoch + 1)

    @torch.no_grad()
    def validate(self, epoch: int) -> None:
        """Exact error over the split: correct counts are summed over ranks at the end
        (ranks may hold different numbers of batches with the non-padding sampler)."""
        meter = self.val_meter
        self.model.eval()
        meter.reset()
        correct1 = correct5 = seen = 0
        data_timer = Timer()
        for it, (inputs, labels, _, _) in enumerate(governed(_progress(self.val_loader, "val"))):
            dt_data = data_timer.seconds()
            net_timer = Timer()
            inputs, labels = to_device(inputs, self.device), to_device(labels, self.device)
            preds = self.model(inputs)
            c1, c5 = (float(c) for c in topks_correct(preds, labels, (1, 5)))
            correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + labels.shape[0]
            n = labels.shape[0]
            meter.update_time(dt_data, net_timer.seconds())
            meter.update_stats(100.0 * (1 - c1 / n), 100.0 * (1 - c5 / n), n)
            stats = meter.iter_stats(epoch, it)
            if stats is not None:
                log_json_stats(stats)
            data_timer.reset()
        correct1, correct5, seen = du.all_reduce_sum([correct1, correct5, seen], self.device)
        if seen == 0:
            logger.warning("The val split is empty; no validation.")
            return
        errors = (100.0 * (1 - correct1 / seen), 100.0 * (1 - correct5 / seen))
        stats = meter.epoch_stats(epoch, errors=errors)
        stats["samples"] = int(seen)
        log_json_stats(stats)
        add_scalars(self.writer, {"Val/Top1_err": errors[0], "Val/Top5_err": errors[1]}, epoch + 1)
        self.model.train()

    def precise_bn(self) -> None:
        """Exact BN statistics over NUM_BATCHES_PRECISE training batches (each rank its own)."""
        from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

        model = cu.unwrap_model(self.model)
        if not get_bn_modules(model):
            return
        num = min(self.cfg.BN.NUM_BATCHES_PRECISE, len(self.precise_loader))
        inputs = (to_device(batch[0], self.device) for batch in self.precise_loader)
        logger.info("Precise BN: recomputing BN statistics over %d training batches.", num)
        update_bn_stats(model, inputs, num)


def train(cfg: CfgNode) -> None:
    """Entry point for `launch_job`: one process's share of the training job."""
    setup_process(cfg)
    logger.info("Train with config:\n%s", cfg.dump())
    _warn_unusable_test_path(cfg)
    if cfg.TEST.ENABLE:
        results_path(cfg)  # a directory there is refused now, not after training
    Trainer(cfg).fit()


def _warn_unusable_test_path(cfg: CfgNode) -> None:
    """A TEST.CHECKPOINT_FILE_PATH typo would only fail after training: say so now."""
    path = cfg.TEST.CHECKPOINT_FILE_PATH
    if not (cfg.TEST.ENABLE and path) or os.path.isfile(path):
        return
    inside_run = os.path.abspath(path).startswith(os.path.abspath(cu.checkpoint_dir(cfg.OUTPUT_DIR)) + os.sep)
    if not inside_run:  # a checkpoint this run will write is fine
        logger.warning("!!! TEST.CHECKPOINT_FILE_PATH '%s' %s: the test after training will fail. !!!", path,
                       "is a directory" if os.path.isdir(path) else "does not exist")
