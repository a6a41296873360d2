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
from typing import Optional, Sequence, Tuple

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


def to_planes(frame: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """[H, W, 3] -> [3, H, W] uint8 (into `out` if given), so that crops of it copy whole
    rows. OpenCV splits a contiguous frame several times faster than a numpy transpose;
    decoded frames often carry row padding, which sends OpenCV to a slow path, so they are
    packed first."""
    out = np.empty((3,) + frame.shape[:2], dtype=np.uint8) if out is None else out
    cv2.split(np.ascontiguousarray(frame), [out[0], out[1], out[2]])
    return out


class FramePlanes:
    """The frames of one video resized to a short side of `size` and split into channel
    planes [3, h, w], one frame at a time, into buffers reused for every frame: fresh
    buffers per frame cost more in page faults than the resize and split themselves. The
    planes returned are valid until the next call."""

    def __init__(self, height: int, width: int, size: int):
        self.shape = sampling.short_side_shape(height, width, size)
        self.size = size
        self._staged = np.empty(self.shape + (3,), dtype=np.uint8)
        self._planes = np.empty((3,) + self.shape, dtype=np.uint8)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        shape = sampling.short_side_shape(frame.shape[0], frame.shape[1], self.size)
        if shape != self.shape:
            raise ValueError(f"the frames of one video differ in size: {frame.shape[1]}x{frame.shape[0]} "
                             f"after frames resized to {self.shape[1]}x{self.shape[0]}")
        if frame.shape[:2] == self.shape:
            np.copyto(self._staged, frame)  # packs row-padded decoder output
        else:
            cv2.resize(frame, shape[::-1], dst=self._staged, interpolation=cv2.INTER_LINEAR)
        return to_planes(self._staged, self._planes)


def _train_geometry(frames: Sequence[np.ndarray], jitter: Tuple[int, int], crop_size: int, inverse_uniform: bool,
                    random_flip: bool, rng):
    """The draws of a training crop, in this order: short side, crop corner, flip."""
    size = sampling.jitter_size(jitter[0], jitter[1], inverse_uniform, rng)
    shape = sampling.short_side_shape(frames[0].shape[0], frames[0].shape[1], size)
    y, x = sampling.random_crop_offsets(shape[0], shape[1], crop_size, rng)
    return size, y, x, random_flip and rng.uniform() < 0.5


def train_crops(frames: Sequence[np.ndarray], jitter: Tuple[int, int], crop_size: int,
                inverse_uniform: bool, random_flip: bool, rng=None) -> np.ndarray:
    """Training augmentation shared by all frames of a clip: short-side scale jitter,
    random crop, horizontal flip with probability 0.5. Returns [3, T, crop, crop] uint8."""
    rng = rng if rng is not None else np.random
    size, y, x, flip = _train_geometry(frames, jitter, crop_size, inverse_uniform, random_flip, rng)
    planes = FramePlanes(frames[0].shape[0], frames[0].shape[1], size)
    out = np.empty((3, len(frames), crop_size, crop_size), dtype=np.uint8)
    for t, frame in enumerate(frames):
        patch = planes(frame)[:, y:y + crop_size, x:x + crop_size]
        out[:, t] = patch[:, :, ::-1] if flip else patch
    return out


def train_crop_frames(frames: Sequence[np.ndarray], jitter: Tuple[int, int], crop_size: int,
                      inverse_uniform: bool, random_flip: bool, rng=None) -> np.ndarray:
    """The crops of `train_crops` (the same draws give the same pixels) as frames
    [T, crop, crop, 3], the layout frame operations (RandAugment) work in; `frames_to_clip`
    turns them into the clip."""
    rng = rng if rng is not None else np.random
    size, y, x, flip = _train_geometry(frames, jitter, crop_size, inverse_uniform, random_flip, rng)
    shape = sampling.short_side_shape(frames[0].shape[0], frames[0].shape[1], size)
    staged = np.empty(shape + (3,), dtype=np.uint8)
    out = np.empty((len(frames), crop_size, crop_size, 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        if frame.shape[:2] == shape:
            staged[...] = frame
        else:
            cv2.resize(frame, shape[::-1], dst=staged, interpolation=cv2.INTER_LINEAR)
        patch = staged[y:y + crop_size, x:x + crop_size]
        out[t] = patch[:, ::-1] if flip else patch
    return out


def frames_to_clip(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] -> the clip [3, T, H, W], uint8: one channel split of the frames seen as
    a tall image."""
    t, h, w, _ = frames.shape
    out = np.empty((3, t, h, w), dtype=np.uint8)
    cv2.split(frames.reshape(t * h, w, 3), [out[c].reshape(t * h, w) for c in range(3)])
    return out
