"""CoX3D's exported per-frame step equals the eager forward_step frame by frame, through
the warm-up and the steady state, in every format; an exported ONNX step streams with
ONNX Runtime and numpy in a process where PyTorch cannot be imported."""
import os
import subprocess

import numpy as np
import pytest
import torch

from tests.conftest import PYTHON, REPO_ROOT
from tests.export.export_helpers import NAMES, family_cfg, sensitive
from tests.models.test_cox3d import randomise
from vov3d.export.check import STREAM_FRAMES, check_step
from vov3d.export.formats import export_graph, load_runner, read_metadata
from vov3d.export.graphs import step_graph
from vov3d.models import build_model

# Every kind of state: replicate fill (the first-frame copy), window SE, a 3-frame head window.
STREAM = ["COX3D.TEMPORAL_WINDOW", "3", "COX3D.TEMPORAL_FILL", "replicate", "COX3D.SE_SCOPE", "window"]


def tiny_cox3d():
    cfg = family_cfg("CoX3D", *STREAM)
    model = randomise(build_model(cfg), seed=4)
    return cfg, sensitive(model, seed=4)


def stream_frames(count, batch=2, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 32, 32, generator=g) for _ in range(count)]


@pytest.mark.slow
def test_onnx_step_equals_forward_step_frame_by_frame(tmp_path):
    cfg, model = tiny_cox3d()
    graph = step_graph(model, cfg, NAMES, batch=2)
    path = str(tmp_path / "step.onnx")
    metadata = export_graph(graph, path, "onnx", dynamic_batch=True)
    assert metadata["delay"] == model.delay and metadata["state_names"] == model.stream_state_names()
    assert read_metadata(path, "onnx")["receptive_field"] == model.receptive_field < STREAM_FRAMES
    run = load_runner(path, "onnx")
    state = [s.numpy() for s in model.initial_state(2, 32, 32)]
    model.reset()
    outputs, worst = 0, 0.0
    for t, frame in enumerate(stream_frames(STREAM_FRAMES)):
        want = model.forward_step(frame)
        scores, valid, *state = run([frame.numpy(), *state])
        assert bool(valid) == (want is not None) == (t >= model.delay), t
        assert int(state[0]) == t + 1
        if want is not None:
            outputs += 1
            assert (want.max(dim=1).values - want.min(dim=1).values).min() > 0.05  # not uniform
            worst = max(worst, float(np.abs(scores - want.numpy()).max() / want.abs().max()))
    assert outputs == STREAM_FRAMES - model.delay and worst <= 1e-4


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_torch_step_formats_equal_forward_step(fmt, tmp_path):
    cfg, model = tiny_cox3d()
    graph = step_graph(model, cfg, NAMES, batch=2)
    path = str(tmp_path / f"step.{fmt}")
    export_graph(graph, path, fmt, dynamic_batch=True)
    report = check_step(graph, load_runner(path, fmt))
    assert report.cases == STREAM_FRAMES and report.max_relative <= 1e-4


NO_TORCH = """
import sys
sys.modules["torch"] = None  # ONNX Runtime and numpy only
import numpy as np
from vov3d.export.onnx_stream import OnnxStream
stream = OnnxStream(sys.argv[1])
frames = np.load(sys.argv[2])
state = stream.initial_state(batch=frames.shape[1], height=32, width=32)
scores = []
for frame in frames:
    out, valid, state = stream.step(frame, state)
    scores.append(out if valid else np.full_like(out, np.nan))
np.save(sys.argv[3], np.stack(scores))
print(stream.delay, stream.class_names[0], "torch" in sys.modules and sys.modules["torch"] is not None)
"""


@pytest.mark.slow
def test_an_onnx_step_streams_without_pytorch(tmp_path):
    cfg, model = tiny_cox3d()
    path = str(tmp_path / "step.onnx")
    export_graph(step_graph(model, cfg, NAMES, batch=1), path, "onnx", dynamic_batch=False)
    frames = stream_frames(model.delay + 6, batch=1)
    np.save(tmp_path / "frames.npy", torch.stack(frames).numpy())
    (tmp_path / "stream.py").write_text(NO_TORCH)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([PYTHON, "stream.py", path, "frames.npy", "scores.npy"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(model.delay), NAMES[0], "False"]
    got = np.load(tmp_path / "scores.npy")
    model.reset()
    for t, frame in enumerate(frames):
        want = model.forward_step(frame)
        assert np.isnan(got[t]).all() == (want is None)
        if want is not None:
            assert np.abs(got[t] - want.numpy()).max() <= 1e-4 * want.abs().max()
