"""Video files as they come from the wild (YouTube Kinetics clips, stream-copy trims, partial
downloads, AVI/MKV, odd sizes): every Kinetics clip holds the source frames a full decode would
give, or the file fails with a DecodeError that names it.

Two references, both computed on a full decode of the file:
  pts rule   - PySlowFast's selective-decoding rule (window in pts from the
               stream's start time, timebase duration / frames), for files whose metadata holds;
  index rule - window on the real decoded frame count, for files decoded
               whole: no frame count (MKV), untrustworthy pts (h264 in AVI), or metadata that
               promises frames the file does not have (truncated downloads).
"""
import fractions
import functools
import logging
import random

import av
import numpy as np
import pytest
import torch

from tests.datasets.conftest import GRAY_STEP, frame_numbers, make_cfg, ramp_frames
from vov3d.datasets import build_dataset, decoder, sampling
from vov3d.datasets.clip_dataset import MissingSampleError

NUM_FRAMES, RATE, VIEWS, CROPS = 8, 4, 10, 3
SHARP = {"qmin": "1", "qmax": "2"}  # mpeg4 near-lossless, so grey levels read back exactly


def encode(path, frames, codec="libx264", pix_fmt="yuv420p", options=None, pts=None,
           audio_first=False, container_options=None):
    """Ramp frames at 30 frames/s; `pts` in 1/30 s units; `audio_first` adds a silent AAC
    stream before the video stream (stream index 0 = audio, as many downloads have)."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        audio = container.add_stream("aac", rate=44100) if audio_first else None
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = {"threads": "1", **(options or {})}
        for i, image in enumerate(frames):
            if pix_fmt == "gray":
                frame = av.VideoFrame.from_ndarray(image[..., 0].copy(), format="gray")
            else:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], fractions.Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio is not None:
            silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                                 layout="mono")
            silence.sample_rate = 44100
            for k in range(44100 * len(frames) // 30 // 1024):
                silence.pts = k * 1024
                container.mux(audio.encode(silence))
            container.mux(audio.encode())


def remux_shifted(src, dst, shift):
    """Copy the packets with pts/dts moved by -`shift`: the leading frames get negative
    timestamps and the MP4 muxer hides them with an edit list, as `ffmpeg -ss -c copy` does."""
    with av.open(str(src)) as source, av.open(str(dst), "w") as target:
        video = source.streams.video[0]
        out = target.add_stream_from_template(video)
        for packet in source.demux(video):
            if packet.dts is None:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = out
            target.mux(packet)


def packet_spans(path):
    with av.open(str(path)) as container:
        return [(p.pos, p.size) for p in container.demux(video=0) if p.size]


def cut(src, dst, length):
    dst.write_bytes(src.read_bytes()[:length])


@functools.lru_cache(maxsize=None)
def _full_decode(path: str):
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                frames = stream.codec_context.decode(packet)
            except av.InvalidDataError:
                continue
            out += [(f.pts, int(round(f.to_ndarray(format="rgb24").mean() / GRAY_STEP)))
                    for f in frames]
    return tuple(out)


def full_decode(path):
    """(pts, frame number) of every frame in output order, skipping undecodable packets."""
    return list(_full_decode(str(path)))


def pts_rule(path, start, count=None):
    """Source frame numbers of the clip starting at `start` (source frames) under the
    selective-decoding rule, on a full decode; `count` overrides the metadata frame count."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, duration = count or stream.frames, stream.duration
        origin, fps = stream.start_time or 0, float(stream.average_rate)
    decoded = full_decode(path)
    size = RATE * NUM_FRAMES / 30 * fps
    timebase = duration / frames
    start_pts = origin + int(start * timebase)
    end_pts = origin + int((start + size - 1) * timebase)
    window = [n for p, n in decoded if start_pts <= p <= end_pts]
    window += [n for p, n in decoded if p > end_pts][:1]
    positions = np.clip(np.linspace(0, size - 1, NUM_FRAMES).astype(int), 0, len(window) - 1)
    return [window[q] for q in positions]


def index_rule(path, start):
    numbers = [n for _, n in full_decode(path)]
    size = RATE * NUM_FRAMES  # 30 frames/s files
    return [numbers[i] for i in sampling.linspace_indices(start, start + size - 1, NUM_FRAMES,
                                                          len(numbers))]


