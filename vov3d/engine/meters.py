"""Meters: windowed training/validation statistics, the per-video test ensemble (the
metrics themselves are in engine/metrics.py) and the console progress bar."""
import datetime
import logging
import sys
import time
from collections import deque
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import psutil
import torch

from vov3d.datasets.failures import BAD_FILES_NAME, DataLoadError
from vov3d.engine.metrics import ViewSubset, evaluate, multiview_gain, topk_correct
from vov3d.utils import comm

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------
def topks_correct(preds: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> List[torch.Tensor]:
    """Per k, how many samples have their label among the k highest scores (ties: the lower
    class index ranks first)."""
    return topk_correct(preds, labels, ks)


def topk_errors(preds: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> List[torch.Tensor]:
    """Top-k error in percent of the batch."""
    return [(1.0 - c / preds.shape[0]) * 100.0 for c in topks_correct(preds, labels, ks)]


def format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def gpu_mem_gb() -> float:
    if not torch.cuda.is_available():
        return 0.0
    return torch.cuda.max_memory_allocated() / 1024 ** 3


def ram_usage() -> str:
    vm = psutil.virtual_memory()
    return f"{(vm.total - vm.available) / 1024 ** 3:.2f}/{vm.total / 1024 ** 3:.2f}G"


# ------------------------------------------------------------------------------------
# Windowed statistics
# ------------------------------------------------------------------------------------
def progress_bar(loader, desc: str):
    """A tqdm bar with ETA on an interactive console; the plain loader in log files."""
    if not (sys.stdout.isatty() and comm.is_master_proc()):
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=len(loader), desc=desc, dynamic_ncols=True, leave=False)


class ScalarMeter:
    """A window of recent values (for medians in iteration lines) and weighted epoch totals."""

    def __init__(self, window: int):
        self.window = deque(maxlen=window)
        self.total = 0.0
        self.weight = 0.0

    def add(self, value: float, weight: float = 1.0) -> None:
        self.window.append(value)
        self.total += value * weight
        self.weight += weight

    def median(self) -> float:
        return float(np.median(self.window)) if self.window else 0.0

    def mean(self) -> float:
        return self.total / self.weight if self.weight else 0.0


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def reset(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


class EpochMeter:
    """Iteration and epoch statistics of one training or validation epoch.

    `kind` is "train" or "val"; the record types are `<kind>_iter` and `<kind>_epoch`.
    Errors and the loss are already averaged over ranks when they arrive here; sample
    weights are the global batch sizes.
    """

    def __init__(self, kind: str, iters_per_epoch: int, max_epoch: int, log_period: int):
        self.kind = kind
        self.iters = iters_per_epoch
        self.max_epoch = max_epoch
        self.log_period = log_period
        self.min_top1 = float("inf")
        self.min_top5 = float("inf")
        self.reset()

    def reset(self) -> None:
        w = self.log_period
        self.loss, self.top1, self.top5 = ScalarMeter(w), ScalarMeter(w), ScalarMeter(w)
        self.dt, self.dt_data, self.dt_net = ScalarMeter(w), ScalarMeter(w), ScalarMeter(w)
        self.lr = 0.0
        self.samples = 0
        self.last = (0.0, 0.0, 0.0)
        self.epoch_timer = Timer()

    def update_time(self, dt_data: float, dt_net: float) -> None:
        dt = dt_data + dt_net
        self.last = (dt, dt_data, dt_net)
        for meter, value in ((self.dt, dt), (self.dt_data, dt_data), (self.dt_net, dt_net)):
            meter.add(value)

    def update_stats(self, top1: float, top5: float, mb_size: int, loss: Optional[float] = None,
                     lr: Optional[float] = None) -> None:
        self.top1.add(top1, mb_size)
        self.top5.add(top5, mb_size)
        if loss is not None:
            self.loss.add(loss, mb_size)
        if lr is not None:
            self.lr = lr
        self.samples += mb_size

    def totals(self) -> Dict[str, float]:
        """The running sums the epoch record is made of (saved in a mid-epoch checkpoint)."""
        out = {"samples": self.samples, "lr": self.lr}
        for name in ("loss", "top1", "top5"):
            meter = getattr(self, name)
            out[f"{name}_total"], out[f"{name}_weight"] = meter.total, meter.weight
        return out

    def restore_totals(self, totals: Dict[str, float]) -> None:
        """Continue an epoch from `totals()` of a run stopped part-way through it."""
        self.samples, self.lr = int(totals["samples"]), float(totals["lr"])
        for name in ("loss", "top1", "top5"):
            meter = getattr(self, name)
            meter.total, meter.weight = float(totals[f"{name}_total"]), float(totals[f"{name}_weight"])

    def _eta(self, cur_epoch: int, cur_iter: int) -> float:
        if self.kind == "train":
            remaining = self.max_epoch * self.iters - (cur_epoch * self.iters + cur_iter + 1)
        else:
            remaining = self.iters - cur_iter - 1
        return self.dt.median() * remaining

    def iter_stats(self, cur_epoch: int, cur_iter: int) -> Optional[Dict]:
        """The `<kind>_iter` record on every LOG_PERIOD-th iteration, else None."""
        if (cur_iter + 1) % self.log_period:
            return None
        dt, dt_data, dt_net = self.last
        stats = {
            "_type": f"{self.kind}_iter",
            "epoch": f"{cur_epoch + 1}/{self.max_epoch}",
            "iter": f"{cur_iter + 1}/{self.iters}",
            "dt": dt, "dt_data": dt_data, "dt_net": dt_net,
            "eta": format_eta(self._eta(cur_epoch, cur_iter)),
            "top1_err": self.top1.median(), "top5_err": self.top5.median(),
            "gpu_mem": f"{gpu_mem_gb():.2f}G",
        }
        if self.kind == "train":
            stats.update(loss=self.loss.median(), lr=self.lr)
        return stats

    def epoch_stats(self, cur_epoch: int, errors: Optional[Sequence[float]] = None) -> Dict:
        """Sample-weighted epoch means; `errors` replaces the errors by exact split-wide values."""
        top1, top5 = errors if errors is not None else (self.top1.mean(), self.top5.mean())
        stats = {
            "_type": f"{self.kind}_epoch",
            "epoch": f"{cur_epoch + 1}/{self.max_epoch}",
            "time": self.epoch_timer.seconds(),
            "dt": self.dt.mean(), "dt_data": self.dt_data.mean(), "dt_net": self.dt_net.mean(),
            "top1_err": top1, "top5_err": top5,
            "gpu_mem": f"{gpu_mem_gb():.2f}G", "RAM": ram_usage(), "samples": self.samples,
        }
        if self.kind == "train":
            remaining = (self.max_epoch - cur_epoch - 1) * self.iters
            stats.update(loss=self.loss.mean(), lr=self.lr,
                         eta=format_eta(self.dt.mean() * remaining))
        else:
            self.min_top1, self.min_top5 = min(self.min_top1, top1), min(self.min_top5, top5)
            stats.update(min_top1_err=self.min_top1, min_top5_err=self.min_top5)
        return stats

    def data_bound_fraction(self) -> float:
        total = self.dt.total
        return self.dt_data.total / total if total > 0 else 0.0


# ------------------------------------------------------------------------------------
# Multi-view test ensemble
# ------------------------------------------------------------------------------------
class VideoEnsembleMeter:
    """Per-video predictions in dataset order; each video is added exactly once.

    Failed (unreadable) videos keep a zero row, are excluded from the accuracy and
    reported. `video_path(i)` (e.g. the dataset's `video_path`) names video i in errors.
    With `subsets`, each video also brings its top-k hits for every subset of its views
    (engine.metrics.subset_hits), from which `finalize` makes the multi-view gain table.
    """

    def __init__(self, num_videos: int, num_classes: int,
                 video_path: Optional[Callable[[int], str]] = None,
                 subsets: Sequence[ViewSubset] = ()):
        self.video_path = video_path
        self.preds = torch.zeros(num_videos, num_classes)
        self.labels = torch.zeros(num_videos, dtype=torch.int64)
        self.seen = torch.zeros(num_videos, dtype=torch.bool)
        self.failed = torch.zeros(num_videos, dtype=torch.bool)
        self.subsets = list(subsets)
        self.hits = torch.zeros(num_videos, len(self.subsets), 2, dtype=torch.bool)
        self.confusion: Optional[torch.Tensor] = None  # [C, C] once finalized

    def add(self, indices: torch.Tensor, preds: torch.Tensor, labels: torch.Tensor,
            failed: torch.Tensor, hits: Optional[torch.Tensor] = None) -> None:
        indices = indices.long().cpu()
        again = indices[self.seen[indices]]
        if len(again) or len(set(indices.tolist())) != len(indices):
            raise RuntimeError(f"videos {again.tolist()[:10] or indices.tolist()[:10]} were predicted "
                               "twice; each video must be tested once (check the test sampler).")
        failed = failed.bool().cpu()
        self.seen[indices] = True
        self.labels[indices] = labels.long().cpu()
        self.failed[indices] = failed
        self.preds[indices] = torch.where(failed.reshape(-1, 1), torch.zeros(()), preds.float().cpu())
        if hits is not None and self.subsets:
            self.hits[indices] = hits.bool().cpu()

    def finalize(self, ks=(1, 5)) -> Dict:
        """Top-k accuracy, mean class accuracy, per-class counts (engine.metrics.evaluate) and,
        with subsets, the multi-view gain; the confusion matrix is kept in `self.confusion`."""
        missing = (~self.seen).nonzero().flatten()
        if len(missing):
            raise RuntimeError(f"{len(missing)} of {len(self.seen)} videos got no prediction "
                               f"(first: {missing[:10].tolist()}).")
        if int((~self.failed).sum()) == 0:
            raise DataLoadError(self._all_failed_message())
        out, self.confusion = evaluate(self.preds, self.labels, self.failed, ks)
        if self.subsets:
            out["multiview"] = multiview_gain(self.hits[~self.failed], self.subsets)
        return out

    def failed_indices(self) -> List[int]:
        return self.failed.nonzero().flatten().tolist()

    def _all_failed_message(self, shown: int = 3) -> str:
        count = len(self.failed)
        first = ""
        if self.video_path is not None:
            names = [self.video_path(i) for i in range(min(shown, count))]
            first = f"; first: {', '.join(names)}{' ...' if count > shown else ''}"
        # Every video failing is almost always a wrong data path rather than bad files.
        return (f"every test video failed to load ({count} of {count}{first}); no accuracy can "
                "be computed. Check DATA.PATH_TO_DATA_DIR / DATA.PATH_PREFIX and the errors "
                f"listed in OUTPUT_DIR/{BAD_FILES_NAME}.")
