"""What an evaluation leaves behind: the metrics files of validation and test, their
agreement with the logged numbers, and the TensorBoard scalars of a validation."""
import csv
import json
import os

import numpy as np
import pytest
import torch

from tests.conftest import metrics_records
from tests.engine.tiny_parts import make_fake_trainer_class, tiny_cfg
from vov3d.engine.evaluation import metrics_record, summary_lines, write_metrics
from vov3d.engine.metrics import evaluate
from vov3d.engine.runtime import setup_process

InMemoryTrainer = make_fake_trainer_class()


def test_validation_writes_per_class_metrics_that_agree_with_its_error(tmp_path):
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1", "TENSORBOARD.ENABLE", "True")
    setup_process(cfg)
    InMemoryTrainer(cfg).fit()
    record = metrics_records(tmp_path, "val_epoch")[-1]
    confusion = np.load(tmp_path / "val_confusion_matrix.npy")
    assert confusion.shape == (4, 4) and confusion.sum() == record["samples"] == 8
    # Two val clips per class (labels i % 4), so every class has support 2.
    assert confusion.sum(axis=1).tolist() == [2, 2, 2, 2]
    assert 100.0 * (1 - np.trace(confusion) / 8) == pytest.approx(record["top1_err"])
    per_class = np.diag(confusion) / confusion.sum(axis=1) * 100
    assert record["mean_class_acc"] == pytest.approx(per_class.mean())
    saved = json.loads((tmp_path / "val_metrics.json").read_text())
    assert saved["epoch"] == 1 and saved["mean_class_acc"] == pytest.approx(record["mean_class_acc"])
    assert [c["support"] for c in saved["per_class"]] == [2, 2, 2, 2]
    assert [c["name"] for c in saved["per_class"]] == ["class 0", "class 1", "class 2", "class 3"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "runs-kinetics"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"Val/Mean_class_acc", "Val/Top1_err", "Train/Data_time", "Train_epoch/loss", "Train_epoch/lr",
            "Train_epoch/Top1_err", "Train_epoch/Data_time"} <= scalars
    assert events.Scalars("Val/Mean_class_acc")[0].value == pytest.approx(record["mean_class_acc"])
    assert events.Tags()["images"] == []  # no plots unless CONFUSION_MATRIX / HISTOGRAM are on


def test_metrics_files_hold_counts_names_and_the_gain_table(tmp_path):
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    labels = torch.tensor([0, 1, 1, 1])
    metrics, confusion = evaluate(scores, labels)
    metrics["multiview"] = [{"temporal_clips": 1, "spatial_crops": 1, "views": 1, "top1_acc": 25.0, "top5_acc": 100.0},
                            {"temporal_clips": 2, "spatial_crops": 1, "views": 2, "top1_acc": 50.0, "top5_acc": 100.0}]
    names = ["open, door", "close door", "idle"]
    path = write_metrics(str(tmp_path), metrics_record("test", metrics, names, views=2), confusion, names)
    saved = json.loads(open(path).read())
    assert saved["top1_acc"] == 50.0 and saved["mean_class_acc"] == pytest.approx((100 + 100 / 3) / 2)
    assert saved["classes_without_support"] == ["idle"] and saved["per_class"][2]["accuracy"] is None
    assert saved["multiview"][1]["views"] == 2 and saved["views"] == 2
    assert np.load(tmp_path / "test_confusion_matrix.npy").tolist() == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    with open(tmp_path / "test_confusion_matrix.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["true \\ predicted", "open, door", "close door", "idle"], ["open, door", "1", "0", "0"],
                    ["close door", "1", "1", "1"], ["idle", "0", "0", "0"]]
    lines = summary_lines(metrics, names)
    assert lines[0].startswith("mean class accuracy 66.67% over 2 classes (1 without test videos); weakest: "
                               "close door 33.3% (n=3)")
    assert lines[1] == "multi-view top-1 (clips x crops): 1x1 25.00%, 2x1 50.00%"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_saved_predictions_are_plotted_without_the_failed_rows(tmp_path):
    """TENSORBOARD.PREDICTIONS_PATH: a results pickle plotted as a test; the all-zero row of a
    video that failed to load is not scored."""
    import pickle

    from torch.utils.tensorboard import SummaryWriter
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vov3d.engine.visualize import plot_saved_predictions

    preds = torch.tensor([[0.9, 0.1, 0, 0], [0, 0, 0, 0], [0.2, 0.7, 0.1, 0], [0.1, 0.2, 0.3, 0.4]])
    with open(tmp_path / "preds.pkl", "wb") as f:
        pickle.dump([preds, torch.tensor([0, 1, 1, 3])], f)
    cfg = tiny_cfg(tmp_path, "TENSORBOARD.ENABLE", "True", "TENSORBOARD.PREDICTIONS_PATH", str(tmp_path / "preds.pkl"),
                   "TENSORBOARD.CONFUSION_MATRIX.ENABLE", "True")
    writer = SummaryWriter(str(tmp_path / "tb"))
    plot_saved_predictions(cfg, writer, None)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Scalars("Predictions/Top1_acc")[0].value == pytest.approx(100.0)  # 3 scored, 3 right
    assert "Predictions/Confusion Matrix" in events.Tags()["images"]
