"""The demo end to end on a generated 3-second video: every frame out at the input's rate and
size, labels drawn, one predictions row per window (clip models) or per frame after the
warm-up (CoX3D); the demo settings; bad input refused before any decoding."""
import json
import logging
import os
import subprocess

import av
import numpy as np
import pytest
import torch

from tests.conftest import PYTHON, REPO_ROOT, run_tool_env
from tests.models.model_helpers import project_cfg
from vov3d.config import ConfigError
from vov3d.demo.outputs import check_window_support
from vov3d.demo.run import run_demo
from vov3d.models import build_model

NAMES = ["archery", "bowling", "cooking", "dancing", "eating"]
WIDTH, HEIGHT, FPS, FRAMES = 128, 96, 30, 90
# VoV3D-M made tiny: clips of 4 frames 2 apart at 30 fps span 8 frames of a 30 fps video.
CLIP = ["MODEL.NUM_CLASSES", "5", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TARGET_FPS", "30",
        "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 32]",
        "VOV3D.STAGE_DEPTHS", "[1, 1, 1, 1]", "VOV3D.NUM_CONV", "2", "TENSORBOARD.MODEL_VIS.TOPK_PREDS", "3"]
SPAN = 8
# CoX3D (X3D-S, 6 blocks) on every frame: warm-up 2 (stem) + 6 (blocks) + 1 (2-frame head) = 9.
STREAM = ["MODEL.NUM_CLASSES", "5", "DATA.NUM_FRAMES", "2", "DATA.SAMPLING_RATE", "1", "DATA.TARGET_FPS", "30",
          "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 32]",
          "X3D.DEPTH_FACTOR", "0.4", "COX3D.TEMPORAL_WINDOW", "0", "TENSORBOARD.MODEL_VIS.TOPK_PREDS", "2"]
DELAY = 9


