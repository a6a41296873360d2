"""run_net.py refuses bad command lines and configs before doing any work."""
import os
import subprocess

import pytest
import torch

from tests.conftest import PYTHON, REPO_ROOT, run_tool_env

RUN_NET = os.path.join(REPO_ROOT, "tools", "run_net.py")


def run(args, cwd):
    return subprocess.run([PYTHON, RUN_NET] + args, cwd=cwd, env=run_tool_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def good_cfg(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(f"NUM_GPUS: 0\nOUTPUT_DIR: {tmp_path / 'out'}\nMODEL:\n  MODEL_NAME: X3D\n")
    return str(path)


@pytest.mark.parametrize("extra,needle", [
    (["SOLVER.BASE_LRR", "0.1"], "Did you mean: SOLVER.BASE_LR"),
    (["SOLVER.BASE_LR", "abc"], "expected float"),
    (["DATA.TRAIN_JITTER_SCALES", "256"], "expected list"),
    (["NUM_GPUS"], "KEY VALUE pairs"),
    (["--shard_id", "1"], "--shard_id"),
])
def test_bad_overrides_fail_fast(tmp_path, good_cfg, extra, needle):
    flags = ["--num_shards", "1"] if extra[0].startswith("--") else []
    result = run(["--cfg", good_cfg] + flags + extra, tmp_path)
    assert result.returncode != 0
    assert needle in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_yaml_key_fails_fast(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(f"NUM_GPUS: 0\nOUTPUT_DIR: {tmp_path / 'out'}\nTRAIN:\n  BATCH_SIZEE: 8\n")
    result = run(["--cfg", str(path)], tmp_path)
    assert result.returncode != 0
    assert "TRAIN.BATCH_SIZEE" in result.stderr and "TRAIN.BATCH_SIZE" in result.stderr
    assert "typo.yaml" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_cfg_and_no_arguments(tmp_path):
    result = run(["--cfg", str(tmp_path / "missing.yaml")], tmp_path)
    assert result.returncode != 0 and "missing.yaml" in result.stderr
    result = run([], tmp_path)
    assert result.returncode != 0 and "--cfg" in result.stderr


def test_help_exits_zero(tmp_path):
    result = run(["--help"], tmp_path)
    assert result.returncode == 0 and "--init_method" in result.stdout


def test_testing_without_weights_is_refused_with_a_message(tmp_path):
    cfg = os.path.join(REPO_ROOT, "configs", "Toy", "x3d_M_toy.yaml")
    (tmp_path / "test.csv").write_text("a.mp4 0\n")
    (tmp_path / "classes.json").write_text('["a", "b", "c", "d", "e", "f"]')
    result = run(["--cfg", cfg, "TRAIN.ENABLE", "False", "OUTPUT_DIR", str(tmp_path / "out"),
                  "DATA.PATH_TO_DATA_DIR", str(tmp_path)], tmp_path)
    assert result.returncode == 1
    assert "TEST.ALLOW_RANDOM_INIT True" in result.stderr and "Traceback" not in result.stderr
    result = run(["--cfg", cfg, "TRAIN.ENABLE", "False", "OUTPUT_DIR", str(tmp_path / "out"),
                  "DATA.PATH_TO_DATA_DIR", str(tmp_path),
                  "TEST.CHECKPOINT_FILE_PATH", str(tmp_path / "missing.pyth")], tmp_path)
    assert result.returncode == 1 and "missing.pyth" in result.stderr
    # Missing lists are named before any weights are read.
    os.remove(tmp_path / "test.csv")
    result = run(["--cfg", cfg, "TRAIN.ENABLE", "False", "OUTPUT_DIR", str(tmp_path / "out"),
                  "DATA.PATH_TO_DATA_DIR", str(tmp_path)], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "split 'test' needs the video list" in result.stderr


def test_lower_case_key_gets_a_suggestion(tmp_path, good_cfg):
    result = run(["--cfg", good_cfg, "solver.base_lr", "0.1"], tmp_path)
    assert result.returncode != 0 and "Did you mean: SOLVER.BASE_LR" in result.stderr


@pytest.mark.parametrize("extra,needle", [
    (["NUM_GPUS", "1"], "NUM_GPUS is 1 but CUDA is not available"),
    (["TRAIN.ENABLE", "False", "TEST.ENABLE", "False"], "nothing would run"),
    (["MODEL.MODEL_NAME", "VoV3DD"], "MODEL.MODEL_NAME: unknown model 'VoV3DD'; registered: CSN, CoX3D, "
                                     "SEVNet, VoV3D, X3D. Did you mean 'VoV3D'?"),
    (["TEST.DATASET", "SSv3"], "TEST.DATASET: unknown dataset 'SSv3'"),
])
def test_unusable_launch_settings_stop_before_any_work(tmp_path, good_cfg, extra, needle):
    if extra[:2] == ["NUM_GPUS", "1"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run(["--cfg", good_cfg] + extra, tmp_path)
    assert result.returncode != 0 and needle in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file_and_cfg_that_is_a_directory(tmp_path, good_cfg):
    (tmp_path / "out").write_text("")
    result = run(["--cfg", good_cfg], tmp_path)
    assert result.returncode != 0 and "OUTPUT_DIR" in result.stderr and "not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    result = run(["--cfg", str(tmp_path)], tmp_path)
    assert result.returncode != 0 and "is a directory; expected a YAML file" in result.stderr


# run_net with its train and test phases replaced, so the failure paths run without a
# dataset or model.
_DRIVER = """
import logging, sys, torch
import vov3d.engine.test as test_module
import vov3d.engine.train as train_module
from vov3d.datasets.failures import DataLoadError
from vov3d.engine.runtime import setup_process

class Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 1
    def __getitem__(self, index):
        raise DataLoadError("no train clip could be read from /data/videos; check DATA.PATH_PREFIX")

def job(cfg):
    setup_process(cfg)
    if sys.argv[1] == "phases":
        logging.getLogger("vov3d.driver").info("a phase ran")
        return
    if sys.argv[1] == "data":
        next(iter(torch.utils.data.DataLoader(Unreadable(), num_workers=1)))
    raise ZeroDivisionError("a bug")

train_module.train = test_module.test = job
sys.path.insert(0, sys.argv[2])
import run_net
sys.exit(run_net.main(sys.argv[3:]))
"""


def _run_driver(tmp_path, mode, cfg, test_enable="False"):
    argv = ["--cfg", cfg, "TEST.ENABLE", test_enable, "SOLVER.GAMMA", "0.5"]
    return subprocess.run([PYTHON, "-c", _DRIVER, mode, os.path.dirname(RUN_NET)] + argv, cwd=tmp_path,
                          env=run_tool_env(), capture_output=True, text=True, timeout=120)


def test_data_load_error_from_a_worker_is_one_line_and_logged(tmp_path, good_cfg):
    result = _run_driver(tmp_path, "data", good_cfg)
    line = "DataLoadError: no train clip could be read from /data/videos; check DATA.PATH_PREFIX"
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().endswith("run_net.py: " + line)
    assert "Traceback" not in result.stderr.split("SOLVER.GAMMA")[-1]
    log = (tmp_path / "out" / "stdout.log").read_text()
    assert log.count(line) == 1 and "Caught DataLoadError" not in log  # once: run_net adds no second copy
    assert "SOLVER.GAMMA" in log  # the config warnings too


def test_unexpected_error_is_logged_with_its_traceback_and_re_raised(tmp_path, good_cfg):
    result = _run_driver(tmp_path, "bug", good_cfg)
    assert result.returncode == 1 and "ZeroDivisionError: a bug" in result.stderr
    log = (tmp_path / "out" / "stdout.log").read_text()
    assert "Traceback (most recent call last)" in log and log.count("ZeroDivisionError: a bug") == 1


def test_config_warnings_are_shown_and_logged_once_in_a_train_and_test_run(tmp_path, good_cfg):
    (tmp_path / "test.csv").write_text("a.mp4 0\n")  # read before any phase runs (not decoded)
    result = _run_driver(tmp_path, "phases", good_cfg, test_enable="True")
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).count("SOLVER.GAMMA") == 1
    log = (tmp_path / "out" / "stdout.log").read_text()
    assert log.count("SOLVER.GAMMA") == 1 and log.count("a phase ran") == 2
    assert log.index("SOLVER.GAMMA") < log.index("a phase ran")
