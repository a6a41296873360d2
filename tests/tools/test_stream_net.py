"""tools/stream_net.py end to end on a tiny generated h264 video with a small random X3D."""
import json
import os
import re
import subprocess

import av
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import PYTHON, REPO_ROOT, import_tool, run_tool_env
from vov3d.config import assert_and_infer_cfg, get_cfg, merge_file, merge_overrides
from vov3d.models import build_model
from vov3d.models.cox3d import stream_macs_per_frame

TOOL = os.path.join(REPO_ROOT, "tools", "stream_net.py")
CFG = os.path.join(REPO_ROOT, "configs", "Kinetics", "cox3d", "cox3d_S.yaml")
# 7 classes; 1 + 1 + 3 + 2 blocks; head pool [2, 1, 1]: delay 2 + 7 + 1 = 10 frames.
SMALL = ["NUM_GPUS", "0", "MODEL.NUM_CLASSES", "7", "DATA.NUM_FRAMES", "2",
         "DATA.SAMPLING_RATE", "1", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32",
         "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "X3D.DEPTH_FACTOR", "0.5", "X3D.DIM_C5", "64",
         "COX3D.TEMPORAL_WINDOW", "0"]
NAMES = ["abseiling", "bowling", "cooking", "dancing", "eating", "fencing", "golfing"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stream") / "moving_bar.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("h264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(16):
            image = np.full((64, 64, 3), 40, np.uint8)
            image[:, 4 * i:4 * i + 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def tool():
    return import_tool("stream_net")


def frame_lines(out):
    return [line for line in out.splitlines() if line.startswith("frame ")]


def test_streams_a_video_end_to_end(video, tmp_path):
    labels = tmp_path / "classes.json"
    labels.write_text(json.dumps(NAMES))
    proc = subprocess.run([PYTHON, TOOL, "--cfg", CFG, "--video", video, "--labels", str(labels),
                           "--topk", "3", "--threads", "1", *SMALL, "TEST.ALLOW_RANDOM_INIT",
                           "True"],
                          cwd=REPO_ROOT, env=run_tool_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = frame_lines(proc.stdout)
    # 16 frames, 10 of warm-up: outputs for frames 10..15.
    assert [int(line.split()[1]) for line in lines] == list(range(10, 16))
    for line in lines:
        hits = re.findall(r"([a-z]+) ([0-9.]+)", line.split("fps", 1)[1])
        assert len(hits) == 3 and all(name in NAMES for name, _ in hits)
        probs = [float(p) for _, p in hits]
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    assert "16 frames, 6 outputs" in proc.stdout


def test_checkpoint_weights_decide_the_labels(tool, video, tmp_path, capsys):
    cfg = get_cfg()
    merge_file(cfg, CFG)
    merge_overrides(cfg, SMALL + ["MODEL.MODEL_NAME", "X3D"])
    model = build_model(assert_and_infer_cfg(cfg))
    with torch.no_grad():
        model.head.projection.bias.zero_()
        model.head.projection.bias[3] = 50.0
    ckpt = tmp_path / "x3d.pyth"
    torch.save({"model_state": model.state_dict(), "epoch": 3}, ckpt)
    labels = tmp_path / "classes.json"
    labels.write_text(json.dumps({name: i for i, name in enumerate(NAMES)}))
    code = tool.main(["--cfg", CFG, "--video", video, "--checkpoint", str(ckpt), "--labels",
                      str(labels), "--topk", "1", "--every", "2", *SMALL])
    out = capsys.readouterr().out
    assert code == 0
    lines = frame_lines(out)
    assert [int(line.split()[1]) for line in lines] == [10, 12, 14]
    assert all(line.endswith("dancing 1.000") for line in lines)

    # co3d protocol: one prediction at a frame past the end (the last frame repeats).
    code = tool.main(["--cfg", CFG, "--video", video, "--checkpoint", str(ckpt),
                      "--predict-at", "20", *SMALL])
    out = capsys.readouterr().out
    lines = frame_lines(out)
    assert code == 0 and len(lines) == 1 and lines[0].split()[1] == "20"
    assert "class 3 1.000" in lines[0]
    # Said once, so "frame 20" is not taken for a frame of the video.
    assert out.count("repeat its last frame") == 1
    assert f"{video} has 16 sampled frames (0-15); frames 16-20 repeat its last frame (t=0.50s)." in out


def _x3d_checkpoint(path, overrides=(), **extra):
    cfg = get_cfg()
    merge_file(cfg, CFG)
    merge_overrides(cfg, SMALL + ["MODEL.MODEL_NAME", "X3D", *overrides])
    model = build_model(assert_and_infer_cfg(cfg))
    with torch.no_grad():
        model.head.projection.bias.zero_()
        model.head.projection.bias[3] = 50.0
    torch.save({"model_state": model.state_dict(), "epoch": 3, **extra}, path)
    return str(path)


def test_class_names_stored_in_the_checkpoint_label_the_output(tool, video, tmp_path, capsys):
    ckpt = _x3d_checkpoint(tmp_path / "named.pyth", class_names=NAMES)
    argv = ["--cfg", CFG, "--video", video, "--checkpoint", ckpt, "--topk", "1", "--predict-at", "12"]
    assert tool.main(argv + SMALL) == 0
    captured = capsys.readouterr()
    lines = frame_lines(captured.out)
    assert len(lines) == 1 and lines[0].endswith("dancing 1.000")
    assert f"class names: the 7 stored in '{ckpt}'" in captured.out and not captured.err

    # --labels still wins; names that contradict the checkpoint's are pointed out.
    labels = tmp_path / "classes.json"
    labels.write_text(json.dumps(NAMES[::-1]))
    assert tool.main(argv + ["--labels", str(labels)] + SMALL) == 0
    captured = capsys.readouterr()
    assert frame_lines(captured.out)[0].endswith("dancing 1.000")  # NAMES[::-1][3] is NAMES[3]
    assert "label 0 is 'golfing' in --labels, 'abseiling' in the checkpoint" in captured.err

    bad = _x3d_checkpoint(tmp_path / "bad_names.pyth", class_names=NAMES[:5])
    assert tool.main(["--cfg", CFG, "--video", video, "--checkpoint", bad, *SMALL]) == 1
    assert capsys.readouterr().err.strip() == (f"stream_net.py: checkpoint '{bad}' stores 5 class names; "
                                               "MODEL.NUM_CLASSES is 7.")


def test_a_checkpoint_of_another_architecture_gives_one_line(tool, video, tmp_path, capsys):
    ckpt = _x3d_checkpoint(tmp_path / "wide.pyth", ["MODEL.NUM_CLASSES", "5", "X3D.DIM_C5", "96"])
    assert tool.main(["--cfg", CFG, "--video", video, "--checkpoint", ckpt, *SMALL]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "frame " not in captured.out
    line = lines[0]
    # Testing's one-line summary: the file, then every tensor that does not fit, with shapes.
    assert line.startswith(f"stream_net.py: testing needs exactly this model's weights, but 3 tensors of '{ckpt}' do not "
                           "fit: "
                           "head.lin_5.weight (checkpoint [96, 432, 1, 1, 1], model [64, 432, 1, 1, 1]), ")
    assert "head.projection.weight (checkpoint [5, 96], model [7, 64])" in line
    assert "Error(s) in loading state_dict" not in line and "Check MODEL.NUM_CLASSES" in line

    # A shallower network: the blocks it lacks are named as such, and the list is cut after ten.
    shallower = _x3d_checkpoint(tmp_path / "shallower.pyth", ["X3D.DEPTH_FACTOR", "0.25"])
    assert tool.main(["--cfg", CFG, "--video", video, "--checkpoint", shallower, *SMALL]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "(missing from the checkpoint)" in lines[0]
    assert re.search(r" \.\.\. \(\d+ more\)\. Check", lines[0])


def test_refuses_bad_input(tool, video, tmp_path, capsys):
    assert tool.main(["--cfg", CFG, "--video", video, *SMALL, "OUTPUT_DIR", str(tmp_path / "run")]) == 2
    assert "ALLOW_RANDOM_INIT" in capsys.readouterr().err
    assert tool.main(["--cfg", CFG, "--video", video, *SMALL, "TEST.ALLOW_RANDOM_INIT", "True",
                      "MODEL.MODEL_NAME", "CSN"]) == 2
    assert "streaming runs CoX3D" in capsys.readouterr().err
    missing = str(tmp_path / "missing.mp4")
    assert tool.main(["--cfg", CFG, "--video", missing, *SMALL, "TEST.ALLOW_RANDOM_INIT",
                      "True"]) == 1
    assert "missing.mp4" in capsys.readouterr().err
    labels = tmp_path / "bad.json"
    labels.write_text(json.dumps(NAMES[:3]))
    assert tool.main(["--cfg", CFG, "--video", video, "--labels", str(labels), *SMALL,
                      "TEST.ALLOW_RANDOM_INIT", "True"]) == 1
    assert "names 3 classes but MODEL.NUM_CLASSES is 7" in capsys.readouterr().err


def test_benchmark_stream_mode_times_frames_against_clips(capsys):
    benchmark = import_tool("benchmark_model")
    code = benchmark.main(["--batch-sizes", "1", "--cfg", CFG, "--mode", "stream", "--runs", "1",
                           "--warmup", "0", *SMALL])
    out = capsys.readouterr().out
    assert code == 0
    clip_row = next(line for line in out.splitlines() if line.strip().startswith("clip (X3D)"))
    frame_row = next(line for line in out.splitlines() if "stream (CoX3D, window 2)" in line)
    assert "1x3x2x32x32" in clip_row and "1x3x32x32" in frame_row
    cfg = get_cfg()
    merge_file(cfg, CFG)
    merge_overrides(cfg, SMALL)
    with torch.device("meta"), torch.no_grad():
        model = build_model(assert_and_infer_cfg(cfg))
        counter = FlopCounterMode(display=False)
        with counter:
            model([torch.empty(1, 3, 2, 32, 32)])
    assert clip_row.split("|")[4].strip() == f"{counter.get_total_flops() / 2e9:.4f}"
    assert frame_row.split("|")[4].strip() == f"{stream_macs_per_frame(model, 32, 32) / 1e9:.4f}"
    assert frame_row.strip().endswith("x")