def write_video(path, frames=FRAMES, width=WIDTH, height=HEIGHT, fps=FPS):
    """A bar sweeping over a grey background, h264."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), 90, np.uint8)
            image[:, (3 * i) % width:(3 * i) % width + 6] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def read_video(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.average_rate


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("demo") / "sweep.mp4")


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    path = tmp_path_factory.mktemp("labels") / "kinetics_classnames.json"
    path.write_text(json.dumps({name: i for i, name in enumerate(NAMES)}))  # PySlowFast's {name: id}
    return str(path)


def demo_cfg(tmp_path, video, *overrides, model="clip"):
    base = ("configs/Kinetics/vov3d/vov3d_M.yaml", CLIP) if model == "clip" else \
        ("configs/Kinetics/cox3d/cox3d_S.yaml", STREAM)
    return project_cfg(base[0], *base[1], "TEST.ALLOW_RANDOM_INIT", "True", "OUTPUT_DIR", str(tmp_path / "run"),
                       "DEMO.INPUT_VIDEO", video, "DEMO.OUTPUT_FILE", str(tmp_path / "labelled.mp4"), *overrides)


def rows_of(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_clip_model_labels_every_frame_once_per_window(tmp_path, video, labels):
    result = run_demo(demo_cfg(tmp_path, video, "DEMO.LABEL_FILE_PATH", labels))
    frames, rate = read_video(tmp_path / "labelled.mp4")
    source, _ = read_video(video)
    assert len(frames) == result.frames == FRAMES and rate == FPS
    assert all(f.shape == (HEIGHT, WIDTH, 3) for f in frames)
    assert result.predictions_file == str(tmp_path / "labelled.jsonl")
    rows = rows_of(result.predictions_file)
    windows = (FRAMES - SPAN) // SPAN + 1
    assert len(rows) == result.predictions == windows
    assert [r["window"] for r in rows] == [[SPAN * k, SPAN * k + SPAN - 1] for k in range(windows)]
    assert [r["frame"] for r in rows] == [SPAN * k + SPAN - 1 for k in range(windows)]
    assert rows[1]["time"] == pytest.approx(15 / FPS, abs=1e-4)
    for row in rows:
        scores = [t["score"] for t in row["topk"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
        assert all(t["name"] == NAMES[t["id"]] for t in row["topk"])
    # Text is drawn in the top-left corner (status, then labels); the rest is the input frame.
    for i in (3, 40, FRAMES - 1):
        diff = np.abs(frames[i].astype(int) - source[i].astype(int))
        assert diff[:24, :40].mean() > 20, i
        assert diff[-30:, -30:].mean() < 4, i


def test_cox3d_predicts_every_frame_after_its_warm_up(tmp_path, video):
    # A checkpoint whose head always says "dancing", with the class names stored in it.
    cfg = demo_cfg(tmp_path, video, model="stream")
    x3d = project_cfg("configs/Kinetics/cox3d/cox3d_S.yaml", *STREAM, "MODEL.MODEL_NAME", "X3D")
    weights = build_model(x3d)
    with torch.no_grad():
        weights.head.projection.bias.zero_()
        weights.head.projection.bias[3] = 50.0
    ckpt = tmp_path / "x3d.pyth"
    torch.save({"model_state": weights.state_dict(), "class_names": NAMES}, ckpt)
    cfg.TEST.CHECKPOINT_FILE_PATH = str(ckpt)
    result = run_demo(cfg)
    frames, rate = read_video(tmp_path / "labelled.mp4")
    assert len(frames) == FRAMES and rate == FPS
    rows = rows_of(result.predictions_file)
    assert [r["frame"] for r in rows] == list(range(DELAY, FRAMES))
    assert all("window" not in r for r in rows)
    assert all(r["topk"][0] == {"id": 3, "name": "dancing", "score": 1.0} for r in rows)
    source, _ = read_video(video)
    for i in (2, 50):  # "warming up (3/9)", then the labels
        assert np.abs(frames[i].astype(int) - source[i].astype(int))[:24, :40].mean() > 20


def test_window_overlap_skipping_size_rate_and_threads(tmp_path, video):
    torch.manual_seed(0)  # the same random weights in both runs
    overlap = run_demo(demo_cfg(tmp_path, video, "DEMO.BUFFER_SIZE", "4", "DEMO.THREAD_ENABLE", "True"))
    rows = rows_of(overlap.predictions_file)
    assert [r["window"][0] for r in rows] == list(range(0, FRAMES - SPAN + 1, 4))
    torch.manual_seed(0)
    serial = run_demo(demo_cfg(tmp_path, video, "DEMO.BUFFER_SIZE", "4"))
    assert rows_of(serial.predictions_file) == rows  # threads change nothing but the speed

    skipped = run_demo(demo_cfg(tmp_path, video, "DEMO.BUFFER_SIZE", "4", "DEMO.NUM_CLIPS_SKIP", "1",
                                "DEMO.DISPLAY_WIDTH", "64", "DEMO.DISPLAY_HEIGHT", "48", "DEMO.OUTPUT_FPS", "15"))
    assert [r["window"][0] for r in rows_of(skipped.predictions_file)] == list(range(0, FRAMES - SPAN + 1, 8))
    frames, rate = read_video(tmp_path / "labelled.mp4")
    assert len(frames) == FRAMES and frames[0].shape == (48, 64, 3) and rate == 15

    live = run_demo(demo_cfg(tmp_path, video, "DEMO.NUM_CLIPS_SKIP", "-1", "DEMO.THREAD_ENABLE", "True"))
    rows = rows_of(live.predictions_file)
    assert live.frames == FRAMES and 1 <= len(rows) <= (FRAMES - SPAN) // SPAN + 1
    assert all(r["window"][0] % SPAN == 0 and r["window"][1] == r["window"][0] + SPAN - 1 for r in rows)


def test_a_video_shorter_than_one_clip_is_written_unlabelled_and_said(tmp_path, caplog):
    short = write_video(tmp_path / "short.mp4", frames=5)
    with caplog.at_level(logging.WARNING):
        result = run_demo(demo_cfg(tmp_path, short))
    assert result.frames == 5 and result.predictions == 0 and rows_of(result.predictions_file) == []
    assert len(read_video(tmp_path / "labelled.mp4")[0]) == 5
    assert f"{short} has 5 frames, fewer than the {SPAN} one clip spans" in caplog.text
    with caplog.at_level(logging.WARNING):
        run_demo(demo_cfg(tmp_path, short, model="stream"))
    assert f"5 sampled frames (every DATA.SAMPLING_RATE-th at DATA.TARGET_FPS), fewer than the {DELAY}" in caplog.text


def test_bad_input_is_refused_before_decoding(tmp_path, video, frozen):
    def refused(match, *overrides, model="clip"):
        with pytest.raises(ConfigError, match=match):
            run_demo(demo_cfg(tmp_path, video, *overrides, model=model))
        assert not (tmp_path / "labelled.mp4").exists() and not (tmp_path / "labelled.jsonl").exists()

    refused("set DEMO.INPUT_VIDEO", "DEMO.INPUT_VIDEO", "")
    missing = str(tmp_path / "missing.mp4")
    refused(f"DEMO.INPUT_VIDEO '{missing}' does not exist", "DEMO.INPUT_VIDEO", missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(2000))
    refused(f"DEMO.INPUT_VIDEO '{garbage}' cannot be read as a video", "DEMO.INPUT_VIDEO", str(garbage))
    refused("DEMO.WEBCAM 63: camera 63 cannot be opened", "DEMO.WEBCAM", "63")
    nowhere = tmp_path / "no" / "such" / "out.mp4"
    refused(f"DEMO.OUTPUT_FILE: the labelled video '{nowhere}' is in a folder that does not exist",
            "DEMO.OUTPUT_FILE", str(nowhere))
    refused("cannot write a .gif video", "DEMO.OUTPUT_FILE", str(tmp_path / "out.gif"))
    refused("would overwrite its input", "DEMO.OUTPUT_FILE", video)
    refused("DEMO.LABEL_FILE_PATH .* does not exist", "DEMO.LABEL_FILE_PATH", str(tmp_path / "none.json"))
    refused("DEMO.NUM_CLIPS_SKIP is 1; CoX3D steps through every sampled frame", "DEMO.NUM_CLIPS_SKIP", "1",
            model="stream")
    try:
        check_window_support()
    except ConfigError:  # opencv-python-headless, as pinned: no window to show the frames in
        refused("DEMO.OUTPUT_FILE is empty, which shows the frames in a window, but this OpenCV has no window "
                "support", "DEMO.OUTPUT_FILE", "")
    locked = tmp_path / "locked"
    locked.mkdir()
    frozen(locked)
    refused("the labelled video .* cannot be written", "DEMO.OUTPUT_FILE", str(locked / "out.mp4"))


def test_run_net_runs_the_demo_and_the_tool_reports_errors_in_one_line(tmp_path, video):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(f"_BASE_: {REPO_ROOT}/configs/Kinetics/vov3d/vov3d_M.yaml\n")
    opts = CLIP + ["NUM_GPUS", "0", "TEST.ALLOW_RANDOM_INIT", "True", "OUTPUT_DIR", str(tmp_path / "run"),
                   "DEMO.INPUT_VIDEO", video, "DEMO.OUTPUT_FILE", str(tmp_path / "labelled.mp4")]
    proc = subprocess.run([PYTHON, os.path.join(REPO_ROOT, "tools", "run_net.py"), "--cfg", str(cfg), *opts,
                           "TRAIN.ENABLE", "False", "TEST.ENABLE", "False", "DEMO.ENABLE", "True"],
                          env=run_tool_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert len(read_video(tmp_path / "labelled.mp4")[0]) == FRAMES
    assert f"Demo: {FRAMES} frames" in proc.stdout
    proc = subprocess.run([PYTHON, os.path.join(REPO_ROOT, "tools", "demo_net.py"), "--cfg", str(cfg), *opts,
                           "DEMO.INPUT_VIDEO", str(tmp_path / "missing.mp4")],
                          env=run_tool_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"demo_net.py: config error: DEMO.INPUT_VIDEO '{tmp_path / 'missing.mp4'}' does not exist; expected a "
        "video file."]
