"""Frames -> the model's input, as the clip datasets prepare a test view: the short side
resized to DATA.TEST_CROP_SIZE, a centre crop of that size (uint8, kept per frame so a
frame shared by several windows is resized once), then the engine's input step (DATA.MEAN/
STD, DATA.REVERSE_INPUT_CHANNEL, on the model's device) on the frames a prediction uses."""
from typing import Sequence

import numpy as np
import torch

from vov3d.datasets import sampling, transform
from vov3d.engine.input_step import InputStep


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [size, size, 3] uint8: short side to `size`, centre crop."""
    image = transform.resize_short_side(image, size)
    y, x = sampling.uniform_crop_offsets(image.shape[0], image.shape[1], size, 1)
    return transform.crop(image, y, x, size)


def clip_input(crops: Sequence[np.ndarray], input_step: InputStep) -> torch.Tensor:
    """T uint8 crops [S, S, 3] -> the (1, C, T, S, S) normalised clip on the model's device."""
    clip = np.empty((3, len(crops)) + crops[0].shape[:2], dtype=np.uint8)
    for t, crop in enumerate(crops):
        transform.to_planes(crop, clip[:, t])
    return input_step.clips(torch.from_numpy(clip)[None])


def frame_input(crop: np.ndarray, input_step: InputStep) -> torch.Tensor:
    """One crop -> the (1, C, S, S) float frame a per-frame step takes."""
    return clip_input([crop], input_step)[:, :, 0]
