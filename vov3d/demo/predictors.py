"""When and on what the model runs during the demo.

Clip models (VoV3D, X3D, CSN, SEVNet): a sliding window spanning DATA.NUM_FRAMES x
DATA.SAMPLING_RATE frames at DATA.TARGET_FPS (as many source frames as that time covers at
the video's rate), of which NUM_FRAMES evenly spaced ones form the clip, as in training.
Consecutive windows overlap by DEMO.BUFFER_SIZE frames; one window in DEMO.NUM_CLIPS_SKIP + 1
is predicted. A prediction is made when its window's last frame arrives.

CoX3D: every sampled frame (every SAMPLING_RATE-th at TARGET_FPS) goes through
`forward_step`; after the model's warm-up each one gives a prediction.

`add(frame)` stores what a later prediction needs and returns a job when one is due;
`run(job)` runs the model (possibly in another thread: jobs carry everything they need).
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.datasets import sampling
from vov3d.demo.inputs import centre_crop, clip_input, frame_input
from vov3d.demo.sources import Frame, FrameSampler
from vov3d.engine.input_step import InputStep


@dataclass
class Prediction:
    frame: int  # the frame it was made at (the window's last frame, or the stepped frame)
    seconds: float
    window: Optional[Tuple[int, int]]  # first and last frame of a clip model's window
    scores: torch.Tensor  # (NUM_CLASSES,) on the CPU


@dataclass
class Job:
    frame: Frame
    window: Optional[Tuple[int, int]]
    inputs: List[np.ndarray]  # the uint8 crops the model sees


class ClipPredictor:
    """A clip model on a sliding window (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, cfg: CfgNode, fps: float):
        data, demo = cfg.DATA, cfg.DEMO
        self.model, self.cfg = model, cfg
        self.device = next(model.parameters()).device
        self.input_step = InputStep(cfg, self.device)
        size = sampling.clip_size(data.NUM_FRAMES, data.SAMPLING_RATE, fps, data.TARGET_FPS)
        self.span = max(int(round(size)), 1)
        if demo.BUFFER_SIZE >= self.span:
            raise ConfigError(f"DEMO.BUFFER_SIZE is {demo.BUFFER_SIZE}, but one clip spans {self.span} frames "
                              f"of this {fps:g} fps video (DATA.NUM_FRAMES x DATA.SAMPLING_RATE at "
                              f"DATA.TARGET_FPS {data.TARGET_FPS:g}); the overlap of two windows must be "
                              "smaller.")
        self.stride = self.span - demo.BUFFER_SIZE
        self.every = demo.NUM_CLIPS_SKIP + 1 if demo.NUM_CLIPS_SKIP >= 0 else 1
        # Window positions of the clip's frames, as a training clip takes them from its window.
        self._order = sampling.linspace_indices(0, self.span - 1, data.NUM_FRAMES, self.span).tolist()
        self.positions = set(self._order)
        self._crops: Dict[int, np.ndarray] = {}
        self.predicted_windows = 0

    def status(self, frames_seen: int) -> str:
        return f"waiting for the first clip ({min(frames_seen, self.span)}/{self.span} frames)"

    def shortfall(self, frames_seen: int) -> str:
        return (f"{frames_seen} frames, fewer than the {self.span} one clip spans (DATA.NUM_FRAMES x "
                "DATA.SAMPLING_RATE at DATA.TARGET_FPS)")

    def _windows_with(self, index: int) -> range:
        """The due windows (0-based) whose span holds frame `index`."""
        first = max(0, math.ceil((index - self.span + 1) / self.stride))
        return range(first, index // self.stride + 1)

    def add(self, frame: Frame) -> Optional[Job]:
        i = frame.index
        windows = [k for k in self._windows_with(i) if k % self.every == 0]
        if any(i - k * self.stride in self.positions for k in windows):
            self._crops[i] = centre_crop(frame.image, self.cfg.DATA.TEST_CROP_SIZE)
        start = i - self.span + 1
        job = None
        if start >= 0 and start % self.stride == 0 and (start // self.stride) % self.every == 0:
            job = Job(frame, (start, i), [self._crops[start + p] for p in self._order])
        self._forget_before_next_window(i)
        return job

    def _forget_before_next_window(self, index: int) -> None:
        """Drop the crops of frames before the first due window that ends after `index`."""
        k = max(0, math.floor((index - self.span + 1) / self.stride) + 1)
        first = -(-k // self.every) * self.every * self.stride
        for j in [j for j in self._crops if j < first]:
            del self._crops[j]

    @torch.no_grad()
    def run(self, job: Job) -> Optional[Prediction]:
        scores = self.model(clip_input(job.inputs, self.input_step))
        self.predicted_windows += 1
        return Prediction(job.frame.index, job.frame.seconds, job.window, scores[0].float().cpu())


class StreamPredictor:
    """CoX3D's per-frame step on every sampled frame (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, cfg: CfgNode, fps: float):
        self.model, self.cfg = model, cfg
        self.device = next(model.parameters()).device
        self.input_step = InputStep(cfg, self.device)
        self.sampler = FrameSampler(cfg.DATA.SAMPLING_RATE, fps, cfg.DATA.TARGET_FPS)
        self.fed = 0
        model.reset()

    def status(self, frames_seen: int) -> str:
        return f"warming up ({min(self.fed, self.model.delay)}/{self.model.delay})"

    def shortfall(self, frames_seen: int) -> str:
        return (f"{self.fed} sampled frames (every DATA.SAMPLING_RATE-th at DATA.TARGET_FPS), fewer than "
                f"the {self.model.delay} of CoX3D's warm-up")

    def add(self, frame: Frame) -> Optional[Job]:
        if not self.sampler.take(frame.index):
            return None
        return Job(frame, None, [centre_crop(frame.image, self.cfg.DATA.TEST_CROP_SIZE)])

    @torch.no_grad()
    def run(self, job: Job) -> Optional[Prediction]:
        scores = self.model.forward_step(frame_input(job.inputs[0], self.input_step))
        self.fed += 1
        if scores is None:
            return None
        return Prediction(job.frame.index, job.frame.seconds, None, scores[0].float().cpu())


def make_predictor(model: torch.nn.Module, cfg: CfgNode, fps: float):
    """CoX3D (MODEL.MODEL_NAME CoX3D) streams frame by frame; every other model runs on clips."""
    from vov3d.models.cox3d import CoX3D

    if isinstance(model, CoX3D):
        if cfg.DEMO.NUM_CLIPS_SKIP != 0:
            raise ConfigError(f"DEMO.NUM_CLIPS_SKIP is {cfg.DEMO.NUM_CLIPS_SKIP}; CoX3D steps through every "
                              "sampled frame (its state needs them all), so it must be 0.")
        return StreamPredictor(model, cfg, fps)
    return ClipPredictor(model, cfg, fps)
