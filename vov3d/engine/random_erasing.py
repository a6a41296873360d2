"""Random erasing of training clips (AUG.RE_*), after the input step normalised them.

PySlowFast erases the normalised float clip in its dataset; clips travel as uint8 here, so
erasing runs where the clip first is normalised: on the model's device, per clip of the
batch, with PySlowFast's distribution for a clip ("cube" erasing): with probability
RE_PROB, a count uniform in [1, RE_COUNT] of boxes, each of area uniform in [0.02, 1/3] of
the frame divided by the count and log-uniform aspect ratio in [0.3, 1/0.3] (up to 100
tries to fit), the same box on every frame, filled per frame with zeros (const), one normal
value per channel (rand) or normal values per pixel (pixel). With RE_SPLIT and
AUG.NUM_SAMPLE > 1 the first copy of each clip stays unerased (the clean split).

The boxes come from this object's own generator, seeded per optimiser step by the
trainer, so a resumed run erases the same boxes.
"""
import math
import random
from typing import Optional

import torch
from yacs.config import CfgNode

MODES = ("const", "rand", "pixel")
MIN_AREA, MAX_AREA, MIN_ASPECT = 0.02, 1.0 / 3.0, 0.3
_TRIES = 100


class RandomErasing:
    def __init__(self, probability: float, mode: str, max_count: int, copies: int, clean_first: bool,
                 device: torch.device):
        if mode not in MODES:
            raise ValueError(f"random erasing mode {mode!r}; expected one of {list(MODES)}")
        self.probability, self.mode, self.max_count = probability, mode, max_count
        self.copies, self.clean_first = copies, clean_first
        self.log_aspect = (math.log(MIN_ASPECT), math.log(1.0 / MIN_ASPECT))
        self._rng = random.Random(0)
        self._noise = torch.Generator(device=device)

    @classmethod
    def from_cfg(cls, cfg: CfgNode, device: torch.device) -> Optional["RandomErasing"]:
        aug = cfg.AUG
        if not (aug.ENABLE and aug.RE_PROB > 0):
            return None
        return cls(aug.RE_PROB, aug.RE_MODE, aug.RE_COUNT, aug.NUM_SAMPLE, aug.RE_SPLIT, device)

    def seed(self, seed: int) -> None:
        self._rng.seed(seed)
        self._noise.manual_seed(seed)

    def boxes(self, height: int, width: int):
        """The boxes (top, left, h, w) of one clip: none with probability 1 - RE_PROB."""
        rng = self._rng
        if rng.random() > self.probability:
            return []
        count = 1 if self.max_count == 1 else rng.randint(1, self.max_count)
        found = []
        for _ in range(count):
            for _ in range(_TRIES):
                area = rng.uniform(MIN_AREA, MAX_AREA) * height * width / count
                aspect = math.exp(rng.uniform(*self.log_aspect))
                h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if w < width and h < height:
                    found.append((rng.randint(0, height - h), rng.randint(0, width - w), h, w))
                    break
        return found

    def _fill(self, clip: torch.Tensor, top: int, left: int, h: int, w: int) -> None:
        channels, frames = clip.shape[0], clip.shape[1]
        region = clip[:, :, top:top + h, left:left + w]
        if self.mode == "const":
            region.zero_()
            return
        shape = (channels, frames, h, w) if self.mode == "pixel" else (channels, frames, 1, 1)
        noise = torch.empty(shape, dtype=clip.dtype, device=clip.device).normal_(generator=self._noise)
        region.copy_(noise.expand_as(region))

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        """Erase, in place, normalised clips [N, C, T, H, W]; returns them."""
        height, width = clips.shape[-2:]
        for i in range(clips.shape[0]):
            if self.clean_first and i % self.copies == 0:
                continue
            for top, left, h, w in self.boxes(height, width):
                self._fill(clips[i], top, left, h, w)
        return clips
