"""Grad-CAM (Selvaraju et al., ICCV 2017) for video models, as PySlowFast computes it.

The class score (the eval-mode output of the predicted class, or of the true class) is
back-propagated to one layer; each channel's weight is its gradient averaged over space,
separately for every time step of the layer; the map is ReLU(sum of weighted channels),
upsampled trilinearly to the clip and scaled to [0, 1] per clip.
"""
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from vov3d.visualization.layers import find_layer


class GradCAM:
    """Localisation maps of one named layer of `model` (default: the last stage, "s5")."""

    def __init__(self, model: torch.nn.Module, layer: str = "s5"):
        self.model = model
        self.layer = layer
        self._module = find_layer(model, layer)
        self._activation: Optional[torch.Tensor] = None
        self._gradient: Optional[torch.Tensor] = None

    def _keep(self, module, inputs, output) -> None:
        self._activation = output.detach().clone()  # later in-place ops (ReLU) must not change it
        if output.requires_grad:
            output.register_hook(self._keep_gradient)

    def _keep_gradient(self, grad: torch.Tensor) -> None:
        self._gradient = grad.detach()

    def __call__(self, clips: torch.Tensor, labels: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(maps [B, T, H, W] in [0, 1], eval-mode predictions [B, C]) for clips [B, 3, T, H, W];
        the maps explain `labels` when given, else each clip's top-1 class."""
        was_training = self.model.training
        self.model.eval()
        handle = self._module.register_forward_hook(self._keep)
        try:
            with torch.enable_grad():
                preds = self.model([clips.detach().clone()])  # the caller's clip stays as it was
                chosen = preds.argmax(dim=1) if labels is None else labels.to(preds.device).long()
                self.model.zero_grad(set_to_none=True)
                preds.gather(1, chosen.view(-1, 1)).sum().backward()
        finally:
            handle.remove()
            self.model.zero_grad(set_to_none=True)  # only the layer's gradient was wanted
            self.model.train(was_training)
        if self._activation is None or self._gradient is None:
            raise RuntimeError(f"layer '{self.layer}' took no part in computing the class score; "
                               "Grad-CAM needs a layer on the path to the output.")
        maps = self._localisation(self._activation, self._gradient, clips.shape[2:])
        self._activation = self._gradient = None
        return maps, preds.detach()

    @staticmethod
    def _localisation(activation: torch.Tensor, gradient: torch.Tensor, size) -> torch.Tensor:
        batch, channels, frames = gradient.shape[:3]
        weights = gradient.reshape(batch, channels, frames, -1).mean(dim=3)
        cam = F.relu((weights[..., None, None] * activation).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=tuple(size), mode="trilinear", align_corners=False)[:, 0]
        low = cam.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
        high = cam.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
        return ((cam - low) / (high - low + 1e-6)).cpu()


def overlay(frames: np.ndarray, cam: torch.Tensor, colormap: str = "viridis", alpha: float = 0.5) -> np.ndarray:
    """uint8 frames [T, H, W, 3] blended with the coloured map [T, H, W]: alpha * heat map +
    (1 - alpha) * frame, as PySlowFast draws it (GRAD_CAM.COLORMAP)."""
    from matplotlib import colormaps

    heat = colormaps[colormap](cam.numpy())[..., :3]
    return (alpha * heat * 255 + (1 - alpha) * frames.astype(np.float64)).round().clip(0, 255).astype(np.uint8)
