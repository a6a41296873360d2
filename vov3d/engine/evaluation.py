"""After an evaluation pass: the metrics files, the printed summary and the TensorBoard plots.

`OUTPUT_DIR/<split>_metrics.json` holds the headline numbers, per-class accuracy and
support, and (test) the multi-view gain table; the confusion matrix (counts, row = true
class) goes beside it as `<split>_confusion_matrix.npy` and `.csv` with class names.
"""
import csv
import json
import logging
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from yacs.config import CfgNode

from vov3d.utils.files import write_atomic
from vov3d.visualization.class_names import default_names

logger = logging.getLogger(__name__)

METRICS_NAME = "{split}_metrics.json"
CONFUSION_NAME = "{split}_confusion_matrix"


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def metrics_record(split: str, metrics: Dict, class_names: Sequence[str], **extra) -> Dict:
    """The JSON document of one evaluation (`metrics` from engine.metrics.evaluate)."""
    per = metrics["per_class"]
    record = {"split": split}
    record.update({key: _finite(metrics[key]) for key in ("top1_acc", "top5_acc", "mean_class_acc")})
    record.update(num_videos=metrics["num_videos"], num_failed=metrics["num_failed"], **extra)
    record["per_class"] = [{"index": i, "name": class_names[i], "support": s, "correct": c, "accuracy": a}
                           for i, (s, c, a) in enumerate(zip(per["support"], per["correct"], per["accuracy"]))]
    record["classes_without_support"] = [class_names[i] for i in per["classes_without_support"]]
    if "multiview" in metrics:
        record["multiview"] = metrics["multiview"]
    record["confusion_matrix"] = {ext: CONFUSION_NAME.format(split=split) + "." + ext for ext in ("npy", "csv")}
    return record


def write_metrics(out_dir: str, record: Dict, confusion: torch.Tensor, class_names: Sequence[str]) -> str:
    """Write the JSON, .npy and .csv files of one evaluation (atomically); the JSON path."""
    split = record["split"]
    counts = confusion.cpu().numpy().astype(np.int64)
    stem = os.path.join(out_dir, CONFUSION_NAME.format(split=split))
    write_atomic(stem + ".npy", lambda f: np.save(f, counts), binary=True)

    def write_csv(f) -> None:
        rows = csv.writer(f, lineterminator="\n")
        rows.writerow(["true \\ predicted"] + list(class_names))
        for name, row in zip(class_names, counts.tolist()):
            rows.writerow([name] + row)

    write_atomic(stem + ".csv", write_csv, binary=False)
    path = os.path.join(out_dir, METRICS_NAME.format(split=split))
    write_atomic(path, lambda f: json.dump(record, f, indent=1), binary=False)
    return path


def summary_lines(metrics: Dict, class_names: Sequence[str], worst: int = 3) -> List[str]:
    """The short printed summary: mean class accuracy with the weakest classes, and the
    multi-view gain in top-1."""
    per = metrics["per_class"]
    scored = sorted((a, i) for i, a in enumerate(per["accuracy"]) if a is not None)
    weakest = ", ".join(f"{class_names[i]} {a:.1f}% (n={per['support'][i]})" for a, i in scored[:worst])
    missing = len(per["classes_without_support"])
    lines = [f"mean class accuracy {metrics['mean_class_acc']:.2f}% over {len(scored)} classes"
             f"{f' ({missing} without test videos)' if missing else ''}; weakest: {weakest}"]
    gain = metrics.get("multiview")
    if gain and len(gain) > 1:
        lines.append("multi-view top-1 (clips x crops): " + ", ".join(
            f"{r['temporal_clips']}x{r['spatial_crops']} {r['top1_acc']:.2f}%" for r in gain))
    return lines


def log_summary(split: str, metrics: Dict, class_names: Sequence[str]) -> None:
    for line in summary_lines(metrics, class_names):
        logger.info("%s: %s", split.capitalize(), line)


def names_or_default(class_names: Optional[Sequence[str]], num_classes: int) -> List[str]:
    return list(class_names) if class_names is not None else default_names(num_classes)


