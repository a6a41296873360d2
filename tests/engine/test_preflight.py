"""What a job is refused for before any work: the results path, the test lists and every
directory the run will write, each named with the setting it comes from."""
import os
import subprocess

import pytest

from tests.engine.tiny_parts import tiny_cfg
from vov3d.config import ConfigError
from vov3d.datasets import load_index
from vov3d.datasets.kinetics import Kinetics
from vov3d.datasets.lists import ListFormatError, MissingListError
from vov3d.utils import checkpoint_io as cu
from vov3d.engine import launch, preflight
from vov3d.engine.train import train


def _never(cfg):
    raise AssertionError("the job must not start")


def test_results_path_refuses_a_directory_before_the_test(tmp_path):
    from vov3d.engine.preflight import results_path

    (tmp_path / "sub").mkdir()
    for value in ("sub", "sub/", str(tmp_path / "sub")):
        with pytest.raises(ConfigError, match=r"TEST.SAVE_RESULTS_PATH .* is a directory"):
            results_path(tiny_cfg(tmp_path, "TEST.SAVE_RESULTS_PATH", value))
    assert results_path(tiny_cfg(tmp_path, "TEST.SAVE_RESULTS_PATH", "preds.pkl")) == str(tmp_path / "preds.pkl")
    assert results_path(tiny_cfg(tmp_path)) is None
    # A train + test run refuses it before training (no checkpoint gets written).
    with pytest.raises(ConfigError, match=r"TEST.SAVE_RESULTS_PATH 'sub' is a directory"):
        launch.launch_job(tiny_cfg(tmp_path, "TEST.SAVE_RESULTS_PATH", "sub"), "tcp://localhost:1", train)
    assert cu.list_checkpoints(str(tmp_path)) == []


def _kinetics_cfg(root, *overrides):
    return tiny_cfg(root / "out", "DATA.PATH_TO_DATA_DIR", str(root), "DATA.PATH_PREFIX", str(root), *overrides)


def test_test_lists_are_read_before_training_without_building_a_dataset(tmp_path, monkeypatch):
    (tmp_path / "test.csv").write_text("a.mp4 0\nb/c d.mp4 3\n")
    monkeypatch.setattr(Kinetics, "__init__", lambda *a: pytest.fail("no dataset is built"))
    index = load_index("kinetics", _kinetics_cfg(tmp_path), "test")  # no video exists: none is opened
    assert index.paths == [str(tmp_path / "a.mp4"), str(tmp_path / "b/c d.mp4")] and index.labels == [0, 3]
    preflight.check_test_lists(_kinetics_cfg(tmp_path))

    (tmp_path / "test.csv").write_text("a.mp4 0\nb.mp4 seven\n")
    with pytest.raises(ListFormatError, match=r"test.csv:2: label 'seven' is not an integer"):
        launch.launch_job(_kinetics_cfg(tmp_path), "tcp://localhost:1", _never)
    os.remove(tmp_path / "test.csv")
    with pytest.raises(MissingListError, match="split 'test' needs the video list"):
        launch.launch_job(_kinetics_cfg(tmp_path), "tcp://localhost:1", _never)
    assert not (tmp_path / "out").exists()
    preflight.check_test_lists(_kinetics_cfg(tmp_path, "TEST.ENABLE", "False"))  # not needed: not read


# What the system says when writing where `frozen` (tests/conftest.py) froze: root is stopped by the
# immutable flag only.
_REFUSED = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"


@pytest.mark.parametrize("place,overrides,needle", [
    ("checkpoints", (), "OUTPUT_DIR: the checkpoints go to '{out}/checkpoints', which is not writable"),
    ("results", ("TEST.SAVE_RESULTS_PATH", "{root}/results/preds.pkl"),
     "TEST.SAVE_RESULTS_PATH: the test results go to '{root}/results'"),
    ("tensorboard", ("TENSORBOARD.ENABLE", "True", "TENSORBOARD.LOG_DIR", "{root}/tb/run1"),
     "TENSORBOARD.LOG_DIR: the TensorBoard logs go to '{root}/tb/run1', which is not writable (cannot "
     "create files in '{root}/tb'"),
    ("output", (), "OUTPUT_DIR: stdout.log, metrics.jsonl and bad_videos.txt go to '{out}'"),
    ("stdout.log", (), "OUTPUT_DIR: '{out}/stdout.log' cannot be appended to"),
])
def test_unwritable_directories_are_named_before_any_work(tmp_path, monkeypatch, frozen, place, overrides, needle):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    for folder in ("results", "tb"):
        (tmp_path / folder).mkdir()
    (out / "stdout.log").write_text("earlier run\n")
    target = {"checkpoints": out / "checkpoints", "results": tmp_path / "results", "tensorboard": tmp_path / "tb",
              "output": out, "stdout.log": out / "stdout.log"}[place]
    opts = [o.format(root=tmp_path) for o in overrides]
    cfg = tiny_cfg(out, "TEST.ENABLE", "True", "TEST.DATASET", "kinetics", *opts)
    monkeypatch.setattr(preflight, "check_test_lists", lambda cfg: None)  # another test's subject
    launch.launch_job(cfg, "tcp://localhost:1", lambda cfg: None)  # all writable: it runs
    frozen(target)
    with pytest.raises(ConfigError) as err:
        launch.launch_job(cfg, "tcp://localhost:1", _never)
    assert needle.format(out=out, root=tmp_path) in str(err.value)
    assert _REFUSED in str(err.value)
    assert (out / "stdout.log").read_text() == "earlier run\n"  # nothing written


