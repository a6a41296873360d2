"""Frames out: a video file (PyAV) or a window (OpenCV), and the predictions file.

The video keeps every input frame at the input's size and frame rate unless
DEMO.DISPLAY_WIDTH/HEIGHT or DEMO.OUTPUT_FPS set them; the codec follows the file's
extension. The predictions file holds one JSON object a line per prediction: the frame it
was made at, its time in seconds, the window it saw (clip models) and the top-k classes.
"""
import fractions
import json
import os
import queue
import threading
from typing import Optional, Sequence, Tuple

import av
import cv2
import numpy as np

from vov3d.config.errors import ConfigError

# Extension -> (codec, pixel format); h264 needs even sizes in 4:2:0, so odd ones get 4:4:4.
VIDEO_CODECS = {".mp4": "h264", ".mkv": "h264", ".mov": "h264", ".avi": "mjpeg", ".webm": "libvpx-vp9"}
WINDOW_NAME = "vov3d demo"


def predictions_path(output_file: str, output_dir: str) -> str:
    """Beside the output video (its name with .jsonl), or OUTPUT_DIR/demo_predictions.jsonl
    when the frames go to a window."""
    if output_file:
        return os.path.splitext(output_file)[0] + ".jsonl"
    return os.path.join(output_dir, "demo_predictions.jsonl")


def check_video_extension(path: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_CODECS:
        raise ConfigError(f"DEMO.OUTPUT_FILE '{path}': cannot write a {ext or 'extension-less'} video; "
                          f"expected one of {', '.join(sorted(VIDEO_CODECS))}.")


def check_window_support() -> None:
    """Showing frames needs an OpenCV built with a GUI (opencv-python, not -headless)."""
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise ConfigError("DEMO.OUTPUT_FILE is empty, which shows the frames in a window, but this OpenCV "
                          "has no window support (opencv-python-headless); set DEMO.OUTPUT_FILE to write "
                          "a video file instead.") from None


class VideoFileSink:
    stopped = False  # only a window can be closed by the user

    def __init__(self, path: str, fps: float, size: Tuple[int, int]):
        self.path, self.size = path, size
        codec = VIDEO_CODECS[os.path.splitext(path)[1].lower()]
        width, height = size
        self._container = av.open(path, "w")
        self._stream = self._container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(100000))
        self._stream.width, self._stream.height = width, height
        if codec == "mjpeg":
            self._stream.pix_fmt = "yuvj420p"
        else:
            self._stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        if codec == "libvpx-vp9":
            self._stream.options = {"deadline": "realtime"}  # the default takes seconds per frame
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()


class WindowSink:
    """The frames in an OpenCV window; a file is paced at its frame rate, `q` stops."""

    def __init__(self, fps: float, live: bool):
        self.delay_ms = 1 if live else max(1, int(round(1000 / fps)))
        self.frames = 0
        self.stopped = False

    def write(self, image: np.ndarray) -> None:
        cv2.imshow(WINDOW_NAME, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1
        if cv2.waitKey(self.delay_ms) & 0xFF == ord("q"):
            self.stopped = True

    def close(self) -> None:
        cv2.destroyWindow(WINDOW_NAME)


class PredictionsFile:
    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "w", encoding="utf-8")
        self.rows = 0

    def write(self, frame: int, seconds: float, top: Sequence[Tuple[int, str, float]],
              window: Optional[Tuple[int, int]] = None) -> None:
        row = {"frame": frame, "time": round(seconds, 4)}
        if window is not None:
            row["window"] = list(window)
        row["topk"] = [{"id": i, "name": name, "score": round(score, 6)} for i, name, score in top]
        self._file.write(json.dumps(row) + "\n")
        self.rows += 1

    def close(self) -> None:
        self._file.close()


class WriteBehind:
    """A sink fed from a thread of its own (DEMO.THREAD_ENABLE): `write` queues the frame;
    an encoding error is raised at the next `write` or at `close`."""

    def __init__(self, sink, size: int):
        self.sink = sink
        self._queue: "queue.Queue" = queue.Queue(maxsize=size)
        self._failure: list = []
        self._thread = threading.Thread(target=self._drain, name="demo-writer", daemon=True)
        self._thread.start()

    @property
    def frames(self) -> int:
        return self.sink.frames

    @property
    def stopped(self) -> bool:
        return self.sink.stopped

    def _drain(self) -> None:
        while True:
            image = self._queue.get()
            if image is None:
                return
            if self._failure:
                continue
            try:
                self.sink.write(image)
            except BaseException as e:  # noqa: BLE001 - handed to the writing thread
                self._failure.append(e)

    def write(self, image: np.ndarray) -> None:
        if self._failure:
            raise self._failure[0]
        self._queue.put(image)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.sink.close()
        if self._failure:
            raise self._failure[0]
