"""Frame transforms on uint8 images, and the channel-first uint8 layout of the clips.

Datasets return clips as uint8 [3, T, H, W] in the loader's channel order; the float
conversion and normalisation happen once, on the model's device (the engine's input step).
The reference normalises full-size frames to float, then resizes and crops. Normalisation
is affine per channel and bilinear weights sum to one, so both commute with resize and
crop: here frames are resized as uint8 with OpenCV
(INTER_LINEAR = bilinear with half-pixel centres, the same sampling grid as torch
`interpolate(mode="bilinear", align_corners=False)`) and cropped. The only difference to
the float path is OpenCV's rounding to uint8 (at most 1 grey level, i.e. < 0.02 after
dividing by STD 0.225; a test checks it) at a fraction of the cost and a quarter of the bytes.
"""
from typing import Sequence, Tuple

import cv2
import numpy as np

from vov3d.datasets import sampling


def resize_short_side(frame: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an [H, W, 3] uint8 frame so its short side is `size`."""
    height, width = frame.shape[:2]
    new_h, new_w = sampling.short_side_shape(height, width, size)
    if (new_h, new_w) == (height, width):
        return frame
    return cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def crop(frame: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    return frame[y:y + size, x:x + size]


def to_planes(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] -> [3, H, W] uint8, so that crops of it copy whole rows. OpenCV splits a
    contiguous frame several times faster than a numpy transpose; decoded frames often
    carry row padding, which sends OpenCV to a slow path, so they are packed first."""
    planes = np.empty((3,) + frame.shape[:2], dtype=np.uint8)
    cv2.split(np.ascontiguousarray(frame), [planes[0], planes[1], planes[2]])
    return planes


def train_crops(frames: Sequence[np.ndarray], jitter: Tuple[int, int], crop_size: int,
                inverse_uniform: bool, random_flip: bool, rng=None) -> np.ndarray:
    """Training augmentation shared by all frames of a clip: short-side scale jitter,
    random crop, horizontal flip with probability 0.5. Returns [3, T, crop, crop] uint8."""
    rng = rng if rng is not None else np.random
    size = sampling.jitter_size(jitter[0], jitter[1], inverse_uniform, rng)
    height, width = frames[0].shape[:2]
    new_h, new_w = sampling.short_side_shape(height, width, size)
    y, x = sampling.random_crop_offsets(new_h, new_w, crop_size, rng)
    flip = random_flip and rng.uniform() < 0.5
    out = np.empty((3, len(frames), crop_size, crop_size), dtype=np.uint8)
    for t, frame in enumerate(frames):
        patch = crop(resize_short_side(frame, size), y, x, crop_size)
        out[:, t] = (patch[:, ::-1] if flip else patch).transpose(2, 0, 1)
    return out
