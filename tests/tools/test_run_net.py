"""End to end through tools/run_net.py on the generated toy videos (CPU, tiny X3D)."""
import json
import os
import pathlib
import pickle
import signal
import subprocess
import time

import pytest
import torch

from tests.conftest import PYTHON, REPO_ROOT, metrics_records, run_tool_env, tiny_toy_run

RUN_NET = os.path.join(REPO_ROOT, "tools", "run_net.py")

TINY_X3D = """
TRAIN: {ENABLE: True, DATASET: kinetics, BATCH_SIZE: 4, EVAL_PERIOD: 1, CHECKPOINT_PERIOD: 1, AUTO_RESUME: True}
TEST: {ENABLE: True, DATASET: kinetics, BATCH_SIZE: 6, NUM_ENSEMBLE_VIEWS: 2, NUM_SPATIAL_CROPS: 3,
       SAVE_RESULTS_PATH: preds.pkl}
DATA: {NUM_FRAMES: 4, SAMPLING_RATE: 4, TRAIN_JITTER_SCALES: [32, 40], TRAIN_CROP_SIZE: 32,
       TEST_CROP_SIZE: 32, INPUT_CHANNEL_NUM: [3]}
X3D: {WIDTH_FACTOR: 1.0, DEPTH_FACTOR: 1.0, BOTTLENECK_FACTOR: 2.25, DIM_C5: 64, DIM_C1: 8}
RESNET: {ZERO_INIT_FINAL_BN: True, TRANS_FUNC: x3d_transform}
BN: {USE_PRECISE_STATS: True, NUM_BATCHES_PRECISE: 2}
SOLVER: {BASE_LR: 0.05, LR_POLICY: cosine, MAX_EPOCH: 3, WARMUP_EPOCHS: 1.0, WARMUP_START_LR: 0.01}
MODEL: {NUM_CLASSES: 2, ARCH: x3d, MODEL_NAME: X3D, DROPOUT_RATE: 0.0}
DATA_LOADER: {NUM_WORKERS: 0, PIN_MEMORY: False}
NUM_GPUS: 0
RNG_SEED: 0
LOG_PERIOD: 1
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return tiny_toy_run(tmp_path_factory.mktemp("toy"), TINY_X3D)


def _command(toy, out, *overrides):
    cfg, data = toy
    return [PYTHON, RUN_NET, "--cfg", cfg, "DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data,
            "OUTPUT_DIR", str(out), *overrides]


def toy_data(toy):
    return pathlib.Path(toy[1])


def _run(cmd, timeout=120):
    proc = subprocess.run(cmd, env=run_tool_env(), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_killed_training_resumes_and_finishes_then_tests(toy, tmp_path):
    out = tmp_path / "run"
    cmd = _command(toy, out)
    first = subprocess.Popen(cmd, env=run_tool_env(), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    ckpt1 = out / "checkpoints" / "checkpoint_epoch_00001.pyth"
    deadline = time.time() + 90
    while not ckpt1.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # during epoch 2 (or its precise BN / validation)
    first.wait()
    assert ckpt1.exists() and not (out / "checkpoints" / "checkpoint_epoch_00003.pyth").exists()

    log = _run(cmd)
    assert "Weights source: auto-resume from" in log
    # Train and test in one process: the thread budget is applied to both, logged once.
    assert log.count("Threads: ") == 1 and "1 intra-op thread(s) per process" in log
    assert "(main threads set by OMP_NUM_THREADS=1)" in log
    assert "top-5 (= top-2, all classes)" in log  # 2 classes: top-5 is not a real top-5
    resumed_from = int(log.split("Start epoch: ")[1].split(" ")[0])
    assert resumed_from in (2, 3)
    names = sorted(os.listdir(out / "checkpoints"))
    assert names == [f"checkpoint_epoch_0000{e}.pyth" for e in (1, 2, 3)]
    epochs = [r["epoch"] for r in metrics_records(out, "train_epoch")]
    assert epochs[-(4 - resumed_from):] == [f"{e}/3" for e in range(resumed_from, 4)]
    assert epochs == ["1/3", "2/3", "3/3"]  # the killed attempt's rows of the re-run epoch are gone
    assert torch.load(out / "checkpoints" / names[-1], weights_only=True)["epoch"] == 2

    final = metrics_records(out, "test_final")[-1]
    assert final["num_videos"] == 4 and final["num_failed"] == 0 and final["views"] == 6
    assert final["checkpoint_epoch"] == 3 and final["checkpoint"].endswith("checkpoint_epoch_00003.pyth")
    with open(out / "preds.pkl", "rb") as f:
        preds, labels = pickle.load(f)
    assert preds.shape == (4, 2) and labels.tolist() == [0, 0, 1, 1]
    # Sum ensemble of 6 softmax views: every row sums to the number of views.
    assert torch.allclose(preds.sum(dim=1), torch.full((4,), 6.0), atol=1e-4)
    assert float(final["top1_acc"]) == pytest.approx(100.0 * float((preds.argmax(1) == labels).float().mean()))


def test_two_process_cpu_run_counts_every_test_video_once(toy, tmp_path):
    out = tmp_path / "torchrun"
    cmd = _command(toy, out, "SOLVER.MAX_EPOCH", "1", "BN.USE_PRECISE_STATS", "False",
                   "DATA.CLASS_NAMES_PATH", "classes.json")
    log = _run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] + cmd[1:])
    assert "rank 1/2 local_rank 1/2" in log
    assert os.listdir(out / "checkpoints") == ["checkpoint_epoch_00001.pyth"]
    val = metrics_records(out, "val_epoch")[-1]
    assert val["samples"] == 4  # 4 val videos, each on exactly one rank
    final = metrics_records(out, "test_final")[-1]
    assert final["num_videos"] == 4 and final["checkpoint_epoch"] == 1
    with open(out / "preds.pkl", "rb") as f:
        dist_preds, dist_labels = pickle.load(f)

    # The same checkpoint tested by one process gives the same per-video predictions.
    single = tmp_path / "single"
    _run(_command(toy, single, "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH",
                  str(out / "checkpoints" / "checkpoint_epoch_00001.pyth")))
    with open(single / "preds.pkl", "rb") as f:
        preds, labels = pickle.load(f)
    assert torch.equal(labels, dist_labels)
    assert torch.allclose(preds, dist_preds, atol=1e-5)
    assert metrics_records(single, "test_final")[-1]["top1_acc"] == final["top1_acc"]

    # The checkpoint knows its class names; lists numbered another way are refused.
    checkpoint = out / "checkpoints" / "checkpoint_epoch_00001.pyth"
    names = json.loads((toy_data(toy) / "classes.json").read_text())
    assert torch.load(checkpoint, weights_only=True)["class_names"] == names
    (toy_data(toy) / "swapped.json").write_text(json.dumps(names[::-1]))
    refused = subprocess.run(_command(toy, tmp_path / "swapped", "TRAIN.ENABLE", "False", "DATA.CLASS_NAMES_PATH",
                                      "swapped.json", "TEST.CHECKPOINT_FILE_PATH", str(checkpoint)),
                             env=run_tool_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert f"label 0 is {names[0]!r} there but {names[1]!r} in the test lists" in refused.stderr


# The MIXUP section of PySlowFast's MViT / Kinetics configs, unchanged.
PYSLOWFAST_MIXUP = """
MIXUP:
  ENABLE: True
  ALPHA: 0.8
  CUTMIX_ALPHA: 1.0
  PROB: 1.0
  SWITCH_PROB: 0.5
  LABEL_SMOOTH_VALUE: 0.1
