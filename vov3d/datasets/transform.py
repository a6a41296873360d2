"""Frame transforms on uint8 images, and the single normalisation to a float tensor.

The reference normalises full-size frames to float, then resizes and crops. Normalisation
is affine per channel and bilinear weights sum to one, so both commute with resize and
crop: here frames are resized as uint8 with OpenCV
(INTER_LINEAR = bilinear with half-pixel centres, the same sampling grid as torch
`interpolate(mode="bilinear", align_corners=False)`), cropped, and normalised once. The only
difference to the float path is OpenCV's rounding to uint8 (at most 1 grey level, i.e.
< 0.02 after dividing by STD 0.225; a test checks it) at a fraction of the cost.
"""
from typing import Sequence, Tuple

import cv2
import numpy as np
import torch

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


def train_crops(frames: Sequence[np.ndarray], jitter: Tuple[int, int], crop_size: int,
                inverse_uniform: bool, random_flip: bool, rng=None) -> np.ndarray:
    """Training augmentation shared by all frames of a clip: short-side scale jitter,
    random crop, horizontal flip with probability 0.5. Returns [T, crop, crop, 3] uint8."""
    rng = rng if rng is not None else np.random
    size = sampling.jitter_size(jitter[0], jitter[1], inverse_uniform, rng)
    height, width = frames[0].shape[:2]
    new_h, new_w = sampling.short_side_shape(height, width, size)
    y, x = sampling.random_crop_offsets(new_h, new_w, crop_size, rng)
    flip = random_flip and rng.uniform() < 0.5
    out = np.empty((len(frames), crop_size, crop_size, 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        patch = crop(resize_short_side(frame, size), y, x, crop_size)
        out[t] = patch[:, ::-1] if flip else patch
    return out


def stack_crop(frames: Sequence[np.ndarray], y: int, x: int, size: int) -> np.ndarray:
    """[T, size, size, 3] uint8 crop of already-resized frames."""
    return np.stack([crop(frame, y, x, size) for frame in frames])


def normalize(clip: np.ndarray, mean: Sequence[float], std: Sequence[float],
              reverse_channels: bool) -> torch.Tensor:
    """[T, H, W, C] uint8 -> [C, T, H, W] float32, (x / 255 - MEAN) / STD per channel in the
    loader's channel order, then the channel axis reversed if requested (the reference's
    order, which matters when MEAN/STD differ per channel)."""
    data = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32)
    if reverse_channels:
        data, scale, shift = data.flip(0), scale.flip(0), shift.flip(0)
    out = data.contiguous().to(torch.float32)
    return out.mul_(scale.view(-1, 1, 1, 1)).sub_(shift.view(-1, 1, 1, 1))
