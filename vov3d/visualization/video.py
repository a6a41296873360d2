"""Clips as pictures: model inputs back to RGB frames, labels drawn on them (OpenCV),
animated GIFs (Pillow), and the test clip of one video file for the Grad-CAM tool."""
import os
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch

from vov3d.datasets import decoder, sampling, transform
from vov3d.utils.errors import UserError

# Clips are upscaled to at least this short side before text is drawn on them, so that the
# labels stay readable on small crops.
DISPLAY_SIDE = 224


class VideoInputError(UserError):
    """The video given to a visualisation tool cannot be read."""


def display_frames(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   reverse_channels: bool = False, channel_order: str = "rgb") -> np.ndarray:
    """A normalised model input [3, T, H, W] back to uint8 RGB frames [T, H, W, 3] (the
    inverse of the engine's input step)."""
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)
    if reverse_channels:
        mean_t, std_t = mean_t.flip(0), std_t.flip(0)
    x = clip.detach().float().cpu() * std_t.view(-1, 1, 1, 1) + mean_t.view(-1, 1, 1, 1)
    if reverse_channels:
        x = x.flip(0)
    if channel_order == "bgr":
        x = x.flip(0)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous().numpy()


def label_colors(count: int, colormap: str) -> List[Tuple[int, int, int]]:
    """`count` RGB colours of a matplotlib colormap (TENSORBOARD.MODEL_VIS.COLORMAP)."""
    from matplotlib import colormaps

    cmap = colormaps[colormap]
    return [tuple(int(255 * c) for c in cmap(i % cmap.N if cmap.N < 256 else i / max(count - 1, 1))[:3])
            for i in range(count)]


def annotate(frames: np.ndarray, lines: Sequence[str], colors: Sequence[Tuple[int, int, int]]) -> np.ndarray:
    """Frames [T, H, W, 3] upscaled to a short side of at least DISPLAY_SIDE, with `lines`
    written top-left on boxes of `colors` (one per line)."""
    height, width = frames.shape[1:3]
    scale = max(1.0, DISPLAY_SIDE / min(height, width))
    size = (int(round(width * scale)), int(round(height * scale)))
    out = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) if scale > 1 else f.copy() for f in frames])
    font, font_scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    y = 4
    for text, color in zip(lines, colors):
        (w, h), base = cv2.getTextSize(text, font, font_scale, thickness)
        for frame in out:
            cv2.rectangle(frame, (2, y), (6 + w, y + h + base + 2), color, thickness=-1)
            cv2.putText(frame, text, (4, y + h + 1), font, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)
        y += h + base + 4
    return out


def prediction_lines(scores: torch.Tensor, names: Sequence[str], k: int) -> List[str]:
    values, indices = scores.float().topk(min(k, scores.numel()))
    return [f"[{v:.2f}] {names[i]}" for v, i in zip(values.tolist(), indices.tolist())]


def test_frames(cfg, path: str) -> Tuple[np.ndarray, float]:
    """The single-view test clip of a video file as uint8 RGB frames [T, S, S, 3] (centre
    window, centre crop of DATA.TEST_CROP_SIZE, as the test loaders cut it) and the video's fps."""
    if not os.path.isfile(path):
        raise VideoInputError(f"--video '{path}' is not a file; expected a video file (e.g. .mp4).")
    data = cfg.DATA
    spec = decoder.TemporalSpec(data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS, use_offset=True)
    try:
        bank = decoder.decode_clips(path, [(0, 1)], spec, "rgb24",
                                    backend=decoder.usable_backend(data.DECODING_BACKEND))
    except Exception as e:
        raise VideoInputError(f"--video '{path}' cannot be decoded: {e}") from None
    resize, size = sampling.test_resize_and_crop(data.TEST_CROP_SIZE, data.TRAIN_JITTER_SCALES[0], 1)
    frames = [transform.resize_short_side(f, resize) for f in bank.clip(0)]
    y, x = sampling.uniform_crop_offsets(frames[0].shape[0], frames[0].shape[1], size, 1)
    return np.stack([transform.crop(f, y, x, size) for f in frames]), bank.fps
