"""Tests run on one CPU thread with tiny inputs so the suite fits 2 cores."""
import os
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
