"""Frames -> the model's input, as the clip datasets prepare a test view: the short side
resized to DATA.TEST_CROP_SIZE, a centre crop of that size (uint8, kept per frame so a
frame shared by several windows is resized once), then DATA.MEAN/STD normalisation of the
frames a prediction uses."""
from typing import Sequence

import numpy as np
import torch
from yacs.config import CfgNode

from vov3d.datasets import sampling, transform


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [size, size, 3] uint8: short side to `size`, centre crop."""
    image = transform.resize_short_side(image, size)
    y, x = sampling.uniform_crop_offsets(image.shape[0], image.shape[1], size, 1)
    return transform.crop(image, y, x, size)


def clip_input(crops: Sequence[np.ndarray], cfg: CfgNode, device: torch.device) -> torch.Tensor:
    """T crops -> the (1, C, T, S, S) float clip (normalised with DATA.MEAN/STD)."""
    clip = transform.normalize(np.stack(crops), cfg.DATA.MEAN, cfg.DATA.STD, cfg.DATA.REVERSE_INPUT_CHANNEL)
    return clip[None].to(device)


def frame_input(crop: np.ndarray, cfg: CfgNode, device: torch.device) -> torch.Tensor:
    """One crop -> the (1, C, S, S) float frame a per-frame step takes."""
    return clip_input([crop], cfg, device)[:, :, 0]
