"""Weight EMA: an exponential moving average of a model, updated after every optimiser step.

    ema <- DECAY * ema + (1 - DECAY) * weights     (every parameter)

Buffers (BN running statistics) are copied from the trained model rather than averaged. They
are estimates of activation statistics, not trained weights, and their scale changes by
orders of magnitude during training (e.g. the running variances of X3D's channel-wise convs
shrink a hundredfold): an average keeps early values for about 1 / (1 - DECAY) steps and then
normalises by a variance many times too large. Measured on the toy set (X3D-M, 180 steps,
DECAY 0.98): 25 % top-1 with averaged statistics, 63 % with copied ones. Copied statistics
belong to weights close to the average; with BN.USE_PRECISE_STATS the trainer recomputes the
statistics of the averaged weights themselves, which is exact.

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
        """One step of the average towards `model`'s current parameters; its buffers are copied."""
        live = unwrap_model(model)
        params, buffers = dict(live.named_parameters()), dict(live.named_buffers())
        averaged = [p for _, p in self.module.named_parameters()]
        if averaged:
            targets = [params[name].detach() for name, _ in self.module.named_parameters()]
            torch._foreach_lerp_(averaged, targets, 1.0 - self.decay)
        for name, buffer in self.module.named_buffers():
            buffer.copy_(buffers[name])

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
