"""Where a clip comes from: temporal windows (video files), segment indices (frame
folders), spatial scale/crop/flip parameters and the test-view numbering.

Pure functions of sizes and random generators, so every sampling rule is testable without
a video.
"""
import math
import random
from typing import Optional, Tuple

import numpy as np


# ----------------------------------------------------------------------------------------
# Test views
# ----------------------------------------------------------------------------------------
def view_indices(view: int, num_spatial_crops: int) -> Tuple[int, int]:
    """(temporal index, spatial index) of view `view` of a video: v // crops, v % crops."""
    return view // num_spatial_crops, view % num_spatial_crops


# ----------------------------------------------------------------------------------------
# Temporal windows for video files
# ----------------------------------------------------------------------------------------
def clip_size(num_frames: int, sampling_rate: int, fps: float, target_fps: float) -> float:
    """Span of one clip in source frames: NUM_FRAMES frames every SAMPLING_RATE at TARGET_FPS."""
    return sampling_rate * num_frames / target_fps * fps


def window_start_end(video_frames: int, size: float, clip_idx: int, num_clips: int,
                     use_offset: bool = False, rng: Optional[random.Random] = None
                     ) -> Tuple[float, float]:
    """Start and end (inclusive, real-valued) source-frame positions of a clip.

    clip_idx -1 draws the start uniformly in [0, delta] (train/val); otherwise temporal
    view `clip_idx` of `num_clips`: delta * i / N (LEGACY: never reaches the end, one view
    = first window), or with `use_offset` the newest PySlowFast rule (one view = centre,
    else i * floor(delta / (N - 1))).
    """
    delta = max(video_frames - size, 0)
    if clip_idx == -1:
        start = (rng or random).uniform(0, delta)
    elif use_offset:
        start = math.floor(delta / 2) if num_clips == 1 else clip_idx * math.floor(delta / (num_clips - 1))
    else:
        start = delta * clip_idx / num_clips
    return start, start + size - 1


def linspace_indices(start: float, end: float, num_frames: int, available: int) -> np.ndarray:
    """`linspace(start, end, T)` clamped to [0, available - 1] and truncated (short videos
    repeat their last frame instead of failing)."""
    index = np.linspace(start, end, num_frames)
    return np.clip(index, 0, available - 1).astype(np.int64)


# ----------------------------------------------------------------------------------------
# Segment sampling for frame datasets
# ----------------------------------------------------------------------------------------
def segment_bounds(num_video_frames: int, num_frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """(s_k, e_k) for k = 0..T-1: round(seg * k), round(seg * (k + 1)), seg = (L - 1) / T,
    numpy round-half-to-even."""
    seg = (num_video_frames - 1) / num_frames
    k = np.arange(num_frames)
    return np.round(seg * k).astype(np.int64), np.round(seg * (k + 1)).astype(np.int64)


def segment_indices(num_video_frames: int, num_frames: int, mode: str, view: int = 0,
                    num_views: int = 1, rng: Optional[np.random.RandomState] = None) -> np.ndarray:
    """One frame index per segment.

    mode "random": uniform integer in [s_k, e_k] (training, and the VoV3D fork's multi-view
    test); "midpoint": (s_k + e_k) // 2 (validation, single-view test, PySlowFast's
    multi-view test); "spread": temporal view `view` of `num_views` takes
    round(s_k + (e_k - s_k) * (view + 0.5) / num_views), distinct deterministic views.
    """
    start, end = segment_bounds(num_video_frames, num_frames)
    if mode == "random":
        rng = rng if rng is not None else np.random
        # randint's upper bound is exclusive: + 1 makes e_k reachable, as in the references.
        return np.array([rng.randint(s, e + 1) for s, e in zip(start, end)], dtype=np.int64)
    if mode == "midpoint":
        return (start + end) // 2
    if mode == "spread":
        return np.round(start + (end - start) * (view + 0.5) / num_views).astype(np.int64)
    raise ValueError(f"unknown segment sampling mode {mode!r}; expected random, midpoint or spread.")


# ----------------------------------------------------------------------------------------
# Spatial sampling
# ----------------------------------------------------------------------------------------
def jitter_size(min_size: int, max_size: int, inverse_uniform: bool,
                rng: Optional[np.random.RandomState] = None) -> int:
    """Short-side target for training: uniform in [min, max], or 1 / U(1/max, 1/min)."""
    rng = rng if rng is not None else np.random
    if inverse_uniform:
        return int(round(1.0 / rng.uniform(1.0 / max_size, 1.0 / min_size)))
    return int(round(rng.uniform(min_size, max_size)))


def short_side_shape(height: int, width: int, size: int) -> Tuple[int, int]:
    """(new_h, new_w) with the short side = size and the long side floor(long / short * size)."""
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def random_crop_offsets(height: int, width: int, crop: int,
                        rng: Optional[np.random.RandomState] = None) -> Tuple[int, int]:
    """Uniform (y, x) offsets of a crop x crop window.

    Conscious fix of a LEGACY off-by-one: the reference draws randint(0, dim - crop), which
    never picks the last valid offset; here every offset in [0, dim - crop] is possible.
    """
    rng = rng if rng is not None else np.random
    y = int(rng.randint(0, height - crop + 1)) if height > crop else 0
    x = int(rng.randint(0, width - crop + 1)) if width > crop else 0
    return y, x


def uniform_crop_offsets(height: int, width: int, crop: int, spatial_idx: int) -> Tuple[int, int]:
    """Test crop offsets: 0 = left/top, 1 = centre (ceil((dim - crop) / 2)), 2 = right/bottom,
    moving along the long side."""
    if spatial_idx not in (0, 1, 2):
        raise ValueError(f"spatial index must be 0, 1 or 2, got {spatial_idx}.")
    y = int(math.ceil((height - crop) / 2))
    x = int(math.ceil((width - crop) / 2))
    if height > width:
        y = {0: 0, 1: y, 2: height - crop}[spatial_idx]
    else:
        x = {0: 0, 1: x, 2: width - crop}[spatial_idx]
    return y, x


def test_resize_and_crop(test_crop: int, jitter_min: int, num_spatial_crops: int) -> Tuple[int, int]:
    """(short-side resize, crop) for testing.

    Three crops: resize to TEST_CROP_SIZE so the crops cover the frame. One crop: centre crop
    of TEST_CROP_SIZE after resizing to TRAIN_JITTER_SCALES[0] when that is larger, so "resize
    256, crop 224" works (the VoV3D code asserted the two equal), as in newest PySlowFast.
    """
    if num_spatial_crops == 1:
        return max(test_crop, jitter_min), test_crop
    return test_crop, test_crop


def spatial_index(view_spatial: int, num_spatial_crops: int) -> int:
    """One crop means the centre crop for every dataset (the references took the left/top
    crop for Something-Something)."""
    return 1 if num_spatial_crops == 1 else view_spatial


def segment_test_mode(setting: str, total_views: int) -> str:
    """Segment mode for a test view: one view in total -> midpoint; else DATA.SEGMENT_TEST_SAMPLING."""
    return "midpoint" if total_views == 1 else setting
