"""The demo from a config: every check that needs no model and no decoding first, then the
model and its weights, then one pass over the input, frame by frame."""
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence

import cv2
import numpy as np
from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.demo.drawing import draw_lines, top_k
from vov3d.demo.outputs import (PredictionsFile, VideoFileSink, WindowSink, WriteBehind, check_video_extension,
                                check_window_support, predictions_path)
from vov3d.demo.predictors import Prediction, make_predictor
from vov3d.demo.sources import Frame, open_source, read_ahead
from vov3d.engine.inference import InferenceModel, load_inference_model
from vov3d.visualization.video import prediction_lines
from vov3d.utils.files import unwritable_reason
from vov3d.utils.threads import apply_budget, follow_process_threads, governed, tool_budget

logger = logging.getLogger(__name__)

# Frames the reader may decode ahead, and the writer may hold, with DEMO.THREAD_ENABLE.
QUEUE_FRAMES = 32


@dataclass
class DemoResult:
    frames: int  # frames read (and written)
    predictions: int
    output: Optional[str]  # the video written (None: shown in a window)
    predictions_file: str
    seconds: float


def _check_writable_place(path: str, setting: str, what: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{setting}: {what} '{path}' is in a folder that does not exist ({folder}); create "
                          f"it or choose another {setting}.")
    reason = unwritable_reason(folder)
    if reason is not None:
        raise ConfigError(f"{setting}: {what} '{path}' cannot be written ({reason}).")
    if os.path.isdir(path):
        raise ConfigError(f"{setting} '{path}' is a directory; expected a file name.")


def check_demo(cfg: CfgNode) -> None:
    """Input and outputs: refused here, before the model is built or a frame decoded."""
    demo = cfg.DEMO
    if demo.WEBCAM < 0:
        path = demo.INPUT_VIDEO
        if not path:
            raise ConfigError("the demo has no input: set DEMO.INPUT_VIDEO to a video file or DEMO.WEBCAM to a "
                              "camera index.")
        if not os.path.isfile(path):
            what = "is a directory" if os.path.isdir(path) else "does not exist"
            raise ConfigError(f"DEMO.INPUT_VIDEO '{path}' {what}; expected a video file.")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"DEMO.INPUT_VIDEO '{path}' cannot be read (permission denied).")
    if demo.LABEL_FILE_PATH and not os.path.isfile(demo.LABEL_FILE_PATH):
        raise ConfigError(f"DEMO.LABEL_FILE_PATH '{demo.LABEL_FILE_PATH}' does not exist; expected a JSON file "
                          'of class names ({"name": id, ...} or a list in label order).')
    if demo.OUTPUT_FILE:
        check_video_extension(demo.OUTPUT_FILE)
        _check_writable_place(demo.OUTPUT_FILE, "DEMO.OUTPUT_FILE", "the labelled video")
        if demo.WEBCAM < 0 and os.path.abspath(demo.OUTPUT_FILE) == os.path.abspath(demo.INPUT_VIDEO):
            raise ConfigError(f"DEMO.OUTPUT_FILE '{demo.OUTPUT_FILE}' is DEMO.INPUT_VIDEO: the demo would "
                              "overwrite its input; choose another file name.")
    else:
        check_window_support()
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setting = "DEMO.OUTPUT_FILE" if demo.OUTPUT_FILE else "OUTPUT_DIR"
    _check_writable_place(predictions_path(demo.OUTPUT_FILE, cfg.OUTPUT_DIR), setting, "the predictions file")


class Overlay:
    """What is drawn on each frame: the newest prediction's top-k classes from the frame it
    arrived at (until the next one, or for 2 x DEMO.CLIP_VIS_SIZE + 1 frames when that is
    >= 0), or before the first prediction the predictor's status."""

    def __init__(self, names: Sequence[str], k: int, clip_vis_size: int):
        self.names, self.k, self.clip_vis_size = names, k, clip_vis_size
        self.lines: Optional[List[str]] = None
        self.since = 0

    def show(self, prediction: Prediction, frame_index: int) -> list:
        self.lines = prediction_lines(prediction.scores, self.names, self.k)
        self.since = frame_index
        return top_k(prediction.scores, self.names, self.k)

    def lines_at(self, frame_index: int, status: str) -> List[str]:
        if self.lines is None:
            return [status]
        if 0 <= self.clip_vis_size and frame_index - self.since > 2 * self.clip_vis_size:
            return []
        return self.lines


