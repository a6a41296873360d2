"""CoX3D (Hedegaard & Iosifidis, ECCV 2022): X3D that also runs on a live stream, frame by frame.

`CoX3D` is `X3D` plus a streaming path. It has X3D's modules, so its state dict is X3D's
(same keys, same order): X3D checkpoints load strictly and CoX3D checkpoints are X3D
checkpoints. Clip mode (`model(clip)`) is X3D's forward, used for training and clip tests.

Stream mode evaluates the same weights one frame at a time with the operators of
`vov3d.models.continual`: the temporal convolutions (the stem's 5x1x1, every block's 3x3x3)
keep their last frames, each residual skip is delayed by its branch's one-frame lag,
squeeze-excitation squeezes each frame (`COX3D.SE_SCOPE frame`, the published setting) or
the last NUM_FRAMES frames (`window`), and the head averages the last
`COX3D.TEMPORAL_WINDOW` frames (0 = DATA.NUM_FRAMES; 64 gives the paper's extended
receptive field at no extra cost per frame).

There is one implementation of a step, the pure function `stream_step(frame, *state) ->
(scores, valid, *new_state)`: every frame memory (temporal convolution caches, delay lines,
SE and head windows) and the frame counter are explicit tensors, `initial_state(batch,
height, width)` gives the start of a stream, and the graph is the same at every frame
(warm-up included), so it exports as is (TorchScript, torch.export, ONNX). `forward_step`
is that function with the state kept on the model.

What the stream output is: after `delay` frames with no output, the output
at frame n equals the same weights run with front-only temporal padding (fill
`COX3D.TEMPORAL_FILL`) and per-frame SE over the frames seen so far; from frame
`receptive_field - 1` on it no longer depends on the fill and equals the padding-free
network on the last `receptive_field` frames. It is *not* X3D's output on the last
NUM_FRAMES-frame clip: X3D zero-pads every temporal convolution at both clip ends.

Streaming needs eval mode (BN with running statistics), runs without autograd, and keeps
its state outside the state dict; call `reset()` between videos.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from vov3d.config.errors import ConfigError
from vov3d.models.continual import FILL_MODES, SE_SCOPES
from vov3d.models.cox3d_stream import BlockStep, HeadStep, StemStep
from vov3d.models.registry import MODEL_REGISTRY
from vov3d.models.x3d import X3D


@MODEL_REGISTRY.register()
class CoX3D(X3D):
    """X3D with a continual streaming path (see the module docstring).

    * ``model(clip)``: X3D's clip forward (training, clip testing); (N, K).
    * ``model.stream_step(frame, *state, logits=False)``: the pure per-frame step; frame
      (N, 3, H, W) -> (scores (N, K), valid (bool scalar), *new_state). ``scores`` mean
      nothing while ``valid`` is False (the warm-up).
    * ``model.initial_state(batch, height, width)``: the state that starts a stream;
      ``stream_state_names()`` names its tensors.
    * ``model.forward_step(frame)``: the step with the state kept on the model: None for
      the first ``delay`` frames after a reset, then (N, K) per frame: probabilities
      (HEAD_ACT) or, with ``logits=True``, the logits (mean over head positions when the
      frame is larger than the training crop).
    * ``model.forward_steps(frames)``: a chunk (N, 3, L, H, W) continuing the same stream ->
      (N, K, L') holding the outputs of the chunk's frames that produce one (L' = L once
      warm), or None if none does. Equal to stacking ``forward_step`` on each frame.
    * ``model.reset()``: start a new stream (a new video, another batch size or size).
    * ``delay`` (frames without output after a reset) and ``receptive_field`` (frames one
      output depends on) are read-only.
    """

    def __init__(self, cfg):
        c = cfg.COX3D
        if c.TEMPORAL_FILL not in FILL_MODES:
            raise ConfigError(f"COX3D.TEMPORAL_FILL is {c.TEMPORAL_FILL!r}; expected one of "
                              f"{list(FILL_MODES)}.")
        if c.SE_SCOPE not in SE_SCOPES:
            raise ConfigError(f"COX3D.SE_SCOPE is {c.SE_SCOPE!r}; expected one of "
                              f"{list(SE_SCOPES)}.")
        if c.TEMPORAL_WINDOW < 0:
            raise ConfigError(f"COX3D.TEMPORAL_WINDOW is {c.TEMPORAL_WINDOW}; expected >= 1 "
                              "frames, or 0 for DATA.NUM_FRAMES.")
        super().__init__(cfg)
        self.temporal_window = c.TEMPORAL_WINDOW or cfg.DATA.NUM_FRAMES
        self.temporal_fill = c.TEMPORAL_FILL
        self.se_scope = c.SE_SCOPE
        # Plain attributes, not submodules: streaming adds nothing to the state dict.
        blocks = [(f"s{n}.{name}", block) for n, stage in enumerate((self.s2, self.s3, self.s4, self.s5), 2)
                  for name, block in stage.named_children()]
        self._parts = ([("s1.pathway0_stem", StemStep(self.s1.pathway0_stem, self.temporal_fill))]
                       + [(name, BlockStep(block, self.temporal_fill, self.se_scope, cfg.DATA.NUM_FRAMES))
                          for name, block in blocks]
                       + [("head", HeadStep(self.head, self.temporal_window))])
        # Frames of the stream that pass before each part receives its first one.
        self._offsets = [sum(part.delay for _, part in self._parts[:i]) for i in range(len(self._parts))]
        self._num_states = 1 + sum(part.num_states for _, part in self._parts)
        self._state_shapes: Dict[Tuple[int, int, int], List[torch.Size]] = {}
        self._state: Optional[Tuple[torch.Tensor, ...]] = None
        self._signature = None

    @property
    def delay(self) -> int:
        """Frames consumed after a reset before the first output."""
        return sum(part.delay for _, part in self._parts)

    @property
    def receptive_field(self) -> int:
        """Consecutive frames one output depends on; from this many frames on, outputs no
        longer depend on the start-of-stream fill (steady state)."""
        return 1 + sum(part.receptive_field - 1 for _, part in self._parts)

    # -- the functional step ------------------------------------------------------------
    def stream_state_names(self) -> List[str]:
        """One name per state tensor, in the order of `initial_state` (the first, "step",
        counts the frames fed so far)."""
        names = ["step"]
        for name, part in self._parts:
            names += part.state_names(name)
        return names

    def stream_step(self, frame: torch.Tensor, *state: torch.Tensor, logits: bool = False):
        """One frame (N, C, H, W) and the stream's state -> (scores (N, K), valid, *new_state)."""
        if len(state) != self._num_states:
            raise ValueError(f"CoX3D.stream_step takes {self._num_states} state tensors "
                             f"(see initial_state), got {len(state)}.")
        scores, new_state = self._run_parts(frame, state[1:], state[0], logits)
        return (scores, state[0] >= self.delay, state[0] + 1, *new_state)

    def _run_parts(self, frame: torch.Tensor, state: Optional[Sequence[torch.Tensor]],
                   step: torch.Tensor, logits: bool):
        x, new_state, start = frame.unsqueeze(2), [], 0
        for (_, part), offset in zip(self._parts, self._offsets):
            part_state = None if state is None else state[start:start + part.num_states]
            start += part.num_states
            if isinstance(part, HeadStep):
                x, part_state = part.step(x, part_state, step - offset, logits)
            else:
                x, part_state = part.step(x, part_state, step - offset)
            new_state += part_state
        return x, new_state

    def initial_state(self, batch: int, height: int, width: int, device=None,
                      dtype: Optional[torch.dtype] = None) -> Tuple[torch.Tensor, ...]:
        """The state that starts a stream of (batch, C, height, width) frames: a zero frame
        counter and all-zero frame memories, on the model's device and dtype by default."""
        weight = self.s1.pathway0_stem.conv_xy.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        channels = self.s1.pathway0_stem.conv_xy.in_channels
        shapes = self._state_shapes.get((channels, height, width))
        if shapes is None:
            shapes = self._probe_state_shapes(channels, height, width)
            self._state_shapes[(channels, height, width)] = shapes
        return (torch.zeros((), dtype=torch.int64, device=device),
                *(torch.zeros((batch,) + shape, device=device, dtype=dtype) for shape in shapes))

    def _probe_state_shapes(self, channels: int, height: int, width: int) -> List[torch.Size]:
        """Per-sample state shapes, read off one step of a zero frame from no state (one
        frame's compute, once per frame size; meta tensors would import torch's compiler)."""
        weight = self.s1.pathway0_stem.conv_xy.weight
        frame = torch.zeros(1, channels, height, width, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            _, state = self._run_parts(frame, None, torch.zeros((), dtype=torch.int64, device=weight.device),
                                       logits=True)
        return [s.shape[1:] for s in state]

    # -- the stateful wrapper -------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: the next frame starts a new one (with a new warm-up)."""
        self._state = None
        self._signature = None

    def forward_step(self, frame: torch.Tensor, logits: bool = False) -> Optional[torch.Tensor]:
        """Feed one frame (N, 3, H, W); returns (N, K) or None during the warm-up."""
        if not torch.is_tensor(frame) or frame.dim() != 4:
            shape = tuple(frame.shape) if torch.is_tensor(frame) else type(frame).__name__
            raise ValueError(f"CoX3D.forward_step takes one frame of shape (N, C, H, W), got "
                             f"{shape}; use forward_steps for (N, C, T, H, W) chunks.")
        if self.training:
            raise RuntimeError("CoX3D streams in eval mode only (BN needs its running statistics "
                               "on single frames): call model.eval() first. Train in clip mode.")
        self._check_stream(frame)
        if self._state is None:
            self._state = self.initial_state(frame.shape[0], frame.shape[2], frame.shape[3],
                                             frame.device, frame.dtype)
        with torch.no_grad():
            scores, valid, *state = self.stream_step(frame, *self._state, logits=logits)
        self._state = tuple(state)
        return scores if bool(valid) else None

    def forward_steps(self, frames: torch.Tensor, logits: bool = False) -> Optional[torch.Tensor]:
        """Feed a chunk (N, 3, L, H, W) of consecutive frames; returns (N, K, L') or None."""
        if not torch.is_tensor(frames) or frames.dim() != 5:
            shape = tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
            raise ValueError(f"CoX3D.forward_steps takes frames of shape (N, C, T, H, W), got "
                             f"{shape}; use forward_step for one (N, C, H, W) frame.")
        if frames.shape[2] == 0:
            raise ValueError("CoX3D.forward_steps got a chunk of 0 frames.")
        outs = [self.forward_step(frames[:, :, t], logits) for t in range(frames.shape[2])]
        outs = [out for out in outs if out is not None]
        return torch.stack(outs, dim=2) if outs else None

    def _check_stream(self, frame: torch.Tensor) -> None:
        """The first frame after a reset fixes batch, channels, size, dtype and device."""
        signature = tuple(frame.shape) + (frame.dtype, frame.device)
        if self._signature is None:
            self._check_first_frame(frame)
            self._signature = signature
            return
        if signature == self._signature:
            return
        names = ("batch size", "channels", "height", "width", "dtype", "device")
        changed = [f"{name} {old} -> {new}"
                   for name, old, new in zip(names, self._signature, signature) if old != new]
        raise ValueError(f"CoX3D stream input changed mid-stream ({', '.join(changed)}); every "
                         "frame of a stream must match the first one. Call model.reset() to "
                         "start a new stream.")

    def _check_first_frame(self, frame: torch.Tensor) -> None:
        stem = self.s1.pathway0_stem
        if frame.shape[1] != stem.conv_xy.in_channels:
            raise ValueError(f"CoX3D expects frames with {stem.conv_xy.in_channels} channels, got "
                             f"{frame.shape[1]} (input shape {tuple(frame.shape)}).")
        size = list(frame.shape[2:])
        convs = [stem.conv_xy] + [m for _, part in self._parts if isinstance(part, BlockStep)
                                  for m in (part.block.branch2.a, part.block.branch2.b)]
        for conv in convs:
            for i in (0, 1):
                k, s, p, d = (conv.kernel_size[i + 1], conv.stride[i + 1], conv.padding[i + 1],
                              conv.dilation[i + 1])
                size[i] = (size[i] + 2 * p - d * (k - 1) - 1) // s + 1
        need = self.head.pool_size[1:]
        if size[0] < need[0] or size[1] < need[1]:
            raise ValueError(f"frames of {frame.shape[2]}x{frame.shape[3]} px leave a {size[0]}x{size[1]} "
                             f"final map, smaller than the head's {need[0]}x{need[1]} pooling "
                             "window fixed by DATA.TRAIN_CROP_SIZE; feed frames at least as "
                             "large as the training crop.")


def stream_macs_per_frame(model: CoX3D, height: int, width: int, batch: int = 1) -> int:
    """Multiply-adds of the convolutions and linear layers in one stream step for
    (batch, C, height, width) frames, counted on a meta-device copy (no data touched). Every
    step runs the same graph, so this is the steady-state cost."""
    meta = copy.deepcopy(model, memo={id(model._state): None}).to("meta").eval()
    meta.reset()
    channels = meta.s1.pathway0_stem.conv_xy.in_channels
    state = meta.initial_state(batch, height, width)
    frame = torch.empty(batch, channels, height, width, device="meta", dtype=state[1].dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta.stream_step(frame, *state)
    return counter.get_total_flops() // 2
