"""Weight EMA: an exponential moving average of a model, updated after every optimiser step.

    ema <- DECAY * ema + (1 - DECAY) * weights     (parameters and floating-point buffers)

BN running statistics are averaged like the parameters rather than copied from the live
model: the averaged weights lag the live ones by about 1 / (1 - DECAY) steps, and averaged
statistics lag alike, while copied ones would describe the activations of other weights.
Integer buffers (BN's num_batches_tracked) are copied. With BN.USE_PRECISE_STATS the
trainer recomputes the average's statistics for its own weights, which is exact.

The average is stored in checkpoints as "ema_state", a state dict with the keys and shapes
of "model_state", so any loader of model weights can take it in that entry's place.
"""
import copy
import logging
from collections import OrderedDict
from typing import Dict

import torch

from vov3d.engine.runtime import unwrap_model

logger = logging.getLogger(__name__)

# The checkpoint entry holding the averaged weights.
EMA_STATE = "ema_state"


class ModelEma:
    def __init__(self, model: torch.nn.Module, decay: float):
        """Starts as a copy of `model` (unwrapped from DDP), in eval mode, without gradients."""
        self.decay = decay
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        self.module.requires_grad_(False)
        # False until the average is restored from a checkpoint or taken from the weights.
        self.restored = False

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step of the average towards `model`'s current weights."""
        live = unwrap_model(model).state_dict()
        averaged, targets = [], []
        for name, value in self.module.state_dict().items():
            if value.is_floating_point():
                averaged.append(value)
                targets.append(live[name].detach())
            else:
                value.copy_(live[name])
        if averaged:
            torch._foreach_lerp_(averaged, targets, 1.0 - self.decay)

    @torch.no_grad()
    def copy_from(self, model: torch.nn.Module) -> None:
        """Restart the average at `model`'s weights."""
        self.module.load_state_dict(unwrap_model(model).state_dict())
        self.restored = True

    def state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        return OrderedDict((k, v.detach().cpu()) for k, v in self.module.state_dict().items())

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Strict: every tensor of the model, with its shape."""
        self.module.load_state_dict(state, strict=True)
        self.restored = True
