"""PySlowFast's AUG and MULTIGRID sections, unchanged, train and test through
tools/run_net.py on the generated toy videos (CPU, tiny X3D)."""
import os
import subprocess

import pytest
import torch

from tests.conftest import PYTHON, REPO_ROOT, metrics_records, run_tool_env
from tests.tools.test_run_net import TINY_X3D

RUN_NET = os.path.join(REPO_ROOT, "tools", "run_net.py")

# The AUG section of PySlowFast's MViT Kinetics configs (MVITv2_S_16x4.yaml), unchanged.
PYSLOWFAST_AUG = """
AUG:
  NUM_SAMPLE: 2
  ENABLE: True
  COLOR_JITTER: 0.4
  AA_TYPE: rand-m7-n4-mstd0.5-inc1
  INTERPOLATION: bicubic
  RE_PROB: 0.25
  RE_MODE: pixel
  RE_COUNT: 1
  RE_SPLIT: False
"""
# PySlowFast's SLOWFAST_8x8_R50_stepwise_multigrid.yaml: its MULTIGRID section and a
# stepwise schedule of the same form, shortened.
PYSLOWFAST_MULTIGRID = """
MULTIGRID:
  SHORT_CYCLE: True
  LONG_CYCLE: True
SOLVER:
  LR_POLICY: steps_with_relative_lrs
  LRS: [1, 0.1, 0.01, 0.001, 0.0001, 0.00001]
  STEPS: [0, 2]
  MAX_EPOCH: 3
  WARMUP_EPOCHS: 0.0
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """32 training videos (2 classes), enough for the long cycle's largest batch (8 x 2 x 2)."""
    root = tmp_path_factory.mktemp("toy_recipes")
    data = str(root / "data")
    subprocess.run([PYTHON, os.path.join(REPO_ROOT, "tools", "make_toy_dataset.py"), "--out", data, "--classes", "2",
                    "--videos-per-class", "16", "--eval-per-class", "2", "--frames", "16", "--size", "48x32"],
                   check=True, env=run_tool_env(), capture_output=True)
    base = root / "tiny.yaml"
    base.write_text(TINY_X3D)
    return root, data


def _run(toy, section, out, *overrides):
    root, data = toy
    cfg = root / f"{out.name}.yaml"
    cfg.write_text(f"_BASE_: {root / 'tiny.yaml'}\n" + section)
    cmd = [PYTHON, RUN_NET, "--cfg", str(cfg), "DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data,
           "OUTPUT_DIR", str(out), "BN.USE_PRECISE_STATS", "False", *overrides]
    proc = subprocess.run(cmd, env=run_tool_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_pyslowfast_aug_section_trains_two_copies_per_decode_then_tests(toy, tmp_path):
    out = tmp_path / "aug"
    log = _run(toy, PYSLOWFAST_AUG, out, "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "4")
    assert "AUG.NUM_SAMPLE 2: every video of a batch is decoded once and augmented 2 times, so a process's " \
           "batch holds 8 clips" in log
    epoch = metrics_records(out, "train_epoch")[-1]
    assert epoch["samples"] == 2 * 32  # every training video twice
    assert len(metrics_records(out, "train_iter")) == 8  # 32 videos in batches of 4 videos
    assert metrics_records(out, "test_final")[-1]["num_videos"] == 4


def test_pyslowfast_multigrid_section_runs_its_schedule_then_tests(toy, tmp_path):
    out = tmp_path / "multigrid"
    log = _run(toy, PYSLOWFAST_MULTIGRID, out, "TRAIN.BATCH_SIZE", "2")
    assert "long cycle: step  epochs" in log and "FLOPs of the whole schedule" in log
    epochs = metrics_records(out, "train_epoch")
    assert len(epochs) == 4 and epochs[-1]["epoch"] == "4/4"  # 1.5 x 3 epochs, as PySlowFast rounds
    # The last stage trains at the base shape, its short cycle in whole batches of 8, 4 and 2 clips:
    # two cycles (28) of the 32 videos.
    assert epochs[-1]["samples"] == 28 and len([r for r in metrics_records(out, "train_iter")
                                                 if r["epoch"] == "4/4"]) == 6
    stored = torch.load(out / "checkpoints" / "checkpoint_epoch_00004.pyth", weights_only=True)
    assert "SHORT_CYCLE: true" in stored["cfg"] and "DEFAULT_S: 32" in stored["cfg"]
    assert metrics_records(out, "test_final")[-1]["num_videos"] == 4
