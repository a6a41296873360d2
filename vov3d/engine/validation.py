"""Validation epochs during training: exact top-1/top-5 error over the val split and its
confusion matrix, summed over ranks, then the metrics files and plots (engine/evaluation.py)."""
import logging
from typing import Optional, Sequence

import torch
from yacs.config import CfgNode

from vov3d.engine import distributed as du
from vov3d.engine.evaluation import report_validation
from vov3d.engine.input_step import InputStep
from vov3d.engine.logging import log_json_stats
from vov3d.engine.meters import EpochMeter, Timer, progress_bar, topks_correct
from vov3d.engine.metrics import confusion_matrix, predicted_classes
from vov3d.engine.runtime import add_scalars
from vov3d.utils import comm
from vov3d.utils.threads import governed

logger = logging.getLogger(__name__)


class Validator:
    """Runs the validation pass of an epoch over `loader` (random clips per epoch unless
    DATA.DETERMINISTIC_VAL, seeded by (RNG_SEED, epoch, rank))."""

    def __init__(self, cfg: CfgNode, loader, input_step: InputStep, device: torch.device):
        self.cfg, self.loader, self.input_step, self.device = cfg, loader, input_step, device
        self.meter = EpochMeter("val", max(len(loader), 1), cfg.SOLVER.MAX_EPOCH, cfg.LOG_PERIOD)

    @torch.no_grad()
    def run(self, model: torch.nn.Module, epoch: int, writer=None,
            class_names: Optional[Sequence[str]] = None) -> None:
        """Exact error over the split: correct counts are summed over ranks at the end
        (ranks may hold different numbers of batches with the non-padding sampler). Leaves
        `model` in eval mode."""
        from vov3d.datasets.loader import set_epoch

        meter = self.meter
        model.eval()
        meter.reset()
        set_epoch(self.loader, self.cfg.RNG_SEED, epoch, "val")  # random clips unless DETERMINISTIC_VAL
        correct1 = correct5 = seen = 0
        num_classes = self.cfg.MODEL.NUM_CLASSES
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=self.device)
        data_timer = Timer()
        for it, (inputs, labels, _, _) in enumerate(governed(progress_bar(self.loader, "val"))):
            dt_data = data_timer.seconds()
            net_timer = Timer()
            inputs, labels = self.input_step.batch(inputs, labels)
            preds = model(inputs)
            c1, c5 = (float(c) for c in topks_correct(preds, labels, (1, 5)))
            correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + labels.shape[0]
            confusion += confusion_matrix(predicted_classes(preds), labels, num_classes)
            n = labels.shape[0]
            meter.update_time(dt_data, net_timer.seconds())
            meter.update_stats(100.0 * (1 - c1 / n), 100.0 * (1 - c5 / n), n)
            stats = meter.iter_stats(epoch, it)
            if stats is not None:
                log_json_stats(stats)
            data_timer.reset()
        correct1, correct5, seen = du.all_reduce_sum([correct1, correct5, seen], self.device)
        confusion = torch.tensor(du.all_reduce_sum(confusion.flatten().tolist(), self.device),
                                 dtype=torch.int64).reshape(num_classes, num_classes)
        if seen == 0:
            logger.warning("The val split is empty; no validation.")
            return
        errors = (100.0 * (1 - correct1 / seen), 100.0 * (1 - correct5 / seen))
        stats = meter.epoch_stats(epoch, errors=errors)
        stats["samples"] = int(seen)
        if comm.is_root_proc():
            stats["mean_class_acc"] = report_validation(self.cfg, confusion, errors, seen, class_names, epoch,
                                                        writer)["mean_class_acc"]
        log_json_stats(stats)
        add_scalars(writer, {"Val/Top1_err": errors[0], "Val/Top5_err": errors[1]}, epoch + 1)
