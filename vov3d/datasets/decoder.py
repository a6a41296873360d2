"""Video decoding that converts only the frames a clip needs.

One call decodes any number of clips of one video in a single pass (all test views of a
video, or the one training clip), and returns a *frame bank*: the distinct frames the clips
use (uint8 [H, W, 3], RGB or BGR) plus, per clip, the keys of its frames in order. Frames
shared by several clips are decoded, converted and (later) resized once.

Windows follow PySlowFast's "selective decoding": the clip window is computed in source
frames, mapped to pts with `timebase = duration / frames`,
frames with `start_pts <= pts` are counted from the start of the window up to and including
the first frame after `end_pts`, and the clip takes positions trunc(linspace(0, size - 1, T))
of that window, clamped to its last frame (so, as in the reference, pts truncation can make
a window one frame short and repeat its last frame). Streams without a frame count or duration (many
WebM files) are decoded whole and the window is applied to the decoded frame count.

Files whose timestamps or metadata cannot be trusted for windowing are decoded whole too, and
clipped on the real frame count exactly as a full decode would be: frames without pts (or with
pts out of presentation order, as h264 with B-frames in AVI), windows that find no frames, and
streams that end more than a frame before their metadata says (truncated downloads). A frame
count that disagrees with duration x frame rate (an edit list that hides frames, as stream-copy
trimming writes) is replaced by the count the duration implies. Undecodable packets (the torn
last packet of a truncated file) are skipped, as FFmpeg's command line does.
"""
import contextlib
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vov3d.datasets import sampling

logger = logging.getLogger(__name__)

# Seek this many pts before the window, as the reference does.
_SEEK_MARGIN = 1024
BACKENDS = ("pyav", "torchvision")


class DecodeError(RuntimeError):
    """A video could not be decoded (the message names the file)."""


class _WholeVideo(Exception):
    """The windowed pass cannot be trusted for this file: decode it whole instead."""


@dataclass
class FrameBank:
    frames: Dict[Hashable, np.ndarray]
    clips: List[List[Hashable]]
    decoded: int = 0  # frames the decoder produced
    fps: float = 0.0
    video_frames: int = 0  # frames the video holds (its metadata's count, or all it decoded to)

    def clip(self, i: int) -> List[np.ndarray]:
        return [self.frames[key] for key in self.clips[i]]


@dataclass
class TemporalSpec:
    """How clips are cut from a video file (DATA.NUM_FRAMES, SAMPLING_RATE, TARGET_FPS,
    USE_OFFSET_SAMPLING)."""
    num_frames: int
    sampling_rate: int
    target_fps: float
    use_offset: bool = False


def usable_backend(name: str) -> str:
    """The backend to decode with, decided once at dataset construction.

    PySlowFast's X3D configs ask for torchvision, whose video reader is missing from many
    builds (and which does not import at all next to a CPU-only torch); rather than fail
    on every video, such runs decode with PyAV and say so once.
    """
    if name == "pyav":
        return name
    if name != "torchvision":
        raise ValueError(f"unknown DATA.DECODING_BACKEND {name!r}; expected one of {BACKENDS}.")
    try:
        import torchvision.io  # (torchvision may raise RuntimeError, not ImportError)
        torchvision.io.read_video  # noqa: B018 - older builds lack the video API
    except Exception as error:  # pragma: no cover - depends on the installation
        logger.warning("DATA.DECODING_BACKEND torchvision is not usable here (%s: %s); decoding "
                       "with PyAV instead. Set DATA.DECODING_BACKEND pyav to silence this.",
                       type(error).__name__, error)
        return "pyav"
    return name


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError(f"video file not found: {path}")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"video file is empty (0 bytes): {path}")


@dataclass
class _Window:
    start_pts: int
    end_pts: int
    positions: np.ndarray  # window positions of the clip's frames (before clamping)
    count: int = 0
    keys: List[Hashable] = field(default_factory=list)
    last: Optional[Tuple[int, "av.VideoFrame"]] = None
    closed: bool = False


# `frame.to_ndarray(format=...)` builds a new swscale context for every frame (about 0.4 ms
# even for tiny frames); one reformatter per process reuses its context: same pixels, ~7x
# cheaper. One thread: parallelism comes from the loader workers.
_REFORMATTER = VideoReformatter()


