"""tools/export_model.py: a checkpoint to a checked file with its metadata; every bad input
refused in one line before anything is traced or written."""
import os
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT, import_tool
from tests.export.export_helpers import FAMILIES, NAMES, family_cfg
from vov3d.export.formats import read_metadata
from vov3d.models import build_model

TOOL = os.path.join(REPO_ROOT, "tools", "export_model.py")


@pytest.fixture(scope="module")
def tool():
    return import_tool("export_model")


def argv(family, *extra):
    """The tiny family config as --cfg plus overrides (the family's depth and sizes)."""
    path, shallow, crop = FAMILIES[family]
    return ["--cfg", os.path.join(REPO_ROOT, path), *extra, "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", str(crop),
            "DATA.TEST_CROP_SIZE", str(crop), "DATA.TRAIN_JITTER_SCALES", f"[{crop}, {crop}]", "MODEL.NUM_CLASSES",
            "5", *shallow]


@pytest.fixture
def x3d_checkpoint(tmp_path):
    model = build_model(family_cfg("X3D"))
    path = tmp_path / "x3d.pyth"
    torch.save({"model_state": model.state_dict(), "epoch": 4, "class_names": NAMES}, path)
    return str(path)


def test_exports_a_checkpoint_with_its_class_names_and_checks_it(tool, tmp_path, x3d_checkpoint, capsys):
    out = str(tmp_path / "x3d.pt")
    assert tool.main(argv("X3D", "--checkpoint", x3d_checkpoint, "--format", "torchscript", "--out", out,
                          "--batch", "dynamic", "--check")) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith(f"wrote {out} (torchscript, torch {torch.__version__}): X3D clip, input "
                                 "['N', 3, 4, 32, 32], 5 classes (the 5 stored in")
    assert printed[0].endswith(f"weights {x3d_checkpoint}")
    assert printed[1].startswith("check: 3 clips, max relative difference")
    metadata = read_metadata(out, "torchscript")
    assert metadata["class_names"] == NAMES and metadata["mode"] == "clip"

    step = str(tmp_path / "step.pt2")  # an X3D checkpoint streams as CoX3D
    assert tool.main(argv("X3D", "--checkpoint", x3d_checkpoint, "--format", "exported", "--out", step,
                          "--mode", "step", "--check")) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert "CoX3D step, input [1, 3, 32, 32]" in printed[0]
    assert printed[1].startswith("check: 120 stream frames (warm-up included), max relative difference")
    assert read_metadata(step, "exported")["state_names"][0] == "step"


def test_bad_input_is_refused_before_tracing(tool, tmp_path, x3d_checkpoint, capsys, monkeypatch):
    out = tmp_path / "model.pt"

    def refused(code, needle, *args, family="X3D"):
        assert tool.main(argv(family, "--out", str(out), *args)) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
        assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    refused(2, "config error: RESNET.TRANS_FUNC is 'bottleneck_transform'; X3D is built from",
            "--format", "torchscript", "--checkpoint", x3d_checkpoint, "RESNET.TRANS_FUNC", "bottleneck_transform")
    refused(2, "ALLOW_RANDOM_INIT", "--format", "torchscript", "OUTPUT_DIR", str(tmp_path / "run"))
    wide = tmp_path / "wide.pyth"
    model = build_model(family_cfg("X3D", "X3D.DIM_C5", "96"))
    torch.save({"model_state": model.state_dict()}, wide)
    refused(1, f"CheckpointError: testing needs exactly this model's weights, but 2 tensors of '{wide}' do not "
            "fit: head.lin_5.weight "
            "(checkpoint [96, 432, 1, 1, 1], model [2048, 432, 1, 1, 1])", "--format", "torchscript",
            "--checkpoint", str(wide))
    refused(2, f"--out '{tmp_path / 'no' / 'model.pt'}': the folder {tmp_path / 'no'} does not exist",
            "--format", "torchscript", "--checkpoint", x3d_checkpoint, "--out", str(tmp_path / "no" / "model.pt"))
    refused(2, "--mode step exports CoX3D's per-frame step; MODEL.MODEL_NAME is 'CSN'", "--format", "torchscript",
            "--mode", "step", family="CSN")
    for name in ("onnx", "onnxscript"):  # as if the export extra were not installed (nor imported)
        monkeypatch.setitem(sys.modules, name, None)
    refused(1, "MissingExtraError: ONNX export needs the package(s) onnx, onnxscript, not installed here: pip "
            "install 'vov3d[export]'",
            "--format", "onnx", "--checkpoint", x3d_checkpoint)
