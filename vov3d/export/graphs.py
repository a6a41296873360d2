"""What an export traces, with example inputs, names, the batch axes and the metadata a
deployment needs to feed it (input geometry, normalisation, class names).

* "clip": any registered model (CoX3D included) in eval mode: a (N, C, T, S, S) clip,
  T = DATA.NUM_FRAMES, S = DATA.TEST_CROP_SIZE (what testing and the demo feed) ->
  (N, NUM_CLASSES) scores (HEAD_ACT applied, averaged over the head's positions).
* "step": CoX3D's per-frame step: (frame (N, C, S, S), *state) -> (scores (N, K), valid,
  *new_state); `state` starts as CoX3D.initial_state(N, S, S) (all zeros, the counter 0).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from yacs.config import CfgNode

import vov3d

MODES = ("clip", "step")


class StreamStep(torch.nn.Module):
    """CoX3D.stream_step as a module's forward (the model is held, its state dict untouched)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor, *state: torch.Tensor):
        return self.model.stream_step(frame, *state)


@dataclass
class ExportGraph:
    mode: str
    module: torch.nn.Module
    example: Tuple[torch.Tensor, ...]
    input_names: List[str]
    output_names: List[str]
    batched_inputs: List[bool]  # which inputs have a batch axis (dim 0)
    metadata: Dict[str, Any] = field(default_factory=dict)


def _metadata(cfg: CfgNode, mode: str, class_names: List[str], input_shape: Tuple[int, ...]) -> Dict[str, Any]:
    data = cfg.DATA
    return {
        "vov3d_version": vov3d.__version__, "torch_version": torch.__version__,
        "model_name": cfg.MODEL.MODEL_NAME, "mode": mode, "num_classes": cfg.MODEL.NUM_CLASSES,
        "class_names": list(class_names), "head_act": cfg.MODEL.HEAD_ACT,
        "input_shape": list(input_shape),
        "input": {"crop_size": input_shape[-1], "num_frames": data.NUM_FRAMES,
                  "sampling_rate": data.SAMPLING_RATE, "target_fps": data.TARGET_FPS,
                  "mean": list(data.MEAN), "std": list(data.STD),
                  "reverse_input_channel": data.REVERSE_INPUT_CHANNEL,
                  "preparation": "RGB uint8 frames, short side resized to crop_size, centre crop, "
                                 "x / 255 - mean, / std per channel"},
    }


def clip_graph(model: torch.nn.Module, cfg: CfgNode, class_names: List[str], batch: int,
               size: Optional[int] = None) -> ExportGraph:
    """`size` (default DATA.TEST_CROP_SIZE) is the side of the clip's frames."""
    channels = cfg.DATA.INPUT_CHANNEL_NUM[0]
    size = size or cfg.DATA.TEST_CROP_SIZE
    clip = torch.randn(batch, channels, cfg.DATA.NUM_FRAMES, size, size)
    return ExportGraph("clip", model.eval(), (clip,), ["clip"], ["scores"], [True],
                       _metadata(cfg, "clip", class_names, tuple(clip.shape)))


def step_graph(model: torch.nn.Module, cfg: CfgNode, class_names: List[str], batch: int,
               size: Optional[int] = None) -> ExportGraph:
    """`size` (default DATA.TEST_CROP_SIZE) is the side of the frames."""
    from vov3d.models.cox3d import CoX3D

    if not isinstance(model, CoX3D):
        raise TypeError(f"the per-frame step is CoX3D's; got {type(model).__name__}.")
    channels = cfg.DATA.INPUT_CHANNEL_NUM[0]
    size = size or cfg.DATA.TEST_CROP_SIZE
    model.eval()
    state = model.initial_state(batch, size, size)
    names = model.stream_state_names()
    frame = torch.randn(batch, channels, size, size)
    metadata = _metadata(cfg, "step", class_names, tuple(frame.shape))
    metadata.update(delay=model.delay, receptive_field=model.receptive_field, state_names=names,
                    state_shapes=[list(s.shape[1:]) if i else [] for i, s in enumerate(state)])
    return ExportGraph("step", StreamStep(model).eval(), (frame, *state), ["frame", *names],
                       ["scores", "valid", *(f"next.{n}" for n in names)],
                       [True] + [i > 0 for i in range(len(state))], metadata)