def _convert(frame: "av.VideoFrame", fmt: str) -> np.ndarray:
    return _REFORMATTER.reformat(frame, format=fmt, threads=1).to_ndarray()


def _decode_packet(container, context, packet) -> List["av.VideoFrame"]:
    try:
        return context.decode(packet)
    except av.InvalidDataError as error:
        # A torn packet (the cut end of a partial download) or a damaged one: FFmpeg's command
        # line skips it too. A file with nothing decodable still fails, with no frames.
        logger.debug("%s: skipping an undecodable packet at pts %s (%s)", container.name,
                     packet.pts, error)
        return []


def _frames_from(container, stream, first_pts: int) -> Iterator["av.VideoFrame"]:
    """Frames from the keyframe before `first_pts - margin` on. Frames that no other frame
    references and that lie before `first_pts` are never shown, so the decoder is told to
    skip them (FFmpeg's skip_frame NONREF, decided per packet, before it is decoded): the
    frames from `first_pts` on are bit-identical and the run-in costs about a third less."""
    container.seek(max(first_pts - _SEEK_MARGIN, 0), any_frame=False, backward=True, stream=stream)
    context = stream.codec_context
    skipping = None
    for packet in container.demux(stream):
        if packet.pts is not None:
            skip = packet.pts < first_pts
            if skip != skipping:
                context.skip_frame = "NONREF" if skip else "DEFAULT"
                skipping = skip
        yield from _decode_packet(container, context, packet)


def _decode_windows(container, stream, windows: List[_Window], fmt: str, bank: FrameBank,
                    end_pts: int, timebase: float) -> None:
    """One pass from the keyframe before the earliest window to the end of the last one.
    Raises _WholeVideo when the timestamps or the metadata `end_pts` (stream end) and
    `timebase` (pts per frame) do not describe the frames actually there."""
    previous = None
    exhausted = True
    for frame in _frames_from(container, stream, min(w.start_pts for w in windows)):
        bank.decoded += 1
        pts = frame.pts
        if pts is None:
            raise _WholeVideo("a decoded frame has no timestamp")
        if previous is not None and pts <= previous:
            # Windows count frames by pts: out-of-order pts (AVI's guessed ones) pick wrong frames.
            raise _WholeVideo(f"frame timestamps are not increasing (pts {pts} after {previous})")
        previous = pts
        for w in windows:
            if w.closed or pts < w.start_pts:
                continue
            position, w.count = w.count, w.count + 1
            w.last = (pts, frame)
            while len(w.keys) < len(w.positions) and w.positions[len(w.keys)] == position:
                if pts not in bank.frames:
                    bank.frames[pts] = _convert(frame, fmt)
                w.keys.append(pts)
            if pts > w.end_pts:  # the first frame past the window is still part of it
                w.closed = True
        if all(w.closed for w in windows):
            exhausted = False
            break
    for w in windows:
        if w.last is None:
            raise _WholeVideo(f"no frames from pts {w.start_pts} on (the stream ends at pts "
                              f"{previous}, its metadata says {end_pts})")
    # A short window is normal for a short video; with a stream that also stops more than a
    # frame before its metadata's end, the metadata counted frames that are not there.
    if exhausted and any(len(w.keys) < len(w.positions) for w in windows) \
            and previous is not None and end_pts - previous > 1.5 * timebase:
        raise _WholeVideo(f"the stream ends at pts {previous}, its metadata says {end_pts}")
    for w in windows:
        pts, frame = w.last
        if len(w.keys) < len(w.positions):  # short window: clamp to its last frame
            if pts not in bank.frames:
                bank.frames[pts] = _convert(frame, fmt)
            w.keys.extend([pts] * (len(w.positions) - len(w.keys)))
        bank.clips.append(w.keys)


def index_frames(frames: Sequence, choose: Callable[[int], List[np.ndarray]],
               convert: Callable, bank: FrameBank) -> None:
    """Pick clips by index from all frames of a video (decoded frames or image paths),
    converting (or reading) only the picked ones, each once."""
    if len(frames) == 0:
        raise DecodeError("the video has no frames")
    bank.video_frames = len(frames)
    for indices in choose(len(frames)):
        keys = [int(i) for i in indices]
        for key in keys:
            if key not in bank.frames:
                bank.frames[key] = convert(frames[key])
        bank.clips.append(keys)


