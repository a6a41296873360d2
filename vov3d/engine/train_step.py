"""One optimiser step of training over TRAIN.GRAD_ACCUMULATION_STEPS (k) micro-batches.

Each micro-batch goes through the input step (to the device, normalised), the training
batch transforms (random erasing, then mixup / label smoothing), forward, loss and backward; then the gradients
are clipped, and the AMP scaler, the optimiser and the weight EMA step once. Each micro-batch loss is divided by k, so the
summed gradients are those of the mean loss over all k micro-batches: for a model without
batch statistics, k micro-batches of b clips give the step one batch of k*b clips gives.
Under DDP only the last micro-batch all-reduces the gradients (the others run in no_sync).

Between two calls of `run` no gradient is pending: checkpoints may be written there.
"""
import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.engine.ema import ModelEma
from vov3d.engine.input_step import InputStep
from vov3d.engine.meters import Timer, topks_correct
from vov3d.engine.mixup import MixedBatch, MixUp
from vov3d.engine.optimizer import clip_gradients
from vov3d.engine.random_erasing import RandomErasing

logger = logging.getLogger(__name__)


@dataclass
class StepResult:
    """This process's share of one optimiser step (tensors: reduced over ranks by the caller)."""
    loss: torch.Tensor  # mean loss over the step's clips
    top1_err: torch.Tensor  # percent of the step's clips
    top5_err: torch.Tensor
    samples: int
    dt_data: float  # seconds waiting for the micro-batches
    dt_net: float  # seconds computing
    failures: int  # clip loads the loader retried


def _hard_labels(labels: torch.Tensor) -> torch.Tensor:
    return labels if labels.ndim == 1 else labels.argmax(dim=1)


class TrainStep:
    def __init__(self, cfg: CfgNode, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler,
                 loss_fn: Callable, input_step: InputStep, amp: bool, mixup: Optional[MixUp] = None,
                 ema: Optional[ModelEma] = None):
        self.cfg = cfg
        self.model, self.optimizer, self.scaler, self.loss_fn = model, optimizer, scaler, loss_fn
        self.input_step, self.device, self.amp = input_step, input_step.device, amp
        self.mixup, self.ema = mixup, ema
        self.eraser = RandomErasing.from_cfg(cfg, self.device)
        self.micro_batches = cfg.TRAIN.GRAD_ACCUMULATION_STEPS
        self.pending = 0  # micro-batches whose gradients wait for the optimiser

    def steps_per_epoch(self, loader_batches: int) -> int:
        """Whole steps in an epoch of `loader_batches` micro-batches. The last
        `loader_batches % k` are left out, so every step has the same effective batch (and a
        run with k = 1 and a k times larger batch sees the same clips); an epoch without a
        step is refused."""
        k = self.micro_batches
        steps = loader_batches // k
        if steps == 0:
            raise ConfigError(f"TRAIN.GRAD_ACCUMULATION_STEPS {k} needs {k} micro-batches per optimiser "
                              f"step, but the train loader gives {loader_batches} per process and epoch: no "
                              "step would run. Lower TRAIN.GRAD_ACCUMULATION_STEPS or TRAIN.BATCH_SIZE.")
        if loader_batches % k:
            logger.info("Each epoch leaves out its last %d of %d micro-batches per process: they do not fill "
                        "an optimiser step of TRAIN.GRAD_ACCUMULATION_STEPS %d.", loader_batches % k,
                        loader_batches, k)
        return steps

    @property
    def at_step_boundary(self) -> bool:
        """True when no micro-batch gradient is pending (a checkpoint would lose none)."""
        return self.pending == 0

    def _sync(self, last: bool):
        """DDP all-reduces gradients in the backward of the step's last micro-batch only."""
        if last or not isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _transform(self, inputs, labels) -> MixedBatch:
        inputs, labels = self.input_step.batch(inputs, labels)
        if self.eraser is not None:
            inputs = [self.eraser(x) for x in inputs]
        if self.mixup is None:
            return MixedBatch(inputs, labels, _hard_labels(labels))
        return self.mixup(inputs, labels)

    def run(self, batches: Iterator, check_loss: Callable[[torch.Tensor], None]) -> StepResult:
        """Take k micro-batches from `batches` and make one optimiser step. `check_loss`
        sees every micro-batch loss before its backward (and may stop the run)."""
        k = self.micro_batches
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, correct1, correct5, samples, failures = 0.0, 0.0, 0.0, 0, 0
        dt_data = dt_net = 0.0
        for j in range(k):
            data_timer = Timer()
            inputs, labels, _, meta = next(batches)
            dt_data += data_timer.seconds()
            net_timer = Timer()
            batch = self._transform(inputs, labels)
            with self._sync(last=j == k - 1):
                with torch.autocast(device_type=self.device.type, enabled=self.amp):
                    preds = self.model(batch.inputs)
                    loss = self.loss_fn(preds, batch.targets)
                check_loss(loss)
                scaled = loss / k if k > 1 else loss
                self.scaler.scale(scaled).backward()
            self.pending += 1
            scores, hard = batch.for_top_k(preds.detach())
            c1, c5 = topks_correct(scores, hard, (1, 5))
            loss_sum, correct1, correct5 = loss_sum + scaled.detach(), correct1 + c1, correct5 + c5
            samples += hard.shape[0]
            failures += int(meta["num_failures"].sum()) if "num_failures" in meta else 0
            dt_net += net_timer.seconds()
        net_timer = Timer()
        self._optimizer_step()
        dt_net += net_timer.seconds()
        top1, top5 = ((1.0 - c / samples) * 100.0 for c in (correct1, correct5))
        return StepResult(loss_sum, top1, top5, samples, dt_data, dt_net, failures)

    def _optimizer_step(self) -> None:
        """Clip (after unscaling) and step once for the accumulated gradients; then the EMA."""
        cfg = self.cfg
        if cfg.SOLVER.CLIP_GRAD_VAL is not None or cfg.SOLVER.CLIP_GRAD_L2NORM is not None:
            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.model.parameters(), cfg)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.pending = 0
        if self.ema is not None:
            self.ema.update(self.model)