def write_tensorboard(cfg: CfgNode, writer, prefix: str, metrics: Dict, confusion: torch.Tensor,
                      class_names: Optional[Sequence[str]], step: int,
                      keys: Sequence[str] = ("top1_acc", "top5_acc", "mean_class_acc")) -> None:
    """Scalars (`keys` of the metrics, e.g. Test/Top1_acc), the multi-view gain and (when
    switched on) the confusion-matrix and histogram figures of one evaluation. `class_names`
    is None when no names are known (SUBSET_PATH and CATEGORIES_PATH then cannot be used)."""
    from vov3d.visualization.tensorboard import EvalPlots, add_scalars

    add_scalars(writer, {f"{prefix}/{key[0].upper()}{key[1:]}": metrics[key] for key in keys}, step)
    for row in metrics.get("multiview", []):
        add_scalars(writer, {f"{prefix}/Multiview_top1_acc/{row['spatial_crops']}_crops": row["top1_acc"]},
                    row["temporal_clips"])
    plots = EvalPlots(cfg, class_names)
    if plots.enabled:
        plots.write(writer, confusion, step, prefix)
    writer.flush()


def _tensorboard_step(loaded) -> int:
    return loaded.epoch + 1 if loaded is not None and loaded.epoch is not None else 0


def report_test(cfg: CfgNode, metrics: Dict, confusion: torch.Tensor, dataset_names: Optional[Sequence[str]],
                loaded, summary: Dict) -> str:
    """Global rank 0 after a test: test_metrics.json and the confusion matrix files, the
    summary lines, and the TensorBoard scalars and plots. Returns the JSON path."""
    from vov3d.engine.runtime import tensorboard_writer
    from vov3d.visualization.class_names import choose_class_names

    chosen = choose_class_names(cfg, dataset_names, getattr(loaded, "class_names", None))
    names = names_or_default(chosen, cfg.MODEL.NUM_CLASSES)
    record = metrics_record("test", metrics, names, views=summary.get("views"),
                            temporal_clips=cfg.TEST.NUM_ENSEMBLE_VIEWS, spatial_crops=cfg.TEST.NUM_SPATIAL_CROPS,
                            ensemble=cfg.TEST.ENSEMBLE_METHOD, checkpoint=summary.get("checkpoint"),
                            checkpoint_epoch=summary.get("checkpoint_epoch"))
    path = write_metrics(cfg.OUTPUT_DIR, record, confusion, names)
    log_summary("test", metrics, names)
    logger.info("Test metrics in %s, confusion matrix in %s.{npy,csv}.", path,
                os.path.join(cfg.OUTPUT_DIR, CONFUSION_NAME.format(split="test")))
    writer = tensorboard_writer(cfg)
    if writer is not None:
        write_tensorboard(cfg, writer, "Test", metrics, confusion, chosen, _tensorboard_step(loaded))
        writer.close()
    return path


def report_validation(cfg: CfgNode, confusion: torch.Tensor, errors: Sequence[float], seen: int,
                      dataset_names: Optional[Sequence[str]], epoch: int, writer=None) -> Dict:
    """After a validation pass (global rank 0): val_metrics.json (overwritten each epoch) and
    its confusion matrix files, the TensorBoard plots; returns the metrics."""
    from vov3d.engine.metrics import class_accuracy
    from vov3d.visualization.class_names import choose_class_names

    per_class = class_accuracy(confusion.cpu())
    metrics = {"top1_acc": 100.0 - errors[0], "top5_acc": 100.0 - errors[1],
               "mean_class_acc": per_class.pop("mean_class_acc"), "num_videos": int(seen), "num_failed": 0,
               "per_class": per_class}
    chosen = choose_class_names(cfg, dataset_names)
    names = names_or_default(chosen, cfg.MODEL.NUM_CLASSES)
    write_metrics(cfg.OUTPUT_DIR, metrics_record("val", metrics, names, epoch=epoch + 1), confusion, names)
    if writer is not None:
        # Val/Top1_err and Val/Top5_err are written by the training loop.
        write_tensorboard(cfg, writer, "Val", metrics, confusion, chosen, epoch + 1, keys=("mean_class_acc",))
    return metrics
