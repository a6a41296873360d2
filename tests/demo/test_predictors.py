"""When the demo's model runs and on which frames: clip windows, frame sampling, the overlay."""
import numpy as np
import pytest
import torch

from tests.models.model_helpers import project_cfg
from vov3d.config import ConfigError
from vov3d.demo.predictors import ClipPredictor, Prediction
from vov3d.demo.run import Overlay
from vov3d.demo.sources import Frame, FrameSampler


class Recorder(torch.nn.Module):
    """A clip model that returns nothing useful but remembers what it saw."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, clip):
        self.seen.append(clip)
        return torch.zeros(clip.shape[0], 3)


def cfg_for(frames=4, rate=2, target_fps=30, *overrides):
    # MEAN 0 and STD 1/255 make the model's input the frames' raw values.
    return project_cfg("configs/Kinetics/x3d/X3D_S.yaml", "DATA.NUM_FRAMES", frames, "DATA.SAMPLING_RATE", rate,
                       "DATA.TARGET_FPS", target_fps, "DATA.TEST_CROP_SIZE", 8, "DATA.MEAN", "[0.0, 0.0, 0.0]",
                       "DATA.STD", f"[{1 / 255}, {1 / 255}, {1 / 255}]", *overrides)


def frame(i):
    return Frame(i, i / 30, np.full((8, 8, 3), i % 256, np.uint8))


def run(predictor, count):
    jobs = [predictor.add(frame(i)) for i in range(count)]
    return [(i, job) for i, job in enumerate(jobs) if job is not None]


@pytest.mark.parametrize("fps,buffer,skip,span,starts", [
    (30, 0, 0, 8, [0, 8, 16, 24, 32]),
    (30, 3, 0, 8, [0, 5, 10, 15, 20, 25, 30]),
    (30, 3, 1, 8, [0, 10, 20, 30]),
    (60, 0, 0, 16, [0, 16]),  # twice the frame rate: twice the frames for the same time
    (15, 0, 0, 4, [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]),
])
def test_windows_and_the_frames_each_clip_takes(fps, buffer, skip, span, starts):
    model = Recorder()
    predictor = ClipPredictor(model, cfg_for(4, 2, 30, "DEMO.BUFFER_SIZE", buffer, "DEMO.NUM_CLIPS_SKIP", skip),
                              fps)
    assert predictor.span == span
    jobs = run(predictor, 40)
    assert [job.window[0] for _, job in jobs] == starts
    assert [i for i, _ in jobs] == [s + span - 1 for s in starts] == [job.window[1] for _, job in jobs]
    positions = np.linspace(0, span - 1, 4).astype(int)
    for _, job in jobs:
        predictor.run(job)
        # The clip is the window's frames at linspace positions, in order.
        assert [int(c[0, 0, 0]) for c in job.inputs] == list(job.window[0] + positions)
    clips = torch.cat(model.seen)
    assert clips.shape == (len(starts), 3, 4, 8, 8)
    assert clips[:, 0, :, 0, 0].tolist() == [list(map(float, s + positions)) for s in starts]
    # Only frames a coming window uses are kept.
    assert len(predictor._crops) <= 4


def test_a_buffer_as_long_as_the_window_is_refused():
    with pytest.raises(ConfigError, match="DEMO.BUFFER_SIZE is 7, but one clip spans 4 frames of this 15 fps video"):
        ClipPredictor(Recorder(), cfg_for(4, 2, 30, "DEMO.BUFFER_SIZE", 7), 15)  # span 4 at 15 fps


def test_frame_sampler_keeps_the_trained_time_spacing():
    for fps, rate, target, taken in ((30, 1, 30, list(range(12))), (30, 3, 30, [0, 3, 6, 9]),
                                     (60, 2, 30, [0, 4, 8]), (25, 5, 30, [0, 5, 9])):
        sampler = FrameSampler(rate, fps, target)
        assert [i for i in range(12) if sampler.take(i)] == taken


def test_overlay_shows_the_status_then_labels_until_the_next_or_for_clip_vis_size():
    prediction = Prediction(7, 0.23, (0, 7), torch.tensor([0.1, 0.7, 0.2]))
    names = ["a", "b", "c"]
    overlay = Overlay(names, 2, -1)
    assert overlay.lines_at(3, "waiting") == ["waiting"]
    assert overlay.show(prediction, 7) == [(1, "b", pytest.approx(0.7)), (2, "c", pytest.approx(0.2))]
    assert overlay.lines_at(7, "x") == overlay.lines_at(500, "x") == ["[0.70] b", "[0.20] c"]
    brief = Overlay(names, 1, 2)  # 2 x 2 + 1 frames from the one it arrived at
    brief.show(prediction, 10)
    assert [bool(brief.lines_at(i, "x")) for i in range(10, 16)] == [True] * 5 + [False]
