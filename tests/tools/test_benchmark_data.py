"""tools/benchmark_data.py: bad options and bad data end in one line, not a traceback."""
import os
import runpy

import pytest

from tests.conftest import REPO_ROOT
from vov3d.datasets.failures import DataLoadError

TOOL = os.path.join(REPO_ROOT, "tools", "benchmark_data.py")
CFG = """NUM_GPUS: 0
MODEL: {NUM_CLASSES: 2}
DATA: {NUM_FRAMES: 4, SAMPLING_RATE: 1, TRAIN_JITTER_SCALES: [32, 36], TRAIN_CROP_SIZE: 32,
       TEST_CROP_SIZE: 32}
TRAIN: {BATCH_SIZE: 2}
TEST: {BATCH_SIZE: 1, NUM_ENSEMBLE_VIEWS: 1, NUM_SPATIAL_CROPS: 1}
DATA_LOADER: {NUM_WORKERS: 0}
"""


@pytest.fixture(scope="module")
def tool():
    return runpy.run_path(TOOL)


@pytest.fixture
def toy(tmp_path):
    """2 train / 2 test videos of 8 frames and a config that reads them."""
    generate = runpy.run_path(os.path.join(REPO_ROOT, "tools", "make_toy_dataset.py"))["generate"]
    data = tmp_path / "data"
    generate(str(data), num_classes=2, videos_per_class=1, eval_per_class=1, num_frames=8,
             width=32, height=32, seed=0, fmt="kinetics")
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(CFG)
    return cfg, data


def run(tool, cfg, data, *overrides):
    return tool["main"](["--cfg", str(cfg), "--workers", "0", "--clips", "2", "--videos", "1",
                         "DATA.PATH_TO_DATA_DIR", str(data), "DATA.PATH_PREFIX", str(data),
                         "OUTPUT_DIR", str(data.parent / "out"), *overrides])


@pytest.mark.parametrize("flag, value", [("--workers", "x"), ("--workers", "0,-1"), ("--workers", ""),
                                         ("--clips", "0"), ("--videos", "two")])
def test_bad_integer_options_are_usage_errors(tool, tmp_path, capsys, flag, value):
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(CFG)
    with pytest.raises(SystemExit) as exit_info:
        tool["main"](["--cfg", str(cfg), flag, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage:" in err
    assert f"argument {flag}: expected" in err and repr(value) in err


def test_worker_counts_parse(tool):
    assert tool["worker_counts"]("0,1,2") == [0, 1, 2] and tool["positive_int"]("7") == 7


def test_missing_test_video_keeps_the_train_rows(tool, toy, capsys):
    cfg, data = toy
    first, rest = (data / "test.csv").read_text().split("\n", 1)
    (data / "test.csv").write_text(f"videos/gone.mp4 {first.split()[1]}\n{rest}")
    assert run(tool, cfg, data) == 1
    out, err = capsys.readouterr()
    assert "train clip, one process" in out and "train loader, 0 worker(s)" in out
    assert "test video, decode once" in out  # failed test videos are counted, not fatal
    assert "one decode per view" not in out  # the measurement that needs every view stopped
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"benchmark_data: error: MissingSampleError: video file missing or empty: "
                        f"{data / 'videos' / 'gone.mp4'}")


def test_missing_list_names_the_file(tool, toy, capsys):
    cfg, data = toy
    os.remove(data / "test.csv")
    assert run(tool, cfg, data) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "split 'test' needs the video list" in err
    assert str(data / "test.csv") in err


def test_batch_bigger_than_the_split_stops_before_any_measurement(tool, toy, capsys):
    cfg, data = toy
    videos = len((data / "train.csv").read_text().splitlines())
    assert run(tool, cfg, data, "TRAIN.BATCH_SIZE", str(videos + 1)) == 1
    out, err = capsys.readouterr()
    assert "ms/clip" not in out and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"benchmark_data: error: LoaderSetupError: the train split has {videos} videos, fewer than the per-process "
        f"batch {videos + 1} the loader rows need (TRAIN.BATCH_SIZE {videos + 1}); add TRAIN.BATCH_SIZE {videos} "
        "(or less) to the overrides, or list more videos.")


