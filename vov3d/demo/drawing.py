"""The labels on a frame: lines of text on a darkened box in the top-left corner, sized to
the frame (OpenCV's Hershey font, drawn in place on an RGB uint8 image, so the output keeps
the input's size; the visualisation tools' `annotate` enlarges small clips instead)."""
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch

FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_RGB = (255, 255, 255)
FIRST_RGB = (255, 220, 64)  # the top class stands out
BOX_DARKEN = 0.45  # the box keeps this share of the frame's brightness


def top_k(scores: torch.Tensor, names: Sequence[str], k: int) -> List[Tuple[int, str, float]]:
    """(class id, name, score) of the `k` highest scores, highest first."""
    values, indices = scores.topk(min(k, scores.numel()))
    return [(int(i), names[int(i)], float(v)) for v, i in zip(values.tolist(), indices.tolist())]


def draw_lines(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Draw `lines` (the first highlighted) on `image` in place and return it."""
    if not lines:
        return image
    height, width = image.shape[:2]
    scale = max(0.3, min(height, width) / 600)
    thickness = max(1, int(round(scale * 1.5)))
    (_, text_h), baseline = cv2.getTextSize("Ag", FONT, scale, thickness)
    line_h = text_h + baseline + max(2, int(4 * scale))
    pad = max(2, int(6 * scale))
    text_w = max(cv2.getTextSize(line, FONT, scale, thickness)[0][0] for line in lines)
    box_w, box_h = min(width, text_w + 2 * pad), min(height, line_h * len(lines) + pad)
    box = image[:box_h, :box_w]
    box[:] = (box.astype(np.float32) * BOX_DARKEN).astype(np.uint8)
    for n, line in enumerate(lines):
        y = pad + text_h + n * line_h
        if y - text_h >= height:
            break
        cv2.putText(image, line, (pad, y), FONT, scale, FIRST_RGB if n == 0 else TEXT_RGB, thickness,
                    cv2.LINE_AA)
    return image
