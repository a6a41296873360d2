"""Tests run on one CPU thread with tiny inputs so the suite fits 2 cores."""
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")
# The reference state-dict listings kept in tests/fixtures/keys (named here, not globbed, so
# a missing file fails its tests instead of silently emptying a parametrisation).
REFERENCE_LISTINGS = (
    "vov3d_L_k400", "vov3d_L_ssv1_f16", "vov3d_L_ssv1_f32", "vov3d_M_k400", "vov3d_M_ssv1_f16",
    "vov3d_M_ssv1_f32", "vov3d_M_v1_k400", "x3d_L_k400", "x3d_L_pyslowfast_k400", "x3d_L_ssv1",
    "x3d_M_k400", "x3d_M_ssv1",
)

torch.set_num_threads(1)
# Tools and the demo run in-process in some tests: their thread budget keeps this one thread.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def repo_root():
    return REPO_ROOT


def reference_listing(name: str) -> dict:
    """One reference state-dict listing (see tests/fixtures/keys/README.md)."""
    path = os.path.join(FIXTURES_DIR, "keys", name + ".json")
    if not os.path.isfile(path):
        pytest.fail(f"missing test fixture {path}: the reference listing {name!r} must be in the repository.")
    with open(path) as f:
        return json.load(f)


def run_tool_env():
    """Environment for tool subprocesses: one thread each, the package importable."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


def import_tool(name: str, module_name: str = ""):
    """tools/<name>.py as a module of this process, to call its main() as the command line would."""
    spec = importlib.util.spec_from_file_location(module_name or f"{name}_in_process",
                                                  os.path.join(REPO_ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


@pytest.fixture(autouse=True)
def vov3d_log_handlers_removed():
    """A tool run in this process sets up the root logger for itself; the next test starts
    without its handlers (pytest's own capture handlers are left alone)."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__module__.startswith("vov3d."):
            root.removeHandler(handler)
            handler.close()


@pytest.fixture
def budget_state(monkeypatch):
    """A fixed thread budget to test against: no user thread variables, no load counters,
    nothing logged yet; the test process's threads (torch, OpenCV) restored afterwards."""
    import cv2

    from vov3d.utils import thread_governor, threads

    monkeypatch.setattr(threads, "_logged", set())
    monkeypatch.setattr(thread_governor, "read_load", lambda cpus: None)
    for key in threads.ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    saved = torch.get_num_threads(), cv2.getNumThreads()
    yield monkeypatch
    threads.set_process_threads(saved[0])
    cv2.setNumThreads(saved[1])


@pytest.fixture
def frozen():
    """Make a file or folder unwritable, also for root: `chattr +i` (root ignores permission
    bits), or chmod for other users."""
    frozen_paths = []
    as_root = os.geteuid() == 0

    def freeze(path):
        if as_root:
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode:
                pytest.skip("running as root and `chattr +i` is not available here")
        else:
            os.chmod(path, 0o555 if os.path.isdir(path) else 0o444)
        frozen_paths.append(path)

    yield freeze
    for path in frozen_paths:
        if as_root:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