def test_run_net_names_an_unwritable_checkpoint_folder_in_one_line(tmp_path, frozen):
    from tests.conftest import PYTHON, REPO_ROOT, run_tool_env

    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    frozen(tmp_path / "out" / "checkpoints")
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(f"NUM_GPUS: 0\nOUTPUT_DIR: {tmp_path / 'out'}\nTEST:\n  ENABLE: False\nMODEL:\n  MODEL_NAME: X3D\n")
    result = subprocess.run([PYTHON, os.path.join(REPO_ROOT, "tools", "run_net.py"), "--cfg", str(cfg)],
                            cwd=tmp_path, env=run_tool_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"run_net.py: config error: OUTPUT_DIR: the checkpoints go to '{tmp_path / 'out' / 'checkpoints'}', which "
        f"is not writable (cannot create files in '{tmp_path / 'out' / 'checkpoints'}': {_REFUSED}). "
        "Make it writable or choose another OUTPUT_DIR."]


def test_visualisation_inputs_are_checked_before_any_work(tmp_path):
    """A subset naming no class, a category child that is no class, a layer that is no module
    and an unknown colormap each stop the job before OUTPUT_DIR exists."""
    (tmp_path / "test.csv").write_text("a.mp4 pouring\n")
    (tmp_path / "classes.json").write_text('["pouring", "stirring", "cutting", "peeling"]')
    (tmp_path / "subset.txt").write_text("stirring\npeeling\n")
    (tmp_path / "bad_subset.txt").write_text("stirring\nporing\n")
    (tmp_path / "parents.json").write_text('{"kitchen": ["cutting", "peeling"]}')
    (tmp_path / "bad_parents.json").write_text('{"kitchen": ["cutting", "peel"]}')
    good = ["TRAIN.ENABLE", "False", "DATA.CLASS_NAMES_PATH", "classes.json", "TENSORBOARD.ENABLE", "True",
            "TENSORBOARD.CONFUSION_MATRIX.ENABLE", "True",
            "TENSORBOARD.CONFUSION_MATRIX.SUBSET_PATH", str(tmp_path / "subset.txt"),
            "TENSORBOARD.CATEGORIES_PATH", str(tmp_path / "parents.json"),
            "TENSORBOARD.MODEL_VIS.ENABLE", "True", "TENSORBOARD.MODEL_VIS.LAYER_LIST", "['conv']",
            "TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST", "['bn']"]
    preflight.check_visualization(_kinetics_cfg(tmp_path, *good))
    cases = [
        (("TENSORBOARD.CONFUSION_MATRIX.SUBSET_PATH", str(tmp_path / "bad_subset.txt")),
         f"TENSORBOARD.CONFUSION_MATRIX.SUBSET_PATH '{tmp_path / 'bad_subset.txt'}', line 2: 'poring' is not a "
         "class name; closest: 'pouring', 'peeling'."),
        (("TENSORBOARD.CATEGORIES_PATH", str(tmp_path / "bad_parents.json")),
         f"TENSORBOARD.CATEGORIES_PATH '{tmp_path / 'bad_parents.json'}', line 1: parent 'kitchen' lists 'peel', "
         "which is not a class name; closest: 'peeling'."),
        (("TENSORBOARD.MODEL_VIS.LAYER_LIST", "['conv', 'head/proj']"),
         "TENSORBOARD.MODEL_VIS.LAYER_LIST entry 'head/proj' names no module of TinyTestNet; nearby valid names: "
         "head/projection"),
        (("TENSORBOARD.MODEL_VIS.GRAD_CAM.COLORMAP", "viridiss"),
         "TENSORBOARD.MODEL_VIS.GRAD_CAM.COLORMAP 'viridiss' is not a matplotlib colormap"),
    ]
    for override, message in cases:
        with pytest.raises(ConfigError) as err:
            launch.launch_job(_kinetics_cfg(tmp_path, *good, *override), "tcp://localhost:1", _never)
        assert str(err.value).startswith(message)
        assert not (tmp_path / "out").exists()
    # Without names from DATA or TENSORBOARD.CLASS_NAMES_PATH a subset cannot be read.
    (tmp_path / "test.csv").write_text("a.mp4 0\n")
    with pytest.raises(ConfigError, match="picks classes by name, but no class names are known"):
        preflight.check_visualization(_kinetics_cfg(tmp_path, *good[:2], *good[4:]))


def test_mixup_with_one_clip_per_process_is_refused_before_any_work(tmp_path):
    one_clip = ("MIXUP.ENABLE", "True", "TRAIN.BATCH_SIZE", "1", "TRAIN.GRAD_ACCUMULATION_STEPS", "4")
    with pytest.raises(ConfigError, match=r"MIXUP.ENABLE mixes the clips of each process's batch with each "
                                          r"other, but TRAIN.BATCH_SIZE 1 gives each process 1 clip"):
        launch.launch_job(tiny_cfg(tmp_path / "run", *one_clip), "tcp://localhost:1", _never)
    assert not (tmp_path / "run" / "checkpoints").exists()
    # Label smoothing alone needs no second clip; neither does a test-only run.
    preflight.check_process_batches(tiny_cfg(tmp_path, *one_clip, "MIXUP.ALPHA", "0.0", "MIXUP.CUTMIX_ALPHA", "0.0"))
    preflight.check_process_batches(tiny_cfg(tmp_path, *one_clip, "TRAIN.ENABLE", "False"))
