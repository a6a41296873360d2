"""Configs for small, fast model tests."""
import os

from tests.conftest import REPO_ROOT
from vov3d.config import assert_and_infer_cfg, get_cfg, merge_file, merge_overrides


def project_cfg(relpath, *overrides):
    cfg = get_cfg()
    merge_file(cfg, os.path.join(REPO_ROOT, relpath))
    merge_overrides(cfg, ["NUM_GPUS", "0"] + [str(o) for o in overrides])
    return assert_and_infer_cfg(cfg)


def small_cfg(relpath, frames=4, crop=32, test_crop=64, *overrides):
    """A project config shrunk to `frames` x `crop`^2 training clips."""
    return project_cfg(relpath, "DATA.NUM_FRAMES", frames, "DATA.TRAIN_CROP_SIZE", crop,
                       "DATA.TEST_CROP_SIZE", test_crop,
                       "DATA.TRAIN_JITTER_SCALES", f"[{crop}, {crop}]", *overrides)


def model_cfg(model_name, num_classes, num_frames, crop, group=None, group_values=None, **overrides):
    """Defaults plus a model, its group's values and `GROUP__KEY=value` overrides (no yaml)."""
    cfg = get_cfg()
    cfg.NUM_GPUS = 0
    cfg.MODEL.MODEL_NAME = model_name
    cfg.MODEL.ARCH = model_name.lower()
    cfg.MODEL.NUM_CLASSES = num_classes
    cfg.DATA.NUM_FRAMES = num_frames
    cfg.DATA.TRAIN_CROP_SIZE = crop
    for name, value in (group_values or {}).items():
        cfg[group][name] = value
    for key, value in overrides.items():
        group_name, name = key.split("__")
        cfg[group_name][name] = value
    return cfg


def build_on_meta(cfg):
    """A full-size model without memory or init cost, for counting."""
    import torch

    from vov3d.models import build_model

    with torch.device("meta"):
        return build_model(cfg)


def randomise_bn(module):
    """Non-trivial BN parameters and statistics, so tests see every BN's effect."""
    import torch.nn as nn

    for m in module.modules():
        if isinstance(m, nn.BatchNorm3d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
