"""Every model family in every export format gives the eager model's outputs; the files carry
their metadata and reload in a fresh process that cannot import vov3d."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch

from tests.conftest import PYTHON
from tests.export.export_helpers import FAMILIES, NAMES, NUM_CLASSES, family_cfg, sensitive
from vov3d.export.check import ExportCheckError, check_clip
from vov3d.export.formats import FORMATS, export_graph, load_runner, read_metadata
from vov3d.export.graphs import clip_graph
from vov3d.models import MODEL_REGISTRY, build_model

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "exported": ".pt2"}


def test_every_registered_family_is_covered():
    assert set(FAMILIES) == set(MODEL_REGISTRY.names())


def relative(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_exports_to_every_format_with_eager_outputs(family, tmp_path):
    cfg = family_cfg(family)
    model = sensitive(build_model(cfg))
    graph = clip_graph(model, cfg, NAMES, batch=2)
    crop = cfg.DATA.TEST_CROP_SIZE
    assert graph.metadata["input_shape"] == [2, 3, 4, crop, crop]
    clip = torch.randn(3, 3, 4, crop, crop, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(clip).numpy()
    # Far from uniform, so an export that drops or changes a layer cannot pass.
    assert want.shape == (3, NUM_CLASSES) and (want.max(axis=1) - want.min(axis=1)).min() > 0.05
    for fmt in FORMATS:
        path = str(tmp_path / f"{family}{SUFFIX[fmt]}")
        metadata = export_graph(graph, path, fmt, dynamic_batch=True)
        run = load_runner(path, fmt)
        got = run([clip.numpy()])[0]
        assert got.shape == want.shape and relative(got, want) <= 1e-4, fmt
        report = check_clip(graph, run, dynamic_batch=True)
        assert report.cases == 3 and report.max_relative <= 1e-4
        stored = read_metadata(path, fmt)
        assert stored == metadata
        assert stored["class_names"] == NAMES and stored["model_name"] == family
        assert stored["torch_version"] == torch.__version__ and stored["mode"] == "clip"
        assert stored["input"]["mean"] == list(cfg.DATA.MEAN) and stored["input"]["crop_size"] == crop
        if fmt == "onnx":
            import onnx

            onnx.checker.check_model(path, full_check=True)
            assert stored["opset"] >= 18
            assert [d.dim_param for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim[:1]] == ["batch"]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_a_fixed_batch_is_baked_in_and_a_wrong_model_fails_the_check(tmp_path):
    cfg = family_cfg("X3D")
    model = sensitive(build_model(cfg))
    graph = clip_graph(model, cfg, NAMES, batch=1)
    path = str(tmp_path / "x3d.pt")
    export_graph(graph, path, "torchscript", dynamic_batch=False)
    run = load_runner(path, "torchscript")
    assert check_clip(graph, run, dynamic_batch=False).cases == 1
    # The check compares with the graph's module: a file of other weights fails it.
    other = clip_graph(sensitive(build_model(cfg), seed=1), cfg, NAMES, batch=1)
    with pytest.raises(ExportCheckError, match="differ from the eager model's"):
        check_clip(other, run, dynamic_batch=False)


RELOAD = """
import sys
sys.modules["vov3d"] = None  # the project's code cannot be imported here
import numpy as np
import torch
x = np.load("clip.npy")
module = torch.jit.load("model.pt") if sys.argv[1] == "torchscript" else torch.export.load("model.pt2").module()
with torch.no_grad():
    np.save("out.npy", module(torch.from_numpy(x)).numpy())
"""


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_artefacts_reload_in_a_fresh_process_without_the_project(fmt, tmp_path):
    cfg = family_cfg("X3D")
    model = sensitive(build_model(cfg))
    graph = clip_graph(model, cfg, NAMES, batch=2)
    export_graph(graph, str(tmp_path / ("model.pt" if fmt == "torchscript" else "model.pt2")), fmt, True)
    clip = torch.randn(3, 3, 4, 32, 32)
    np.save(tmp_path / "clip.npy", clip.numpy())
    (tmp_path / "reload.py").write_text(RELOAD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([PYTHON, "reload.py", fmt], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    with torch.no_grad():
        want = model(clip).numpy()
    assert relative(np.load(tmp_path / "out.npy"), want) <= 1e-4
    # Reading the metadata needs no model code either.
    assert json.loads(json.dumps(read_metadata(str(next(tmp_path.glob("model.pt*"))), fmt)))["num_classes"] == 5
