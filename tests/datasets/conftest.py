"""Tiny generated datasets shared by the dataset tests (built once per session)."""
import os
import runpy

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from vov3d.config import assert_and_infer_cfg, get_cfg, merge_overrides

GRAY_STEP = 6  # frame j of a ramp video is uniformly grey 6 * j


@pytest.fixture(scope="session")
def toy_tool():
    return runpy.run_path(os.path.join(REPO_ROOT, "tools", "make_toy_dataset.py"))


def ramp_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    for j in range(num_frames):
        frames[j] = GRAY_STEP * j
    return frames


def frame_numbers(clip) -> np.ndarray:
    """Source frame index of every frame of a uint8 [3, T, H, W] ramp clip, from its mean
    grey level."""
    grey = clip.double().mean(dim=(0, 2, 3)).numpy()
    return np.round(grey / GRAY_STEP).astype(int)


@pytest.fixture(scope="session")
def kinetics_root(tmp_path_factory, toy_tool):
    """Ramp videos: 40 frames (h264, keyframe every 8), 12 frames (shorter than a clip),
    and a 40-frame vp9 WebM (no frame count: whole-video decoding)."""
    root = tmp_path_factory.mktemp("kinetics")
    write = toy_tool["write_video"]
    write(str(root / "long.mp4"), ramp_frames(40), "h264", 8)
    write(str(root / "short.mp4"), ramp_frames(12), "h264", 8)
    write(str(root / "long.webm"), ramp_frames(40), "libvpx-vp9", 8)
    lines = "long.mp4 0\nshort.mp4 1\nlong.webm 2\n"
    for split in ("train", "val", "test"):
        (root / f"{split}.csv").write_text(lines)
    return root


def make_cfg(root, *overrides):
    cfg = get_cfg()
    merge_overrides(cfg, [
        "NUM_GPUS", "0", "OUTPUT_DIR", str(root / "out"), "RNG_SEED", "0",
        "DATA.PATH_TO_DATA_DIR", str(root), "DATA.PATH_PREFIX", str(root),
        "DATA.NUM_FRAMES", "8", "DATA.SAMPLING_RATE", "4",
        "DATA.TRAIN_JITTER_SCALES", "[40, 48]", "DATA.TRAIN_CROP_SIZE", "32",
        "DATA.TEST_CROP_SIZE", "32", "MODEL.NUM_CLASSES", "6",
        "TEST.NUM_ENSEMBLE_VIEWS", "10", "TEST.NUM_SPATIAL_CROPS", "3",
        "DATA_LOADER.NUM_WORKERS", "0", "DATA_LOADER.NUM_RETRIES", "4",
        "TRAIN.BATCH_SIZE", "2", "TEST.BATCH_SIZE", "6", *overrides])
    return assert_and_infer_cfg(cfg)


@pytest.fixture(scope="session")
def ss_roots(tmp_path_factory, toy_tool):
    """SSv1 and SSv2 toy copies: 2 classes x (2 train + 1 val) videos of 20 frames, 48x32."""
    roots = {}
    for fmt in ("ssv1", "ssv2"):
        root = tmp_path_factory.mktemp(fmt)
        toy_tool["generate"](str(root), num_classes=2, videos_per_class=2, eval_per_class=1,
                             num_frames=20, width=48, height=32, seed=3, fmt=fmt)
        roots[fmt] = root
    return roots
