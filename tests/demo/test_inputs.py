"""The demo's (and stream_net's) model input: test-view geometry, then the engine's input
step, as training and testing prepare clips."""
import cv2
import numpy as np
import torch

from vov3d.config import get_cfg, merge_overrides
from vov3d.demo.inputs import centre_crop, clip_input, frame_input
from vov3d.engine.input_step import InputStep

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.225, 0.25]


def input_step():
    cfg = get_cfg()
    merge_overrides(cfg, ["DATA.MEAN", str(MEAN), "DATA.STD", str(STD), "DATA.REVERSE_INPUT_CHANNEL", "True"])
    return InputStep(cfg, torch.device("cpu"))


def expected_planes(frame):
    """Short side 40 -> 20 (60 -> 30 columns), the centre 20 columns, normalised per channel
    in the frame's order, then the channels reversed: [3, 20, 20]."""
    crop = cv2.resize(frame, (30, 20), interpolation=cv2.INTER_LINEAR)[:, 5:25].astype(np.float64) / 255
    return ((crop - MEAN) / STD)[..., ::-1].transpose(2, 0, 1)


def test_clip_and_frame_inputs_are_test_views_through_the_input_step():
    rng = np.random.RandomState(0)
    frames = [rng.randint(0, 256, (40, 60, 3)).astype(np.uint8) for _ in range(3)]
    crops = [centre_crop(f, 20) for f in frames]
    clip = clip_input(crops, input_step())
    assert clip.shape == (1, 3, 3, 20, 20) and clip.dtype == torch.float32
    for t, frame in enumerate(frames):
        assert np.allclose(clip[0, :, t].numpy(), expected_planes(frame), atol=1e-5)
    one = frame_input(crops[1], input_step())
    assert one.shape == (1, 3, 20, 20) and torch.equal(one[0], clip[0, :, 1])
