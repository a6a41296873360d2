"""Frames in: a video file decoded once, front to back, through the project's PyAV decoder
(nothing but the current frame is held), or a webcam read with OpenCV. Every frame comes
with its index and its time in seconds (the file's timeline, or the wall clock for a
webcam), as RGB uint8 [H, W, 3].
"""
import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.datasets.decoder import DecodeError, VideoFrames


@dataclass
class Frame:
    index: int
    seconds: float
    image: np.ndarray  # RGB uint8 [H, W, 3]


class FileSource:
    """A video file: fps, size and (when the container says) the frame count are known
    before the first frame is decoded."""
    live = False

    def __init__(self, path: str, setting: str = "DEMO.INPUT_VIDEO"):
        try:
            self._video = VideoFrames(path)
        except DecodeError as e:
            raise ConfigError(f"{setting} '{path}' cannot be read as a video ({e}).") from None
        self.name = path
        self.fps, self.width, self.height = self._video.fps, self._video.width, self._video.height
        self.frame_count = self._video.frame_count

    def __iter__(self) -> Iterator[Frame]:
        for index, image in enumerate(self._video):
            yield Frame(index, index / self.fps, image)

    def close(self) -> None:
        self._video.close()


class WebcamSource:
    """Camera `index` through OpenCV, asked for `width` x `height` when both are set (the
    camera may pick the nearest size it has; frames are then resized for output)."""
    live = True
    frame_count = 0

    def __init__(self, index: int, width: int = 0, height: int = 0):
        import cv2

        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise ConfigError(f"DEMO.WEBCAM {index}: camera {index} cannot be opened (no such device, "
                              "or it is busy or not permitted); check the index, or use DEMO.WEBCAM -1 "
                              "and DEMO.INPUT_VIDEO for a file.")
        if width > 0 and height > 0:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self.name = f"camera {index}"
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 30.0
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        start, index = time.perf_counter(), 0
        while True:
            ok, image = self._cap.read()
            if not ok:
                return
            yield Frame(index, time.perf_counter() - start, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            index += 1

    def close(self) -> None:
        self._cap.release()


def open_source(cfg: CfgNode):
    """DEMO.WEBCAM when it is >= 0 (it takes precedence, as in PySlowFast), else DEMO.INPUT_VIDEO."""
    demo = cfg.DEMO
    if demo.WEBCAM >= 0:
        return WebcamSource(demo.WEBCAM, demo.DISPLAY_WIDTH, demo.DISPLAY_HEIGHT)
    if not demo.INPUT_VIDEO:
        raise ConfigError("the demo has no input: set DEMO.INPUT_VIDEO to a video file or DEMO.WEBCAM to a "
                          "camera index.")
    return FileSource(demo.INPUT_VIDEO)


class FrameSampler:
    """Which frames of a `fps` stream the model sees: every `sampling_rate`-th frame at
    `target_fps` (DATA.SAMPLING_RATE at DATA.TARGET_FPS, the rate it was trained at).
    Frame i is taken when it reaches the next multiple of sampling_rate * fps / target_fps,
    so a 60 fps camera gives a 30 fps-trained model the same time spacing."""

    def __init__(self, sampling_rate: int, fps: float, target_fps: float):
        self.step = sampling_rate * fps / target_fps
        self._next = 0.0

    def take(self, index: int) -> bool:
        if index + 1e-6 < self._next:
            return False
        self._next += self.step
        return True


_END = object()


def read_ahead(frames: Iterator[Frame], size: int) -> Iterator[Frame]:
    """`frames` decoded in a thread of its own, up to `size` ahead of the consumer
    (DEMO.THREAD_ENABLE). A decoding error is raised in the consumer, at its place."""
    box: "queue.Queue" = queue.Queue(maxsize=size)
    stop = threading.Event()
    failure: list = []

    def produce() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        box.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            failure.append(e)
        box.put(_END)

    thread = threading.Thread(target=produce, name="demo-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _END:
                break
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        _drain(box)
        thread.join(timeout=5)


def _drain(box: "queue.Queue") -> None:
    try:
        while True:
            box.get_nowait()
    except queue.Empty:
        pass
