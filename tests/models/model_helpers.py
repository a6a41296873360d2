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
