"""run_net.py refuses bad command lines and configs before doing any work."""
import os
import subprocess

import pytest

from tests.conftest import PYTHON, REPO_ROOT, run_tool_env

RUN_NET = os.path.join(REPO_ROOT, "tools", "run_net.py")


def run(args, cwd):
    return subprocess.run([PYTHON, RUN_NET] + args, cwd=cwd, env=run_tool_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def good_cfg(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(f"NUM_GPUS: 0\nOUTPUT_DIR: {tmp_path / 'out'}\n")
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
