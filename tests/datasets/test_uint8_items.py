"""Clips travel as uint8 and are normalised by the input step: for every dataset and split
(Kinetics toy videos, SSv1/SSv2 frame folders, SSv2 .webm) the model input equals the one
the float path gave when datasets normalised in the workers, copied below as the reference."""
import random

import cv2
import numpy as np
import pytest
import torch

from tests.datasets.conftest import make_cfg
from vov3d.datasets import build_dataset, sampling
from vov3d.datasets.clip_dataset import CENTRE_CLIP, TRAIN_CLIP
from vov3d.engine.input_step import InputStep

# Per-channel values, so that the channel order of the normalisation matters.
STATS = ("DATA.MEAN", "[0.40, 0.45, 0.52]", "DATA.STD", "[0.21, 0.225, 0.24]", "DATA.RANDOM_FLIP", "True")


# ------------------------------------------------------------------ the float path, as it was
def float_normalize(clip, mean, std, reverse_channels):
    """[T, H, W, C] uint8 -> [C, T, H, W] float32, normalised in loader order, then reversed."""
    data = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32)
    if reverse_channels:
        data, scale, shift = data.flip(0), scale.flip(0), shift.flip(0)
    out = data.contiguous().to(torch.float32)
    return out.mul_(scale.view(-1, 1, 1, 1)).sub_(shift.view(-1, 1, 1, 1))


