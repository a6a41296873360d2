"""VideoFrames: a file read once, front to back, frame by frame, with its metadata known first."""
import av
import numpy as np
import pytest

from vov3d.datasets.decoder import DecodeError, VideoFrames


def test_every_frame_once_in_order_with_fps_size_and_count(tmp_path):
    path = str(tmp_path / "count.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("h264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for i in range(40):
            image = np.full((32, 48, 3), 6 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with VideoFrames(path) as video:
        assert (video.fps, video.width, video.height, video.frame_count) == (25.0, 48, 32, 40)
        frames = list(video)
    assert len(frames) == 40 and all(f.shape == (32, 48, 3) and f.dtype == np.uint8 for f in frames)
    assert [int(round(f.mean() / 6)) for f in frames] == list(range(40))  # in order, none twice


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(DecodeError, match=f"video file not found: {tmp_path / 'none.mp4'}"):
        VideoFrames(str(tmp_path / "none.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 not a video" * 50)
    with pytest.raises(DecodeError, match=str(junk)):
        VideoFrames(str(junk))
