"""Tests run on one CPU thread with tiny inputs so the suite fits 2 cores."""
import json
import os
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "design")

torch.set_num_threads(1)


@pytest.fixture
def repo_root():
    return REPO_ROOT


def run_tool_env():
    """Environment for tool subprocesses: one thread each, the package importable."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


def tiny_toy_run(root, cfg_text: str):
    """The toy dataset at its smallest useful size (2 classes, 4 train and 2 val/test videos
    each, 16 frames of 48x32), written by the tool itself under `root`, and a config file
    holding `cfg_text`: (config path, data folder)."""
    data = os.path.join(str(root), "data")
    subprocess.run([PYTHON, os.path.join(REPO_ROOT, "tools", "make_toy_dataset.py"), "--out", data,
                    "--classes", "2", "--videos-per-class", "4", "--eval-per-class", "2", "--frames", "16",
                    "--size", "48x32"], check=True, env=run_tool_env(), capture_output=True)
    cfg = os.path.join(str(root), "tiny.yaml")
    with open(cfg, "w") as f:
        f.write(cfg_text)
    return cfg, data


def metrics_records(out, kind: str):
    """The JSON stats records of one `_type` a run wrote to OUTPUT_DIR/metrics.jsonl."""
    with open(os.path.join(str(out), "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("_type") == kind]