def float_resize(frame, size):
    height, width = frame.shape[:2]
    new_h, new_w = sampling.short_side_shape(height, width, size)
    if (new_h, new_w) == (height, width):
        return frame
    return cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def float_train_clip(data, frames):
    size = sampling.jitter_size(data.TRAIN_JITTER_SCALES[0], data.TRAIN_JITTER_SCALES[1],
                                data.INV_UNIFORM_SAMPLE, np.random)
    new_h, new_w = sampling.short_side_shape(*frames[0].shape[:2], size)
    y, x = sampling.random_crop_offsets(new_h, new_w, data.TRAIN_CROP_SIZE, np.random)
    flip = data.RANDOM_FLIP and np.random.uniform() < 0.5
    crop = data.TRAIN_CROP_SIZE
    out = np.empty((len(frames), crop, crop, 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        patch = float_resize(frame, size)[y:y + crop, x:x + crop]
        out[t] = patch[:, ::-1] if flip else patch
    return float_normalize(out, data.MEAN, data.STD, data.REVERSE_INPUT_CHANNEL)


def float_views(dataset, bank, views, resize=None, crop=None):
    data = dataset.cfg.DATA
    if resize is None:
        resize, crop = sampling.test_resize_and_crop(data.TEST_CROP_SIZE, data.TRAIN_JITTER_SCALES[0],
                                                     dataset.num_spatial_crops)
    resized = {key: float_resize(frame, resize) for key, frame in bank.frames.items()}
    height, width = next(iter(resized.values())).shape[:2]
    out = []
    for clip_number, spatial in views:
        y, x = sampling.uniform_crop_offsets(height, width, crop,
                                             sampling.spatial_index(spatial, dataset.num_spatial_crops))
        clip = np.stack([resized[key][y:y + crop, x:x + crop] for key in bank.clips[clip_number]])
        out.append(float_normalize(clip, data.MEAN, data.STD, data.REVERSE_INPUT_CHANNEL))
    return out


def float_item(dataset, index):
    """The model input of item `index` on the float path (no failures on these files)."""
    data = dataset.cfg.DATA
    if dataset.split != "test":
        if dataset.deterministic_val:
            bank = dataset._read_clips(index, [(CENTRE_CLIP, 1)])
            return float_views(dataset, bank, [(0, 1)], data.TRAIN_JITTER_SCALES[0], data.TRAIN_CROP_SIZE)[0]
        return float_train_clip(data, dataset._read_clips(index, [(TRAIN_CLIP, 1)]).clip(0))
    crops, temporal = dataset.num_spatial_crops, dataset.num_temporal_views
    if dataset._views_share_frames():
        clips = [(t, temporal) for t in range(temporal)]
        views = [sampling.view_indices(v, crops) for v in range(dataset.num_views)]
    else:
        clips = [(v // crops, temporal) for v in range(dataset.num_views)]
        views = [(v, v % crops) for v in range(dataset.num_views)]
    return torch.stack(float_views(dataset, dataset._read_clips(index, clips), views))


# ------------------------------------------------------------------ the comparison
SPLITS = {"train": ("train",), "val": ("val",), "val, deterministic": ("val", "DATA.DETERMINISTIC_VAL", "True"),
          "test": ("test",), "test, random segments": ("test", "DATA.SEGMENT_TEST_SAMPLING", "random")}


def source_cfg(source, kinetics_root, ss_roots, *overrides):
    if source == "kinetics":
        return make_cfg(kinetics_root, *STATS, *overrides)
    fmt, kind = source.split("_")
    root = ss_roots[fmt]
    video = ("DATA.SSV2_VIDEO_EXT", ".webm") if kind == "webm" else ()
    return make_cfg(root, "MODEL.NUM_CLASSES", "2", "DATA.PATH_PREFIX", str(root / ("videos" if video else "frames")),
                    "TEST.NUM_ENSEMBLE_VIEWS", "2", "DATA.REVERSE_INPUT_CHANNEL", "True", *video, *STATS,
                    *overrides)


# Segment sampling (DATA.SEGMENT_TEST_SAMPLING) is Something-Something's: Kinetics has no such split.
SOURCE_SPLITS = [(source, split) for source in ("kinetics", "ssv1_frames", "ssv2_frames", "ssv2_webm")
                 for split in SPLITS if not (source == "kinetics" and "segments" in split)]


@pytest.mark.parametrize("source,split", SOURCE_SPLITS)
def test_model_input_equals_the_float_path(kinetics_root, ss_roots, source, split):
    mode, *overrides = SPLITS[split]
    dataset = build_dataset(source.split("_")[0], source_cfg(source, kinetics_root, ss_roots, *overrides), mode)
    step = InputStep(dataset.cfg, torch.device("cpu"))
    for index in range(dataset.num_videos):
        for seed in range(3 if mode != "test" else 1):
            random.seed(seed)
            np.random.seed(seed)
            clip = dataset[index][0][0]
            random.seed(seed)
            np.random.seed(seed)
            expected = float_item(dataset, index)
            assert clip.dtype == torch.uint8 and clip.shape == expected.shape
            assert torch.equal(step.clips(clip), expected), (index, seed)


def test_failed_test_item_is_a_zero_uint8_item(kinetics_root, tmp_path):
    (tmp_path / "test.csv").write_text(f"{kinetics_root / 'long.mp4'} 0\n{tmp_path / 'gone.mp4'} 1\n")
    dataset = build_dataset("kinetics", make_cfg(tmp_path, "DATA.PATH_PREFIX", ""), "test")
    good, bad = dataset[0], dataset[1]
    assert bad[3]["failed"] == 1 and good[3]["failed"] == 0
    assert bad[0][0].dtype == torch.uint8 and bad[0][0].shape == good[0][0].shape == (30, 3, 8, 32, 32)
    assert not bad[0][0].any()


def test_each_distinct_frame_is_resized_and_split_once(kinetics_root, monkeypatch):
    from vov3d.datasets import transform

    dataset = build_dataset("kinetics", make_cfg(kinetics_root), "test")  # 48x64 frames -> 32 px
    distinct = len(dataset._read_clips(0, [(t, 10) for t in range(10)]).frames)
    calls = {"resize": 0, "to_planes": 0}
    for owner, name in ((transform.cv2, "resize"), (transform, "to_planes")):
        def counted(*args, _name=name, _original=getattr(owner, name), **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)
    views = dataset[0][0][0]
    assert views.shape == (30, 3, 8, 32, 32) and views.is_contiguous()
    # The 240 view frames are the 40 frames of the video at most.
    assert calls == {"resize": distinct, "to_planes": distinct} and distinct <= 40
