"""Mixup, CutMix and label smoothing of training batches (PySlowFast's MIXUP keys).

A batch transform on the device, after normalisation: clip i of a batch is mixed with clip
N-1-i (the batch is already shuffled), with one blend weight, or one box pasted over every
frame of the clip, for the whole batch. The targets become class distributions:
`lam * smooth(label_i) + (1 - lam) * smooth(label_{N-1-i})`, `lam` being the share of each
clip's own content (for cutmix: of its pixels, after the box is clipped to the frame).

The mixing parameters come from a generator of this object alone, seeded per epoch, so
switching mixup on changes no other random draw of the run.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from yacs.config import CfgNode

Box = Tuple[int, int, int, int]  # y0, y1, x0, x1: rows y0..y1-1 and columns x0..x1-1


def smoothed_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[N] class indices -> [N, C] targets: `1 - smoothing + smoothing / C` on the label,
    `smoothing / C` elsewhere (each row sums to 1)."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, dtype=dtype, device=labels.device)
    return targets.scatter_(1, labels.long().reshape(-1, 1), 1.0 - smoothing + off)


def mixed_targets(labels: torch.Tensor, num_classes: int, lam: float, smoothing: float,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Targets of a batch whose clip i holds `lam` of itself and `1 - lam` of clip N-1-i."""
    own = smoothed_one_hot(labels, num_classes, smoothing, dtype)
    return own * lam + own.flip(0) * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> Tuple[Box, float]:
    """A box of about `1 - lam` of the frame around a uniform random centre, clipped to the
    frame (PySlowFast's geometry: sides int(size * sqrt(1 - lam)), halved on each side of the
    centre), and the share of the frame outside it, which is the label weight of the clip."""
    ratio = math.sqrt(1.0 - lam)
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = max(cy - half_h, 0), min(cy + half_h, height)
    x0, x1 = max(cx - half_w, 0), min(cx + half_w, width)
    return (y0, y1, x0, x1), 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)


@dataclass(frozen=True)
class MixedBatch:
    """A training batch after the transform.

    `targets` is what the loss takes: [N, C] distributions, or the integer `labels`
    themselves when nothing was mixed or smoothed. `lam` is each clip's share of itself
    (1.0 = not mixed).
    """
    inputs: List[torch.Tensor]
    targets: torch.Tensor
    labels: torch.Tensor
    lam: float = 1.0

    def for_top_k(self, preds: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(scores, labels) for training top-k errors, as PySlowFast counts them: each clip
        against its dominant label, with the score of the other mixed class folded into it."""
        if self.lam == 1.0:
            return preds, self.labels
        own, other = self.labels, self.labels.flip(0)
        dominant, minor = (own, other) if self.lam >= 0.5 else (other, own)
        rows = torch.arange(preds.shape[0], device=preds.device)
        two_classes = dominant != minor
        rows, dominant_c, minor_c = rows[two_classes], dominant[two_classes], minor[two_classes]
        scores = preds.detach().clone()
        scores[rows, dominant_c] += scores[rows, minor_c]
        scores[rows, minor_c] = 0.0
        return scores, dominant


class MixUp:
    """Draws the mixing of each batch and applies it; `seed` before every epoch."""

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, prob: float, switch_prob: float,
                 smoothing: float, num_classes: int):
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.smoothing, self.num_classes = smoothing, num_classes
        self.rng = np.random.default_rng(0)

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> Optional["MixUp"]:
        """The transform MIXUP.* asks for, None when MIXUP.ENABLE is False."""
        m = cfg.MIXUP
        if not m.ENABLE:
            return None
        return cls(m.ALPHA, m.CUTMIX_ALPHA, m.PROB, m.SWITCH_PROB, m.LABEL_SMOOTH_VALUE, cfg.MODEL.NUM_CLASSES)

    @property
    def mixes(self) -> bool:
        """False when only label smoothing is asked for (both alphas 0 or PROB 0)."""
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> Dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: Dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]

    def draw(self, height: int, width: int) -> Tuple[float, Optional[Box]]:
        """(lam, cutmix box or None) of the next batch; lam 1.0 = leave it as it is."""
        if not self.mixes or self.rng.random() >= self.prob:
            return 1.0, None
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = bool(self.rng.random() < self.switch_prob)
        else:
            cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = float(self.rng.beta(alpha, alpha))
        if not cutmix:
            return lam, None
        box, lam = cutmix_box(height, width, lam, self.rng)
        return lam, box

    def __call__(self, inputs: List[torch.Tensor], labels: torch.Tensor) -> MixedBatch:
        """Mix `inputs` (a list of [N, C, T, H, W] pathways, mixed alike) and their labels."""
        height, width = inputs[0].shape[-2:]
        lam, box = self.draw(height, width)
        dtype = inputs[0].dtype if inputs[0].is_floating_point() else torch.float32
        if lam == 1.0:
            targets = labels if self.smoothing == 0 else smoothed_one_hot(
                labels, self.num_classes, self.smoothing, dtype)
            return MixedBatch(list(inputs), targets, labels)
        if box is None:
            mixed = [torch.lerp(x.flip(0), x, lam) for x in inputs]
        else:
            y0, y1, x0, x1 = box
            mixed = []
            for x in inputs:
                x = x.clone()
                x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
                mixed.append(x)
        targets = mixed_targets(labels, self.num_classes, lam, self.smoothing, dtype)
        return MixedBatch(mixed, targets, labels, lam)
