"""Every registered model through every config in configs/ (timm's test_models in spirit).

Each config builds at full size on the meta device with the parameter count and the
state-dict listing of tests/fixtures/config_models.json (measured before the families were
refactored), and, made shallow and tiny, trains one step (gradients reach every trainable
parameter), evaluates, and survives a strict state-dict round trip with identical outputs.
"""
import glob
import hashlib
import json
import os

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import FIXTURES_DIR, REPO_ROOT
from tests.models import reference_functional as ref
from tests.models.model_helpers import build_on_meta, project_cfg
from vov3d.config import ConfigError, get_cfg
from vov3d.models import MODEL_REGISTRY, build_model
from vov3d.models.complexity import count_params

with open(os.path.join(FIXTURES_DIR, "config_models.json")) as f:
    CONFIG_TABLE = json.load(f)
CONFIGS = sorted(os.path.relpath(p, os.path.join(REPO_ROOT, "configs")) for p in
                 glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True))

# Depth keys that make each family shallow (widths stay as configured). Every stage keeps a
# block; some keep two, so identity-shortcut blocks are exercised too.
SHALLOW = {
    "X3D": ["X3D.DEPTH_FACTOR", "0.4"],  # 1, 1, 2, 2 blocks
    "CoX3D": ["X3D.DEPTH_FACTOR", "0.4"],
    "VoV3D": ["VOV3D.STAGE_DEPTHS", "[1, 1, 2, 1]"],
    "CSN": ["CSN.DEPTH", "50"],  # the shallowest CSN: 3, 4, 6, 3 blocks
    "SEVNet": ["SEVNET.DEPTHS", "[1, 2, 1, 1]"],
}
FRAMES, CROP, CLASSES = 4, 64, 5


def listing_sha256(model) -> str:
    listing = [[k, list(v.shape), str(v.dtype).replace("torch.", "")]
               for k, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def tiny_cfg(relpath):
    return project_cfg(os.path.join("configs", relpath), "DATA.NUM_FRAMES", FRAMES,
                       "DATA.TRAIN_CROP_SIZE", CROP, "DATA.TEST_CROP_SIZE", CROP,
                       "DATA.TRAIN_JITTER_SCALES", f"[{CROP}, {CROP}]", "MODEL.NUM_CLASSES", CLASSES,
                       *SHALLOW[CONFIG_TABLE[relpath]["model_name"]])


def test_every_config_is_in_the_table_and_every_registered_model_has_a_config():
    assert CONFIGS and set(CONFIGS) == set(CONFIG_TABLE)
    registered = set(MODEL_REGISTRY.names())
    assert registered == {"X3D", "CoX3D", "VoV3D", "CSN", "SEVNet"}  # no toy model left behind
    assert registered == {entry["model_name"] for entry in CONFIG_TABLE.values()} == set(SHALLOW)


@pytest.mark.parametrize("relpath", CONFIGS)
def test_full_size_model_matches_the_table(relpath):
    expected = CONFIG_TABLE[relpath]
    cfg = project_cfg(os.path.join("configs", relpath))
    assert cfg.MODEL.MODEL_NAME == expected["model_name"]
    model = build_on_meta(cfg)
    assert type(model) is MODEL_REGISTRY.get(expected["model_name"])
    assert count_params(model) == expected["params"]
    assert len(model.state_dict()) == expected["state_dict_entries"]
    assert listing_sha256(model) == expected["state_dict_sha256"]


def _check_gradients(model):
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None or not torch.any(p.grad != 0)]
    assert not no_grad, no_grad[:5]
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen_with_grad, frozen_with_grad[:5]


@pytest.mark.parametrize("relpath", CONFIGS)
def test_shallow_model_trains_evaluates_and_round_trips(relpath):
    cfg = tiny_cfg(relpath)
    torch.manual_seed(0)
    # Random weights everywhere (no zero-initialised final BN), so every branch gets gradient.
    model = ref.randomize_(build_model(cfg))
    x = torch.randn(2, 3, FRAMES, CROP, CROP)

    model.train()
    logits = model([x])
    assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    _check_gradients(model)

    model.eval()
    with torch.no_grad():
        probs = model(x)
    assert probs.shape == (2, CLASSES)
    if cfg.MODEL.HEAD_ACT == "softmax":
        torch.testing.assert_close(probs.sum(1), torch.ones(2))

    torch.manual_seed(1)
    fresh = build_model(cfg).eval()
    assert not torch.equal(fresh.head.projection.weight, model.head.projection.weight)
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), probs)


def test_unknown_model_name_is_a_config_error_naming_the_key_and_the_models():
    cfg = get_cfg()
    cfg.NUM_GPUS = 0
    cfg.MODEL.MODEL_NAME = "SlowFast"
    with pytest.raises(ConfigError, match=r"MODEL\.MODEL_NAME: unknown model 'SlowFast'.*X3D"):
        build_model(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: build_model moves the "
                    "model to the current GPU when NUM_GPUS > 0")
def test_gpu_runs_get_the_model_on_the_current_device():
    cfg = tiny_cfg("Kinetics/x3d/X3D_S.yaml")
    cfg.defrost()
    cfg.NUM_GPUS = 1
    model = build_model(cfg)
    assert all(p.device == torch.device("cuda", torch.cuda.current_device()) for p in model.parameters())