def _open(path: str, threads: int):
    _check_file(path)
    container = av.open(path)
    if not container.streams.video:
        container.close()
        raise DecodeError(f"no video stream in {path}")
    stream = container.streams.video[0]
    # FFmpeg's default (0) starts a thread per core in every decoder, whatever the process's
    # share of the cores; frame and slice threads only when the budget gives more than one.
    stream.thread_count = threads
    if threads > 1:
        stream.thread_type = "AUTO"
    return container, stream


def _decode_all(container, stream) -> List["av.VideoFrame"]:
    # Frames stay in the decoder's pixel format until a clip picks them.
    context = stream.codec_context
    return [frame for packet in container.demux(stream)
            for frame in _decode_packet(container, context, packet)]


def _frame_count(stream, frames: int, duration: int) -> int:
    """The stream's frame count, or the one its duration and frame rate imply when the two
    disagree by more than a frame: an MP4 edit list that hides leading frames (stream-copy
    trimming) leaves them in `frames` but not in `duration`, and `duration / frames` would
    then be shorter than the real frame spacing."""
    rate = stream.average_rate
    if not rate or not stream.time_base:
        return frames
    implied = float(duration * stream.time_base * rate)
    if abs(implied - frames) <= 1:
        return frames
    logger.debug("%s: %d frames in the metadata, but %s pts at %s frames/s hold %.1f; using %d",
                 stream.container.name, frames, duration, rate, implied, round(implied))
    return max(int(round(implied)), 1)


_whole_video_reported = False


def _report_whole_video(path: str, reason: Exception) -> None:
    """Warn about the first file of a process that is decoded whole; the rest at DEBUG."""
    global _whole_video_reported
    level = logging.DEBUG if _whole_video_reported else logging.WARNING
    more = "" if _whole_video_reported else " (further such files are logged at DEBUG level)"
    _whole_video_reported = True
    logger.log(level, "%s: %s; decoding the whole video and sampling on its real frame count%s",
               path, reason, more)


def _torchvision_frames(path: str, fmt: str) -> Tuple[List[np.ndarray], float]:  # pragma: no cover
    import torchvision.io

    _check_file(path)
    video, _, info = torchvision.io.read_video(path, pts_unit="sec", output_format="THWC")
    frames = list(video.numpy())
    if fmt == "bgr24":
        frames = [f[..., ::-1].copy() for f in frames]
    return frames, float(info.get("video_fps", 0.0))


def decode_clips(path: str, clips: Sequence[Tuple[int, int]], spec: TemporalSpec,
                 fmt: str = "rgb24", threads: int = 1, rng=None,
                 backend: str = "pyav") -> FrameBank:
    """Decode clips `(clip_idx, num_clips)` of a video file in one pass (clip_idx -1 =
    random window drawn with `rng`, a `random.Random`-like object) with `threads` FFmpeg
    threads."""
    bank = FrameBank({}, [])

    def choose(available: int) -> List[np.ndarray]:
        size = sampling.clip_size(spec.num_frames, spec.sampling_rate, bank.fps, spec.target_fps)
        out = []
        for clip_idx, num_clips in clips:
            start, end = sampling.window_start_end(available, size, clip_idx, num_clips,
                                                   spec.use_offset, rng)
            out.append(sampling.linspace_indices(start, end, spec.num_frames, available))
        return out

    with _naming_errors(path):
        if backend == "torchvision":  # pragma: no cover - not importable on the CPU build
            frames, bank.fps = _torchvision_frames(path, fmt)
            if bank.fps <= 0:
                raise DecodeError("the video stream has no frame rate")
            bank.decoded = len(frames)
            index_frames(frames, choose, lambda f: f, bank)
            return bank
        container, stream = _open(path, threads)
        with container:
            bank.fps = float(stream.average_rate or stream.guessed_rate or 0)
            if bank.fps <= 0:
                raise DecodeError("the video stream has no frame rate")
            frames, duration = stream.frames, stream.duration
            if not duration or frames <= 0:
                # Unknown length (e.g. WebM): decode everything, window on the decoded count.
                _index_whole(container, stream, choose, fmt, bank)
                return bank
            # A whole-video retry must draw the same random number, so that a training clip
            # is the one a full decode would give with the same seed.
            draws = rng if rng is not None else random
            state = draws.getstate()
            try:
                _decode_clip_windows(container, stream, clips, spec, fmt, bank, draws)
                return bank
            except _WholeVideo as reason:
                _report_whole_video(path, reason)
        draws.setstate(state)
        bank.frames.clear()
        bank.clips.clear()
        # A fresh container: no seek position, skip_frame setting or buffered frame carries over.
        container, stream = _open(path, threads)
        with container:
            _index_whole(container, stream, choose, fmt, bank)
        return bank


