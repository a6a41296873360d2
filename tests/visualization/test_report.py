"""The HTML results report: built from the files a test writes, it ships every file it
links, each figure is a valid PNG, and a folder without test output is named in one line."""
import json
import os
import re

import pytest
import torch
from PIL import Image

from vov3d.engine.evaluation import metrics_record, write_metrics
from vov3d.engine.metrics import evaluate
from vov3d.visualization.report import MissingResultsError, build_report

NAMES = ["moving up", "moving down", "growing <big>", "shrinking"]


def _results(folder, with_training=True):
    scores = torch.tensor([[0.8, 0.1, 0.1, 0.0], [0.3, 0.6, 0.1, 0.0], [0.1, 0.1, 0.7, 0.1], [0.6, 0.3, 0.1, 0.0]])
    metrics, confusion = evaluate(scores, torch.tensor([0, 1, 2, 1]))
    metrics["multiview"] = [{"temporal_clips": t, "spatial_crops": s, "views": t * s, "top1_acc": 50.0 + 5 * t * s,
                             "top5_acc": 100.0} for t in (1, 2) for s in (1, 3)]
    write_metrics(str(folder), metrics_record("test", metrics, NAMES, temporal_clips=2, spatial_crops=3,
                                              ensemble="sum", checkpoint="ckpt.pyth", checkpoint_epoch=3), confusion,
                  NAMES)
    if with_training:
        records = [{"_type": "train_epoch", "epoch": f"{e}/3", "loss": 2.0 / e, "top1_err": 60.0 / e, "lr": 0.1}
                   for e in (1, 2, 3)] + [{"_type": "val_epoch", "epoch": "3/3", "top1_err": 25.0}]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return metrics


def test_report_ships_every_figure_it_links_and_each_is_a_png(tmp_path):
    metrics = _results(tmp_path)
    page_path = build_report(str(tmp_path))
    assert page_path == str(tmp_path / "report" / "report.html")
    page = open(page_path, encoding="utf-8").read()
    linked = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sorted(linked) == ["class_accuracy.png", "confusion_matrix.png", "multiview_gain.png",
                              "training_curves.png"]
    assert sorted(os.listdir(tmp_path / "report")) == sorted(linked + ["report.html"])
    for name in linked:
        with open(tmp_path / "report" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        with Image.open(tmp_path / "report" / name) as image:
            image.verify()
    assert "http" not in page and "<script" not in page
    assert "growing &lt;big&gt;" in page and "growing <big>" not in page
    assert f'mean class accuracy (%)</td><td class="name">{metrics["mean_class_acc"]:.2f}</td>' in page
    assert "<td>2</td><td>3</td><td>6</td><td>80.00</td><td>100.00</td>" in page  # the 2 x 3 row


def test_report_without_training_records_has_no_training_curves(tmp_path):
    _results(tmp_path, with_training=False)
    out = tmp_path / "elsewhere"
    build_report(str(tmp_path), str(out))
    assert "training_curves.png" not in os.listdir(out) and "confusion_matrix.png" in os.listdir(out)


def test_folders_without_test_output_are_named(tmp_path):
    with pytest.raises(MissingResultsError, match=r"'.*nothing' is not a directory"):
        build_report(str(tmp_path / "nothing"))
    with pytest.raises(MissingResultsError) as err:
        build_report(str(tmp_path))
    assert str(err.value) == (f"'{tmp_path}' holds no test output: test_metrics.json is missing (a run with "
                              "TEST.ENABLE True writes it to its OUTPUT_DIR).")
    _results(tmp_path)
    os.remove(tmp_path / "test_confusion_matrix.npy")
    with pytest.raises(MissingResultsError, match="holds test_metrics.json but not its confusion matrix "
                                                  "test_confusion_matrix.npy"):
        build_report(str(tmp_path))