def rule_count(path, rule):
    """Frame count the window positions are drawn over."""
    if rule == "pts":
        with av.open(str(path)) as container:
            return container.streams.video[0].frames
    return len(full_decode(path))


def expected_clip(path, rule, start):
    if rule == "pts":
        return pts_rule(path, start)
    if rule == "pts_real_count":
        return pts_rule(path, start, len(full_decode(path)))
    return index_rule(path, start)


def clip_size(path):
    with av.open(str(path)) as container:
        return RATE * NUM_FRAMES / 30 * float(container.streams.video[0].average_rate)


# name -> how clips are expected to be chosen
VARIANTS = {
    "plain.mp4": "pts",
    "audio_first.mp4": "pts",           # stream 0 is audio
    "x264_default_gop250.mp4": "pts",   # libx264 defaults: B-frames, reordered decode
    "mpeg4_bframes.avi": "pts",         # pts guessed from dts, start at 1 (start_time 0)
    "mpeg4_bframes.mkv": "index",       # no frame count: decoded whole
    "start_1000.mp4": "pts",            # first pts 1000 frames in
    "editlist_5.mp4": "pts_real_count", # 40 samples, 5 hidden by an edit list
    "vfr.mp4": "pts",                   # irregular pts gaps
    "h264_bframes.avi": "index",        # output pts out of order
    "torn_70pct_faststart.mp4": "index",  # partial download, moov first, last packet torn
    "clean_cut_12.mp4": "index",        # moov first, data ends after 12 packets
    "odd_65x49_yuv444.mp4": "pts",
    "odd_65x49_mpeg4.avi": "pts",
    "portrait_48x64.mp4": "pts",
    "gray_ffv1.avi": "pts",
    "one_frame.mp4": "pts",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    ramp = ramp_frames(40)
    encode(root / "plain.mp4", ramp, options={"g": "8"})
    encode(root / "audio_first.mp4", ramp, options={"g": "8"}, audio_first=True)
    encode(root / "x264_default_gop250.mp4", ramp, options={"g": "250"})
    encode(root / "mpeg4_bframes.avi", ramp, "mpeg4", options={"bf": "2", "g": "12", **SHARP})
    encode(root / "mpeg4_bframes.mkv", ramp, "mpeg4", options={"bf": "2", "g": "12", **SHARP})
    encode(root / "start_1000.mp4", ramp, pts=list(range(1000, 1040)))
    remux_shifted(root / "plain.mp4", root / "editlist_5.mp4", 5 * 512)  # 512 pts per frame
    gaps = random.Random(1).choices([1, 1, 2, 3], k=39)
    encode(root / "vfr.mp4", ramp, pts=[0] + list(np.cumsum(gaps)))
    encode(root / "h264_bframes.avi", ramp, options={"g": "12"})
    encode(root / "faststart.mp4", ramp, options={"g": "8"},
           container_options={"movflags": "+faststart"})
    spans = packet_spans(root / "faststart.mp4")
    pos, size = spans[28]
    cut(root / "faststart.mp4", root / "torn_70pct_faststart.mp4", pos + size // 2)
    cut(root / "faststart.mp4", root / "clean_cut_12.mp4", spans[12][0])
    cut(root / "faststart.mp4", root / "torn_first_packet.mp4", spans[0][0] + spans[0][1] // 2)
    plain = (root / "plain.mp4").read_bytes()
    (root / "truncated_moov_last.mp4").write_bytes(plain[: len(plain) * 7 // 10])
    encode(root / "odd_65x49_yuv444.mp4", ramp_frames(40, 49, 65), pix_fmt="yuv444p")
    encode(root / "odd_65x49_mpeg4.avi", ramp_frames(40, 49, 65), "mpeg4", options=SHARP)
    encode(root / "portrait_48x64.mp4", ramp_frames(40, 64, 48))
    encode(root / "gray_ffv1.avi", ramp, "ffv1", pix_fmt="gray")
    encode(root / "one_frame.mp4", ramp_frames(1))
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video, despite the name\n" * 20)
    for split in ("train", "val", "test"):
        (root / f"{split}.csv").write_text("".join(f"{name} 0\n" for name in VARIANTS))
    return root


@pytest.fixture(scope="module")
def test_set(root):
    return build_dataset("kinetics", make_cfg(root), "test")


def test_files_have_the_intended_quirks(root):
    """The variants really carry the layout each test relies on."""
    def meta(name):
        with av.open(str(root / name)) as container:
            s = container.streams.video[0]
            return s.index, s.frames, s.start_time, s.codec_context.has_b_frames
    assert meta("audio_first.mp4")[0] == 1
    assert meta("x264_default_gop250.mp4")[3] > 0
    assert meta("mpeg4_bframes.avi")[2] == 0 and full_decode(root / "mpeg4_bframes.avi")[0][0] == 1
    assert meta("mpeg4_bframes.mkv")[1] == 0
    assert meta("start_1000.mp4")[2] > 0
    assert meta("editlist_5.mp4")[1] == 40 and len(full_decode(root / "editlist_5.mp4")) == 35
    pts = [p for p, _ in full_decode(root / "h264_bframes.avi")]
    assert pts != sorted(pts)
    assert meta("torn_70pct_faststart.mp4")[1] == 40
    assert 20 < len(full_decode(root / "torn_70pct_faststart.mp4")) < 35
    assert meta("clean_cut_12.mp4")[1] == 40 and len(full_decode(root / "clean_cut_12.mp4")) < 16


@pytest.mark.parametrize("name", list(VARIANTS))
def test_all_test_views_hold_the_reference_frames(test_set, root, name):
    index = list(VARIANTS).index(name)
    rule = VARIANTS[name]
    inputs, _, _, meta = test_set[index]
    path = root / name
    # The frames the clips were drawn over, as the reference rule counts them.
    assert meta == {"failed": 0, "num_failures": 0, "video_frames": rule_count(path, rule)}
    assert inputs[0].shape == (VIEWS * CROPS, 3, NUM_FRAMES, 32, 32)
    delta = max(rule_count(path, rule) - clip_size(path), 0)
    for view in range(VIEWS * CROPS):
        temporal, _ = sampling.view_indices(view, CROPS)
        expected = expected_clip(path, rule, delta * temporal / VIEWS)
        assert frame_numbers(inputs[0][view]).tolist() == expected, (name, view)


@pytest.mark.parametrize("name", ["audio_first.mp4", "editlist_5.mp4", "h264_bframes.avi",
                                  "torn_70pct_faststart.mp4", "vfr.mp4", "portrait_48x64.mp4"])
def test_train_clip_is_the_reference_for_the_same_draw(root, name):
    """The random window of a training clip, also when the file is decoded whole after the
    windowed pass gave up (the retry replays the same random number)."""
    dataset = build_dataset("kinetics", make_cfg(root), "train")
    index, rule, path = list(VARIANTS).index(name), VARIANTS[name], root / name
    delta = max(rule_count(path, rule) - clip_size(path), 0)
    starts = set()
    for seed in range(4):
        random.seed(seed)
        start = random.uniform(0, delta)
        random.seed(seed)
        inputs, _, returned, meta = dataset[index]
        assert (returned, meta) == (index, {"num_failures": 0})
        numbers = frame_numbers(inputs[0]).tolist()
        assert numbers == expected_clip(path, rule, start), (name, seed)
        starts.add(numbers[0])
    assert len(starts) > 1 or delta < 1


def test_whole_video_files_decode_once_per_view_the_same(test_set, root):
    for name in ("h264_bframes.avi", "torn_70pct_faststart.mp4", "clean_cut_12.mp4"):
        index = list(VARIANTS).index(name)
        inputs = test_set[index][0][0]
        for view in (0, 13, 29):
            assert torch.equal(test_set.get_view(index, view), inputs[view]), (name, view)


def test_views_equal_the_plain_encoding(test_set):
    """Audio before video, a late start, a long GOP and odd/portrait sizes change nothing about
    which frames the views hold (same container time base as the plain file)."""
    names = list(VARIANTS)
    plain = [frame_numbers(v).tolist() for v in test_set[names.index("plain.mp4")][0][0]]
    assert len({tuple(p) for p in plain}) >= VIEWS - 1  # windows 0.8 frames apart
    for name in ("audio_first.mp4", "start_1000.mp4", "odd_65x49_yuv444.mp4",
                 "portrait_48x64.mp4", "x264_default_gop250.mp4"):
        inputs = test_set[names.index(name)][0][0]
        assert [frame_numbers(v).tolist() for v in inputs] == plain, name


def test_edit_list_clips_span_the_clip_length(test_set, root):
    """With 5 of 40 samples hidden, duration / frames was 7/8 of the frame spacing and the
    32-frame windows covered 28 frames; the duration's frame count gives full windows."""
    inputs = test_set[list(VARIANTS).index("editlist_5.mp4")][0][0]
    first = frame_numbers(inputs[0]).tolist()
    assert first[0] == 5 and first[-1] - first[0] == 31  # frame 5 is the first one shown


def test_one_frame_video_repeats_it(test_set):
    inputs = test_set[list(VARIANTS).index("one_frame.mp4")][0][0]
    assert all(frame_numbers(v).tolist() == [0] * NUM_FRAMES for v in inputs)


def test_frames_without_pts_fall_back_to_the_index_rule(root, monkeypatch):
    """A container whose frames carry no pts (raw streams, some AVIs) is windowed on the
    decoded count instead of failing."""
    frames_from = decoder._frames_from

    def without_pts(*args):
        for frame in frames_from(*args):
            frame.pts = None
            yield frame

    monkeypatch.setattr(decoder, "_frames_from", without_pts)
    spec = decoder.TemporalSpec(NUM_FRAMES, RATE, 30)
    bank = decoder.decode_clips(str(root / "plain.mp4"), [(t, VIEWS) for t in range(VIEWS)], spec)
    assert bank.decoded == 1 + 40  # the windowed pass stops at its first frame
    for t in range(VIEWS):
        numbers = [int(round(bank.frames[k].mean() / GRAY_STEP)) for k in bank.clips[t]]
        assert numbers == index_rule(root / "plain.mp4", 8 * t / VIEWS), t


def test_whole_video_fallback_warns_once_per_process(root, monkeypatch, caplog):
    monkeypatch.setattr(decoder, "_whole_video_reported", False)
    spec = decoder.TemporalSpec(NUM_FRAMES, RATE, 30)
    names = ["torn_70pct_faststart.mp4", "h264_bframes.avi", "clean_cut_12.mp4"]
    with caplog.at_level(logging.DEBUG, logger="vov3d.datasets.decoder"):
        for name in names:
            decoder.decode_clips(str(root / name), [(9, VIEWS)], spec)
    records = [r for r in caplog.records if "decoding the whole video" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert all(str(root / name) in r.getMessage() for r, name in zip(records, names))
    assert "metadata says" in records[0].getMessage()
    assert "not increasing" in records[1].getMessage()
    # A normal file takes the windowed pass: no message, no extra frames decoded.
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="vov3d.datasets.decoder"):
        bank = decoder.decode_clips(str(root / "plain.mp4"), [(t, VIEWS) for t in range(VIEWS)],
                                    spec)
    assert not caplog.records and bank.decoded <= 40


def test_whole_video_decoding_skips_a_torn_last_packet(root):
    """Something-Something `.webm` reading (decode_indexed) survives a partial download."""
    path = root / "torn_70pct_faststart.mp4"
    bank = decoder.decode_indexed(str(path), lambda count: [np.arange(count)])
    numbers = [int(round(bank.frames[k].mean() / GRAY_STEP)) for k in bank.clips[0]]
    assert numbers == [n for _, n in full_decode(path)] and numbers[:3] == [0, 1, 2]


@pytest.mark.parametrize("name, message", [
    ("empty.mp4", "empty"),
    ("text.mp4", "InvalidDataError"),
    ("truncated_moov_last.mp4", "failed to decode"),
    ("torn_first_packet.mp4", "has no frames"),
    ("missing.mp4", "not found"),
])
def test_unreadable_files_fail_naming_the_file(root, name, message):
    spec = decoder.TemporalSpec(NUM_FRAMES, RATE, 30)
    path = str(root / name)
    with pytest.raises(decoder.DecodeError, match=message) as error:
        decoder.decode_clips(path, [(0, 1)], spec)
    assert path in str(error.value)


def test_unreadable_files_fail_the_test_item_without_substitution(root, tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text(
            "".join(f"{root / n} 0\n" for n in ("text.mp4", "empty.mp4", "torn_first_packet.mp4")))
    dataset = build_dataset("kinetics", make_cfg(tmp_path, "DATA_LOADER.NUM_RETRIES", "2"), "test")
    for index in range(3):
        inputs, _, returned, meta = dataset[index]
        assert returned == index and meta["failed"] == 1 and not inputs[0].any()
    with pytest.raises(MissingSampleError, match="empty.mp4"):
        dataset._read_clips(1, [(0, 1)])