def _index_whole(container, stream, choose: Callable[[int], List[np.ndarray]], fmt: str,
                 bank: FrameBank) -> None:
    decoded = _decode_all(container, stream)
    bank.decoded += len(decoded)
    index_frames(decoded, choose, lambda f: _convert(f, fmt), bank)


def _decode_clip_windows(container, stream, clips: Sequence[Tuple[int, int]], spec: TemporalSpec,
                         fmt: str, bank: FrameBank, rng) -> None:
    """The windowed pass for a stream with a known frame count and duration."""
    duration = stream.duration
    frames = _frame_count(stream, stream.frames, duration)
    bank.video_frames = frames
    size = sampling.clip_size(spec.num_frames, spec.sampling_rate, bank.fps, spec.target_fps)
    timebase = duration / frames
    positions = np.linspace(0, size - 1, spec.num_frames).astype(np.int64)
    # Timestamps count from the stream's start time, which trimmed clips often
    # leave non-zero (the references assumed 0 and then returned one frame).
    origin = stream.start_time or 0
    windows = []
    for clip_idx, num_clips in clips:
        start, end = sampling.window_start_end(frames, size, clip_idx, num_clips,
                                               spec.use_offset, rng)
        windows.append(_Window(origin + int(start * timebase), origin + int(end * timebase),
                               positions))
    _decode_windows(container, stream, windows, fmt, bank, origin + duration, timebase)


def decode_indexed(path: str, choose: Callable[[int], List[np.ndarray]], fmt: str = "rgb24",
                   threads: int = 1) -> FrameBank:
    """Decode a whole video file and cut clips by frame index: `choose(num_frames)` returns
    one index array per clip (Something-Something segment sampling on `.webm` files)."""
    bank = FrameBank({}, [])
    with _naming_errors(path):
        container, stream = _open(path, threads)
        with container:
            bank.fps = float(stream.average_rate or 0)
            _index_whole(container, stream, choose, fmt, bank)
        return bank


@contextlib.contextmanager
def _naming_errors(path: str) -> Iterator[None]:
    """Turn any failure inside into one DecodeError that names the file."""
    try:
        yield
    except DecodeError as error:
        if path in str(error):
            raise
        raise DecodeError(f"{error}: {path}") from None
    except Exception as error:
        raise DecodeError(f"failed to decode {path}: {type(error).__name__}: {error}") from error


class VideoFrames:
    """A video file read once, front to back, one frame at a time (uint8 [H, W, 3] in `fmt`):
    for streams and long files, where no window is known in advance and nothing but the
    current frame is held. Opening checks the file and reads its metadata (fps, size,
    frame count: 0 when the container does not say) without decoding; any failure is a
    DecodeError naming the file. Undecodable packets are skipped as in the clip decoder.
    FFmpeg decodes with `threads` threads."""

    def __init__(self, path: str, fmt: str = "rgb24", threads: int = 1):
        self.path, self._fmt = path, fmt
        with _naming_errors(path):
            self._container, stream = _open(path, threads)
            self._stream = stream
            self.fps = float(stream.average_rate or stream.guessed_rate or 0)
            if self.fps <= 0:
                self.close()
                raise DecodeError("the video stream has no frame rate")
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
            self.frame_count = max(int(stream.frames or 0), 0)

    def __iter__(self) -> Iterator[np.ndarray]:
        container, context = self._container, self._stream.codec_context
        with _naming_errors(self.path):
            for packet in container.demux(self._stream):
                for frame in _decode_packet(container, context, packet):
                    yield _convert(frame, self._fmt)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