"""


def test_a_pyslowfast_mixup_config_trains_with_ema_and_accumulation_then_tests_the_average(toy, tmp_path):
    cfg = tmp_path / "mixup.yaml"
    cfg.write_text(f"_BASE_: {toy[0]}\nMODEL: {{LOSS_FUNC: soft_cross_entropy}}\n" + PYSLOWFAST_MIXUP)
    out = tmp_path / "run"
    cmd = [PYTHON, RUN_NET, "--cfg", str(cfg), "DATA.PATH_TO_DATA_DIR", toy[1], "DATA.PATH_PREFIX", toy[1],
           "OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "2",
           "TRAIN.GRAD_ACCUMULATION_STEPS", "2", "MODEL.EMA.ENABLE", "True", "MODEL.EMA.DECAY", "0.5"]
    log = _run(cmd)
    assert "x 2 micro-batches per optimiser step (TRAIN.GRAD_ACCUMULATION_STEPS) = effective batch 4, " \
           "2 optimiser steps per epoch" in log  # 8 training videos
    assert "Testing the averaged weights ('ema_state')" in log
    stored = torch.load(out / "checkpoints" / "checkpoint_epoch_00001.pyth", weights_only=True)
    assert stored["ema_state"].keys() == stored["model_state"].keys()
    assert stored["cfg"].count("LABEL_SMOOTH_VALUE: 0.1") == 1
    assert [r["iter"] for r in metrics_records(out, "train_iter")] == ["1/2", "2/2"]
    assert metrics_records(out, "test_final")[-1]["num_videos"] == 4