class Runner:
    """Runs the predictor's jobs in the loop's thread, or with DEMO.NUM_CLIPS_SKIP -1 in a
    thread of its own: a job that arrives while the model is busy is dropped, so frames
    keep flowing at the input's pace and each prediction uses the newest window."""

    def __init__(self, predictor, background: bool):
        self.predictor = predictor
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="demo-model") if background else None
        self._pending: Optional[Future] = None

    def feed(self, frame: Frame) -> List[Prediction]:
        job = self.predictor.add(frame)
        if self._pool is None:
            prediction = self.predictor.run(job) if job is not None else None
            return [prediction] if prediction is not None else []
        done = []
        if self._pending is not None and self._pending.done():
            prediction, self._pending = self._pending.result(), None
            done = [prediction] if prediction is not None else []
        if job is not None and self._pending is None:
            self._pending = self._pool.submit(self._run_in_pool, job)
        return done

    def _run_in_pool(self, job) -> Optional[Prediction]:
        follow_process_threads()  # the governor sets the loop thread's count
        return self.predictor.run(job)

    def finish(self) -> List[Prediction]:
        if self._pool is None:
            return []
        prediction = self._pending.result() if self._pending is not None else None
        self._pool.shutdown()
        return [prediction] if prediction is not None else []


def _fit(image: np.ndarray, size) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)


def run_demo(cfg: CfgNode) -> DemoResult:
    """Check, load the model, open the input, and label every frame of it."""
    check_demo(cfg)
    try:  # one process without loader workers: its share of the cores, following the load
        budget = tool_budget()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    apply_budget(budget)
    inference = load_inference_model(cfg, cfg.DEMO.LABEL_FILE_PATH, "DEMO.LABEL_FILE_PATH")
    logger.info("Class names: %s.", inference.names_origin)
    if inference.names_warning:
        logger.warning(inference.names_warning)
    source = open_source(cfg)
    try:
        return _label_frames(cfg, inference, source)
    finally:
        source.close()


def _open_sink(cfg: CfgNode, source):
    demo = cfg.DEMO
    fps = demo.OUTPUT_FPS if demo.OUTPUT_FPS > 0 else source.fps
    size = ((demo.DISPLAY_WIDTH, demo.DISPLAY_HEIGHT) if demo.DISPLAY_WIDTH > 0 and demo.DISPLAY_HEIGHT > 0
            else (source.width, source.height))
    sink = VideoFileSink(demo.OUTPUT_FILE, fps, size) if demo.OUTPUT_FILE else WindowSink(fps, source.live)
    return (WriteBehind(sink, QUEUE_FRAMES) if demo.THREAD_ENABLE else sink), size


def _label_frames(cfg: CfgNode, inference: InferenceModel, source) -> DemoResult:
    from tqdm import tqdm

    demo = cfg.DEMO
    predictor = make_predictor(inference.model, cfg, source.fps)
    overlay = Overlay(inference.class_names, cfg.TENSORBOARD.MODEL_VIS.TOPK_PREDS, demo.CLIP_VIS_SIZE)
    runner = Runner(predictor, background=demo.NUM_CLIPS_SKIP == -1)
    sink, size = _open_sink(cfg, source)
    rows = PredictionsFile(predictions_path(demo.OUTPUT_FILE, cfg.OUTPUT_DIR))
    frames = read_ahead(iter(source), QUEUE_FRAMES) if demo.THREAD_ENABLE else iter(source)
    start, count = time.perf_counter(), 0
    progress = tqdm(total=source.frame_count or None, unit="frame", desc=os.path.basename(source.name),
                    mininterval=1.0, dynamic_ncols=True)

    def record(prediction: Prediction, shown_at: int) -> None:
        rows.write(prediction.frame, prediction.seconds, overlay.show(prediction, shown_at), prediction.window)

    try:
        for frame in governed(frames):
            for prediction in runner.feed(frame):
                record(prediction, frame.index)
            lines = overlay.lines_at(frame.index, predictor.status(frame.index + 1))
            sink.write(_fit(draw_lines(frame.image.copy(), lines), size))
            count += 1
            progress.update(1)
            if sink.stopped:
                break
        for prediction in runner.finish():
            record(prediction, count)
    finally:
        progress.close()
        rows.close()
        sink.close()
    seconds = time.perf_counter() - start
    if rows.rows == 0:
        logger.warning("%s has %s: no prediction; the output shows its frames unlabelled.", source.name,
                       predictor.shortfall(count))
    output = demo.OUTPUT_FILE or None
    logger.info("Demo: %d frames in %.1f s (%.1f frames/s), %d predictions; video: %s; predictions: %s.",
                count, seconds, count / max(seconds, 1e-9), rows.rows, output or "shown in a window", rows.path)
    return DemoResult(count, rows.rows, output, rows.path, seconds)
