"""Validator: one validation pass gives the error, sample count and confusion matrix a direct
count over the same loader gives, and leaves the model in eval mode."""
import json
import os

import numpy as np
import pytest
import torch

from tests.conftest import metrics_records
from tests.engine.tiny_parts import NUM_CLASSES, TinyTestNet, fake_loader, tiny_cfg
from vov3d.engine.input_step import InputStep
from vov3d.engine.runtime import setup_process
from vov3d.engine.validation import Validator


def test_one_pass_equals_a_direct_count(tmp_path):
    cfg = tiny_cfg(tmp_path)
    setup_process(cfg)
    torch.manual_seed(3)
    model = TinyTestNet(cfg)
    loader = fake_loader(10, 4, shuffle=False, seed=1, drop_last=False)  # a last, smaller batch
    step = InputStep(cfg, torch.device("cpu"))
    Validator(cfg, loader, step, torch.device("cpu")).run(model, epoch=2)
    assert not model.training

    with torch.no_grad():
        preds = torch.cat([model(step.inputs(x)) for x, _, _, _ in loader])
    labels = torch.cat([y for _, y, _, _ in loader])
    top1 = (preds.argmax(1) == labels).float().mean().item()
    top5 = (preds.topk(min(5, NUM_CLASSES), 1).indices == labels[:, None]).any(1).float().mean().item()
    record = metrics_records(tmp_path, "val_epoch")[-1]
    assert record["epoch"].startswith("3/") and record["samples"] == 10
    assert record["top1_err"] == pytest.approx(100 * (1 - top1)) and record["top5_err"] == pytest.approx(100 * (1 - top5))

    expected = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(expected, (labels.numpy(), preds.argmax(1).numpy()), 1)
    assert np.array_equal(np.load(os.path.join(tmp_path, "val_confusion_matrix.npy")), expected)
    with open(os.path.join(tmp_path, "val_metrics.json")) as f:
        written = json.load(f)
    per_class = expected.diagonal() / expected.sum(1)
    assert written["mean_class_acc"] == pytest.approx(100 * per_class.mean())
