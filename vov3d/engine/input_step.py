"""The input step: where loader batches become model input, for training, validation,
precise BN, testing and the tools.

Datasets hand over uint8 clips [..., 3, T, H, W] in the loader's channel order. Here they
are copied to the model's device as uint8 (a quarter of the bytes of float32; non-blocking
from pinned memory), converted there to float (torch's default dtype, float32, which the
models are built in) and normalised: (x / 255 - MEAN) / STD per channel in the loader's
channel order, then the channel axis reversed if DATA.REVERSE_INPUT_CHANNEL (the
reference's order, which matters when MEAN/STD differ per channel). Models never normalise:
their input (and that of exported models) is the normalised clip.

With NUM_GPUS 0 the device is the CPU and the same step runs in the main process. Normalising
in the loader workers instead was measured (2 workers, batch 4 of 16 x 224^2) to cost 13% more
CPU per batch in total (the float batch is 4x the bytes through shared memory, which the main
process then pages in) while saving the main process only 25 of its 213 ms per batch; with a
real model (X3D-XS) the difference was within noise.

Batch-level training transforms that act on whole normalised batches and their labels
(mixup/cutmix, random erasing) follow this step, in the training step's batch transform.
"""
from typing import List, Sequence, Tuple

import torch
from yacs.config import CfgNode

from vov3d.engine.runtime import to_device

CHANNEL_AXIS = -4  # of [..., 3, T, H, W]


class InputStep:
    def __init__(self, cfg: CfgNode, device: torch.device):
        data = cfg.DATA
        self.device = device
        self.dtype = torch.get_default_dtype()
        self.reverse_channels = data.REVERSE_INPUT_CHANNEL
        # (x / 255 - MEAN) / STD as x * (1 / (255 STD)) - MEAN / STD: one multiply and one
        # subtract per element.
        scale = torch.tensor([1.0 / (255.0 * s) for s in data.STD], dtype=self.dtype)
        shift = torch.tensor([m / s for m, s in zip(data.MEAN, data.STD)], dtype=self.dtype)
        if self.reverse_channels:
            scale, shift = scale.flip(0), shift.flip(0)
        self._scale = scale.view(3, 1, 1, 1).to(device)
        self._shift = shift.view(3, 1, 1, 1).to(device)

    def clips(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, T, H, W] (any device) -> normalised float on the model's device."""
        if clips.dtype != torch.uint8 or clips.dim() < 4 or clips.shape[CHANNEL_AXIS] != 3:
            raise TypeError(f"the input step takes uint8 clips [..., 3, T, H, W] as the datasets return "
                            f"them, got {clips.dtype} {list(clips.shape)}.")
        x = clips.to(self.device, non_blocking=True)
        if self.reverse_channels:
            x = x.flip(CHANNEL_AXIS)
        return x.to(self.dtype).mul_(self._scale).sub_(self._shift)

    def inputs(self, pathways: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The model input of a batch's list of pathway tensors."""
        return [self.clips(p) for p in pathways]

    def batch(self, inputs: Sequence[torch.Tensor], labels: torch.Tensor
              ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """(model input, labels) of a loader batch, both on the device."""
        return self.inputs(inputs), to_device(labels, self.device)
