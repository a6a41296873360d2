"""tools/benchmark_threads.py: one fresh process per cell, competitors started and stopped,
one table of medians and ratios."""
import os
import sys

import pytest

from tests.conftest import REPO_ROOT, tiny_toy_run
from vov3d.utils.threads import plan_threads, usable_cores

TINY_X3D = """
TRAIN: {ENABLE: True, DATASET: kinetics, BATCH_SIZE: 4}
DATA: {NUM_FRAMES: 4, SAMPLING_RATE: 4, TRAIN_JITTER_SCALES: [32, 40], TRAIN_CROP_SIZE: 32,
       TEST_CROP_SIZE: 32, INPUT_CHANNEL_NUM: [3]}
X3D: {WIDTH_FACTOR: 1.0, DEPTH_FACTOR: 1.0, BOTTLENECK_FACTOR: 2.25, DIM_C5: 64, DIM_C1: 8}
RESNET: {TRANS_FUNC: x3d_transform}
MODEL: {NUM_CLASSES: 2, ARCH: x3d, MODEL_NAME: X3D}
DATA_LOADER: {NUM_WORKERS: 0, PIN_MEMORY: False}
NUM_GPUS: 0
"""


def _tool():
    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        import benchmark_threads
        return benchmark_threads
    finally:
        sys.path.pop(0)


def _spinners_of(pid):
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"while True: pass" in cmdline:
            found.append(int(entry))
    return found


def test_format_table_gives_medians_ratios_to_idle_and_threads():
    tool = _tool()
    policy = ("budget", "default", 1)
    results = {(policy, 0): [{"median": 0.5, "threads": 2}, {"median": 0.3, "threads": 2},
                             {"median": 0.4, "threads": 2}],
               (policy, 1): [{"median": 1.0, "threads": 1}, {"median": 1.2, "threads": 2}]}
    lines = tool.format_table([policy], [0, 1], results).splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["threads", "wait", "workers", "idle", "+1 busy"]
    assert [c.strip() for c in lines[2].split("|")] == ["budget", "default", "1", "0.400 s, 2 thr",
                                                         "1.100 s, 2.8x, 1/2 thr"]


def test_cells_run_in_fresh_processes_with_their_threads(tmp_path, capsys):
    cfg, data = tiny_toy_run(tmp_path, TINY_X3D)
    code = _tool().main(["--cfg", cfg, "--data", data, "--threads", "1,budget", "--wait", "default",
                         "--workers", "0", "--competitors", "0,1", "--steps", "1", "--warmup-seconds", "0"])
    assert code == 0
    assert _spinners_of(os.getpid()) == []  # every competitor was stopped
    lines = capsys.readouterr().out.splitlines()
    assert "X3D from" in lines[0] and "batch 4" in lines[0]
    rows = [[c.strip() for c in line.split("|")] for line in lines[3:]]
    assert [r[:3] for r in rows] == [["1", "default", "0"], ["budget", "default", "0"]]
    assert rows[0][3].endswith(", 1 thr") and rows[0][4].endswith(", 1 thr")  # OMP_NUM_THREADS=1 reached the cells
    share = plan_threads(usable_cores(), 1, 0, {}).share
    assert 1 <= int(rows[1][4].split(", ")[-1].split()[0]) <= share  # the load decides
    for row in rows:
        idle = float(row[3].split()[0])
        busy, ratio, _ = row[4].split(", ")
        assert idle > 0 and float(ratio[:-1]) == pytest.approx(float(busy.split()[0]) / idle, abs=0.051)


def test_bad_flags_are_refused(capsys):
    with pytest.raises(SystemExit):
        _tool().main(["--cfg", os.path.join(REPO_ROOT, "configs/Toy/vov3d_M_toy.yaml"), "--threads", "0"])
    assert "expected a comma-separated list" in capsys.readouterr().err
