"""Stream frames through an exported CoX3D step with ONNX Runtime and numpy alone (this
module imports neither PyTorch nor the rest of vov3d, so it can be copied next to the
.onnx file):

    stream = OnnxStream("cox3d_step.onnx")
    state = stream.initial_state(batch=1)
    for frame in frames:                      # (1, 3, S, S) float32, prepared as metadata["input"] says
        scores, valid, state = stream.step(frame, state)
        if valid:
            print(stream.class_names[int(scores[0].argmax())])

The state is whatever the graph's inputs after "frame" are: a zero frame counter and
all-zero frame memories to start, then the step's own outputs.
"""
import json
from typing import List, Optional, Sequence, Tuple

import numpy as np

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
           "tensor(float16)": np.float16}


class OnnxStream:
    def __init__(self, path: str, threads: int = 1, providers: Sequence[str] = ("CPUExecutionProvider",)):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=list(providers))
        self.metadata = json.loads(self.session.get_modelmeta().custom_metadata_map.get("vov3d", "{}"))
        if self.metadata.get("mode") != "step":
            raise ValueError(f"{path} is not an exported CoX3D step (its metadata says mode "
                             f"{self.metadata.get('mode')!r}); export it with --mode step.")
        self._inputs = self.session.get_inputs()
        self.class_names: List[str] = self.metadata["class_names"]
        self.delay: int = self.metadata["delay"]
        self.frame_shape = self._inputs[0].shape  # [batch, C, S, S], batch symbolic or fixed

    def initial_state(self, batch: int = 1, height: Optional[int] = None,
                      width: Optional[int] = None) -> List[np.ndarray]:
        """The state that starts a stream of `batch` frames (zeros of the graph's state
        inputs); the frame size is the exported one, which `height`/`width` may confirm."""
        exported = tuple(self.frame_shape[2:])
        if (height, width) != (None, None) and (height, width) != exported:
            raise ValueError(f"this step was exported for {exported[0]}x{exported[1]} frames, not "
                             f"{height}x{width}; export it again at that size (DATA.TEST_CROP_SIZE).")
        state = []
        for spec in self._inputs[1:]:
            shape = [batch if not isinstance(d, int) else d for d in spec.shape]
            if shape and isinstance(spec.shape[0], int) and spec.shape[0] != batch:
                raise ValueError(f"this step was exported for a batch of {spec.shape[0]}, not {batch}; "
                                 "export it with --batch dynamic.")
            state.append(np.zeros(shape, dtype=_DTYPES[spec.type]))
        return state

    def step(self, frame: np.ndarray, state: Sequence[np.ndarray]) -> Tuple[np.ndarray, bool, List[np.ndarray]]:
        """(scores (N, K), valid, new state); scores mean nothing until valid (the warm-up)."""
        feed = {self._inputs[0].name: np.ascontiguousarray(frame, dtype=np.float32)}
        feed.update((spec.name, value) for spec, value in zip(self._inputs[1:], state))
        scores, valid, *state = self.session.run(None, feed)
        return scores, bool(valid), state