def test_worker_error_is_shortened_to_its_last_line(tool):
    from torch._utils import ExceptionWrapper

    try:
        raise DataLoadError("Failed to load a train clip after 2 attempts; first files: /d/a.mp4")
    except DataLoadError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DataLoadError) as error:
        wrapped.reraise()  # what the DataLoader does in the main process
    assert "Traceback" in str(error.value)
    assert tool["one_line"](error.value) == ("DataLoadError: Failed to load a train clip after 2 "
                                             "attempts; first files: /d/a.mp4")
    assert tool["one_line"](FileNotFoundError("no\nfile")) == "FileNotFoundError: no file"


def test_reference_path_gives_the_views_ours_give(tool, tmp_path):
    """The reference-style path the tool times computes the same 2 x 3 views as ours (same
    frames, crops and normalisation, up to the uint8 rounding of our resize): a like-for-like
    comparison."""
    import torch

    from vov3d.config import assert_and_infer_cfg, get_cfg, merge_overrides
    from vov3d.datasets import build_dataset
    from vov3d.engine.input_step import InputStep

    data = tmp_path / "data"
    generate = runpy.run_path(os.path.join(REPO_ROOT, "tools", "make_toy_dataset.py"))["generate"]
    generate(str(data), num_classes=2, videos_per_class=1, eval_per_class=1, num_frames=8,
             width=48, height=32, seed=1, fmt="kinetics")
    cfg = get_cfg()
    merge_overrides(cfg, ["NUM_GPUS", "0", "MODEL.NUM_CLASSES", "2", "DATA.PATH_TO_DATA_DIR", str(data),
                          "DATA.PATH_PREFIX", str(data), "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "1",
                          "DATA.TRAIN_JITTER_SCALES", "[24, 30]", "DATA.TRAIN_CROP_SIZE", "24", "DATA.TEST_CROP_SIZE", "24",
                          "DATA.MEAN", "[0.4, 0.45, 0.5]", "DATA.STD", "[0.2, 0.225, 0.25]",
                          "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3",
                          "OUTPUT_DIR", str(data.parent / "out")])
    cfg = assert_and_infer_cfg(cfg)
    dataset = build_dataset("kinetics", cfg, "test")
    for video in range(dataset.num_videos):
        ours = InputStep(cfg, torch.device("cpu")).clips(dataset[video][0][0])
        reference = tool["baseline_test_video"](dataset.video_path(video), cfg)
        assert reference.shape == ours.shape == (6, 3, 4, 24, 24)
        # One grey level after dividing by the smallest STD: 1 / 255 / 0.2.
        assert (reference - ours).abs().max() <= 1 / 255 / 0.2 + 1e-5
        assert (reference - ours).abs().mean() < 0.005


def test_rows_report_uint8_bytes_and_the_reference(tool, toy, capsys):
    cfg, data = toy
    assert run(tool, cfg, data) == 0
    rows = dict(line.rsplit(None, 1) for line in capsys.readouterr().out.splitlines()
                if line[:1].isalpha() or line.startswith("  "))
    rows = {name.strip(): value for name, value in rows.items()}
    assert rows["train clip handed to the model (uint8, MB)"] == f"{3 * 4 * 32 * 32 / 1e6:.2f}"
    assert rows["as float32 (MB)"] == f"{4 * 3 * 4 * 32 * 32 / 1e6:.2f}"
    assert rows["test video handed to the model (uint8, MB)"] == f"{3 * 4 * 32 * 32 / 1e6:.1f}"
    assert float(rows["test video, reference dataset path (ms/video)"]) > 0
    assert "speed-up of decode once" in rows and "input step on the CPU, batch of 2 (ms/batch)" in rows
