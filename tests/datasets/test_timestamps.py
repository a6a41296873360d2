"""Real-world timestamp layouts: a stream that starts late and h264 with B-frames."""
import fractions
import sys

import av
import numpy as np
import torch

from tests.datasets.conftest import frame_numbers, make_cfg, ramp_frames
from vov3d.datasets import build_dataset


def write_ramp(path, frames, first_pts=0, b_frames=0):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"bf": str(b_frames), "g": "250"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = first_pts + i, fractions.Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_late_start_and_b_frames_give_the_same_clips_as_a_plain_stream(tmp_path):
    frames = ramp_frames(40)
    write_ramp(tmp_path / "plain.mp4", frames)
    write_ramp(tmp_path / "late.mp4", frames, first_pts=4500)  # starts at 150 s, as trimmed clips can
    write_ramp(tmp_path / "bframes.mp4", frames, b_frames=3)
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text("plain.mp4 0\nlate.mp4 0\nbframes.mp4 0\n")
    test = build_dataset("kinetics", make_cfg(tmp_path), "test")
    clips = [test[i][0][0] for i in range(3)]
    plain = [frame_numbers(clips[0][v]).tolist() for v in range(test.num_views)]
    assert len({tuple(p) for p in plain}) > 3  # distinct temporal windows over the ramp
    for clip in clips[1:]:
        assert [frame_numbers(clip[v]).tolist() for v in range(test.num_views)] == plain
    assert all(np.all(np.diff(p) >= 0) for p in plain)


def test_unusable_torchvision_backend_falls_back_to_pyav_once(tmp_path, caplog, monkeypatch):
    write_ramp(tmp_path / "plain.mp4", ramp_frames(40))
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text("plain.mp4 0\n")
    pyav = build_dataset("kinetics", make_cfg(tmp_path), "test")[0][0][0]
    # An installation where torchvision cannot be imported (as next to a CPU-only torch).
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    with caplog.at_level("WARNING"):
        dataset = build_dataset("kinetics", make_cfg(tmp_path, "DATA.DECODING_BACKEND", "torchvision"), "test")
    assert caplog.text.count("decoding with PyAV instead") == 1
    assert torch.equal(dataset[0][0][0], pyav)
