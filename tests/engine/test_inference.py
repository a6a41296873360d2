"""A trained model for the demo, stream_net and export: weights by the test rules, class
names from a label file, the checkpoint, or ids."""
import json

import pytest
import torch

from tests.export.export_helpers import NAMES, family_cfg
from vov3d.config import ConfigError
from vov3d.engine.inference import load_inference_model, resolve_class_names, with_checkpoint
from vov3d.models import build_model
from vov3d.utils.checkpoint_io import CheckpointError


def test_class_names_come_from_the_label_file_then_the_checkpoint_then_ids():
    stored = ["a", "b", "c"]
    assert resolve_class_names(None, "L", None, None, 3).names == ["class 0", "class 1", "class 2"]
    from_ckpt = resolve_class_names(None, "L", stored, "m.pyth", 3)
    assert from_ckpt.names == stored and from_ckpt.origin == "the 3 stored in 'm.pyth'" and not from_ckpt.warning
    same = resolve_class_names(stored, "L", stored, "m.pyth", 3)
    assert same.names == stored and same.warning is None and same.origin == "L"
    translated = resolve_class_names(["a", "B", "C"], "DEMO.LABEL_FILE_PATH", stored, "m.pyth", 3)
    assert translated.names == ["a", "B", "C"]
    assert translated.warning == ("DEMO.LABEL_FILE_PATH differs from the class names stored in 'm.pyth' (label 1 "
                                  "is 'B' in DEMO.LABEL_FILE_PATH, 'b' in the checkpoint); showing the "
                                  "DEMO.LABEL_FILE_PATH names.")
    with pytest.raises(CheckpointError, match=r"checkpoint 'm.pyth' stores 3 class names; MODEL.NUM_CLASSES is 4"):
        resolve_class_names(None, "L", stored, "m.pyth", 4)


def test_weights_and_names_are_loaded_as_testing_loads_them(tmp_path):
    cfg = family_cfg("X3D", "OUTPUT_DIR", str(tmp_path / "run"))
    trained = build_model(cfg)
    with torch.no_grad():
        trained.head.projection.bias.fill_(0.5)
    ckpt = tmp_path / "x3d.pyth"
    torch.save({"model_state": trained.state_dict(), "class_names": NAMES}, ckpt)
    loaded = load_inference_model(with_checkpoint(cfg, str(ckpt)))
    assert not loaded.model.training and loaded.loaded.path == str(ckpt)
    assert loaded.loaded.source == "TEST.CHECKPOINT_FILE_PATH" and loaded.loaded.class_names == tuple(NAMES)
    assert loaded.class_names == NAMES and torch.equal(loaded.model.head.projection.bias, torch.full((5,), 0.5))
    labels = tmp_path / "names.json"
    labels.write_text(json.dumps({name.upper(): i for i, name in enumerate(NAMES)}))
    relabelled = load_inference_model(with_checkpoint(cfg, str(ckpt)), str(labels), "--labels")
    assert relabelled.class_names == [n.upper() for n in NAMES] and "label 0 is 'ARCHERY'" in relabelled.names_warning
    with pytest.raises(ConfigError, match=f"--labels '{tmp_path / 'none.json'}' cannot be read"):
        load_inference_model(cfg, str(tmp_path / "none.json"), "--labels")
    with pytest.raises(CheckpointError, match="no checkpoint to test.*TEST.ALLOW_RANDOM_INIT"):
        load_inference_model(cfg)
    assert with_checkpoint(cfg, "") is cfg and cfg.TEST.CHECKPOINT_FILE_PATH == ""
