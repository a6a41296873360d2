"""TENSORBOARD.MODEL_VIS and WRONG_PRED_VIS: what a model sees and where it fails, written
to TensorBoard with PySlowFast's tags.

* `Layer Weights/<layer>`: the weights of each LAYER_LIST layer (MODEL_WEIGHTS);
* `Input <i>/Pathway 1`: test video i with its TOPK_PREDS predictions, under its Grad-CAM
  map when GRAD_CAM.ENABLE (INPUT_VIDEO or GRAD_CAM);
* `Input <i>/Activations: <layer>`: the layer's output for video i (ACTIVATIONS);
* `<WRONG_PRED_VIS.TAG>/Video <i>: <true class>`: each misclassified video whose true class
  is in WRONG_PRED_VIS.SUBSET_PATH (all classes when empty), with its predictions.
"""
import contextlib
import logging
from typing import Dict, List, Optional, Sequence

import torch

from vov3d.config.errors import ConfigError
from vov3d.visualization.class_names import read_class_subset
from vov3d.visualization.gradcam import GradCAM, overlay
from vov3d.visualization.layers import find_layer, grad_cam_layer, model_vis_layers
from vov3d.visualization.tensorboard import add_gif, add_tensor_grid
from vov3d.visualization.video import annotate, display_frames, label_colors, prediction_lines

logger = logging.getLogger(__name__)


class ModelVisualizer:
    def __init__(self, cfg, model: torch.nn.Module, writer, class_names: Sequence[str],
                 known_names: Optional[Sequence[str]] = None, channel_order: str = "rgb"):
        """`class_names` label the pictures; `known_names` (None if no file gives names) resolve
        WRONG_PRED_VIS.SUBSET_PATH."""
        tb = cfg.TENSORBOARD
        self.cfg, self.vis, self.wrong = cfg, tb.MODEL_VIS, tb.WRONG_PRED_VIS
        self.model, self.writer, self.names = model, writer, list(class_names)
        self.channel_order = channel_order
        self.layers = model_vis_layers(cfg) if self.vis.ENABLE else {}
        self.gradcam = GradCAM(model, grad_cam_layer(cfg)) if self.vis.ENABLE and self.vis.GRAD_CAM.ENABLE else None
        self.wrong_subset = None
        if self.wrong.ENABLE and self.wrong.SUBSET_PATH:
            self.wrong_subset = set(read_class_subset(self.wrong.SUBSET_PATH, known_names,
                                                      "TENSORBOARD.WRONG_PRED_VIS.SUBSET_PATH"))
        self.colors = label_colors(max(self.vis.TOPK_PREDS, 1) + 1, self.vis.COLORMAP)
        self.wrong_classes: set = set()
        self.tags: List[str] = []

    def write_weights(self) -> None:
        if not (self.vis.ENABLE and self.vis.MODEL_WEIGHTS):
            return
        for name in self.layers:
            layer = find_layer(self.model, name)
            if getattr(layer, "weight", None) is None:
                logger.warning("TENSORBOARD.MODEL_VIS.LAYER_LIST: layer %s has no weight to show.", name)
                continue
            self.tags.append(add_tensor_grid(self.writer, f"Layer Weights/{name.replace('.', '/')}",
                                             layer.weight, heat_map=False))

    @contextlib.contextmanager
    def _activations(self, store: Dict[str, torch.Tensor]):
        wanted = self.layers if self.vis.ENABLE and self.vis.ACTIVATIONS else {}
        handles = [find_layer(self.model, name).register_forward_hook(
            lambda module, inputs, output, name=name: store.__setitem__(name, output.detach().clone()))
            for name in wanted]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def write_batch(self, clips: torch.Tensor, labels: torch.Tensor, first_index: int) -> None:
        """Everything switched on, for clips [B, 3, T, H, W] of test videos first_index, ...."""
        activations: Dict[str, torch.Tensor] = {}
        self.model.eval()
        maps = None
        if self.gradcam is None or (self.vis.ENABLE and self.vis.ACTIVATIONS and self.layers):
            with self._activations(activations), torch.no_grad():
                preds = self.model([clips])
        if self.gradcam is not None:  # its forward gives the predictions too
            maps, preds = self.gradcam(clips, labels if self.vis.GRAD_CAM.USE_TRUE_LABEL else None)
        preds, labels = preds.float().cpu(), labels.long().cpu()
        for b in range(clips.shape[0]):
            self._write_video(first_index + b, clips[b], preds[b], int(labels[b]),
                              None if maps is None else maps[b], {k: v[b] for k, v in activations.items()})

    def _frames(self, clip: torch.Tensor):
        data = self.cfg.DATA
        return display_frames(clip, data.MEAN, data.STD, data.REVERSE_INPUT_CHANNEL, self.channel_order)

    def _write_video(self, index: int, clip, scores, label: int, cam, activations) -> None:
        frames = None
        if self.vis.ENABLE and (self.vis.INPUT_VIDEO or cam is not None):
            frames = self._frames(clip)
            shown = overlay(frames, cam, self.vis.GRAD_CAM.COLORMAP) if cam is not None else frames
            lines = prediction_lines(scores, self.names, self.vis.TOPK_PREDS)
            self.tags.append(add_gif(self.writer, f"Input {index}/Pathway 1", annotate(shown, lines, self.colors)))
        for name, value in activations.items():
            self.tags.append(add_tensor_grid(self.writer, f"Input {index}/Activations: {name.replace('.', '/')}",
                                             _indexed(value, self.layers[name], name)))
        predicted = int(scores.argmax())
        if self.wrong.ENABLE and predicted != label and (self.wrong_subset is None or label in self.wrong_subset):
            self.wrong_classes.add(label)
            frames = self._frames(clip) if frames is None else frames
            lines = [f"[GT] {self.names[label]}"] + prediction_lines(scores, self.names, max(self.vis.TOPK_PREDS, 1))
            self.tags.append(add_gif(self.writer, f"{self.wrong.TAG}/Video {index}: {self.names[label]}",
                                     annotate(frames, lines, self.colors)))

    def log_wrong_classes(self) -> None:
        if self.wrong.ENABLE:
            logger.info("Classes with wrongly predicted videos: %s",
                        ", ".join(sorted(self.names[i] for i in self.wrong_classes)) or "none")


def _indexed(value: torch.Tensor, index, name: str) -> torch.Tensor:
    """A layer's output for one video with the LAYER_LIST entry's index applied."""
    if not index:
        return value
    try:
        return value[tuple(torch.tensor(i) for i in index)]
    except (IndexError, RuntimeError) as e:
        raise ConfigError(f"TENSORBOARD.MODEL_VIS.LAYER_LIST: the index of {name.replace('.', '/')} does not fit "
                          f"its output of shape {list(value.shape)} ({e}).") from None
