"""Kinetics clips: exact frame indices against the reference rule, decode-once == per-view,
short videos, whole-video decoding for WebM, train/val/test item layout."""
import random

import av
import numpy as np
import pytest
import torch

from tests.datasets.conftest import frame_numbers, make_cfg
from vov3d.datasets import build_dataset, sampling
from vov3d.datasets.clip_dataset import TRAIN_CLIP


def reference_indices(path, num_frames, rate, view=None, num_views=1, start=None):
    """The reference's selective decoding, written out on a full decode of the file: the
    window of test view `view` of `num_views`, or the one starting at `start`."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames, duration, fps = stream.frames, stream.duration, float(stream.average_rate)
        pts = sorted(frame.pts for frame in container.decode(stream))
    size = rate * num_frames / 30 * fps
    if start is None:
        start = max(frames - size, 0) * view / num_views
    timebase = duration / frames
    start_pts, end_pts = int(start * timebase), int((start + size - 1) * timebase)
    window = [j for j, p in enumerate(pts) if start_pts <= p <= end_pts]
    window += [j for j, p in enumerate(pts) if p > end_pts][:1]
    positions = np.clip(np.linspace(0, size - 1, num_frames).astype(int), 0, len(window) - 1)
    return [window[p] for p in positions]


@pytest.fixture(scope="module")
def test_set(kinetics_root):
    return build_dataset("Kinetics", make_cfg(kinetics_root), "test")


def test_test_item_layout_and_reference_indices(test_set, kinetics_root):
    inputs, label, index, meta = test_set[0]
    assert len(inputs) == 1 and inputs[0].shape == (30, 3, 8, 32, 32)
    assert inputs[0].dtype == torch.uint8  # normalised on the device by the input step
    assert (label, index, meta) == (0, 0, {"failed": 0, "num_failures": 0, "video_frames": 40})  # long.mp4
    assert test_set.num_views == 30 and test_set.num_videos == 3 and len(test_set) == 3
    path = test_set.video_path(0)
    for view in range(30):
        temporal, _ = sampling.view_indices(view, 3)
        expected = reference_indices(path, 8, 4, temporal, 10)
        assert frame_numbers(inputs[0][view]).tolist() == expected, view
    # Windows start at 8 * i / 10 source frames: the 10 temporal views are not all equal.
    assert len({tuple(frame_numbers(inputs[0][v])) for v in range(0, 30, 3)}) > 3


@pytest.mark.parametrize("video", [0, 1, 2])
def test_decode_once_equals_per_view(test_set, video):
    inputs = test_set[video][0][0]
    for view in range(test_set.num_views):
        assert torch.equal(test_set.get_view(video, view), inputs[view]), view
    assert torch.equal(test_set[video][0][0], inputs)  # deterministic


def test_one_pass_decodes_each_frame_once(test_set):
    clips = [(t, 10) for t in range(10)]
    once = test_set._read_clips(0, clips)
    per_view = sum(test_set._read_clips(0, [clip]).decoded for clip in clips) * 3
    assert once.decoded <= 40 and len(once.clips) == 10
    assert per_view >= 10 * once.decoded


def test_short_video_repeats_last_frame(test_set):
    inputs = test_set[1][0][0]
    numbers = frame_numbers(inputs[0])
    # 12 frames, clip span 32: positions [0, 4, 8, 13, 17, ...] clamp to the last frame.
    assert numbers.tolist() == [0, 4, 8, 11, 11, 11, 11, 11]


def test_webm_without_frame_count_uses_whole_video(test_set):
    with av.open(test_set.video_path(2)) as container:
        assert container.streams.video[0].frames == 0
    inputs = test_set[2][0][0]
    for temporal in range(10):
        start, end = sampling.window_start_end(40, 32, temporal, 10)
        expected = sampling.linspace_indices(start, end, 8, 40).tolist()
        assert frame_numbers(inputs[3 * temporal]).tolist() == expected


def test_train_clip_indices_follow_reference(kinetics_root):
    dataset = build_dataset("kinetics", make_cfg(kinetics_root), "train")
    inputs, label, index, meta = dataset[0]
    assert inputs[0].shape == (3, 8, 32, 32) and (label, index, meta) == (0, 0, {"num_failures": 0})
    path, starts = dataset.video_path(0), set()
    for seed in range(12):
        random.seed(seed)
        start = random.uniform(0, 40 - 32)  # the draw the dataset makes with this seed
        random.seed(seed)
        bank = dataset._read_clips(0, [(TRAIN_CLIP, 1)])
        numbers = [int(round(bank.frames[k].mean() / 6)) for k in bank.clips[0]]
        assert numbers == reference_indices(path, 8, 4, start=start), seed
        starts.add(numbers[0])
    assert len(starts) > 2


def test_val_deterministic_centre(kinetics_root):
    dataset = build_dataset("kinetics", make_cfg(kinetics_root, "DATA.DETERMINISTIC_VAL", "True"), "val")
    first, second = dataset[0][0][0], dataset[0][0][0]
    assert torch.equal(first, second) and first.shape == (3, 8, 32, 32)
    # The centre window starts at floor(delta / 2) = 4 source frames.
    assert frame_numbers(first).tolist() == [4 + p for p in [0, 4, 8, 13, 17, 22, 26, 31]]
    noisy = build_dataset("kinetics", make_cfg(kinetics_root), "val")
    assert len({tuple(frame_numbers(noisy[0][0][0])) for _ in range(8)}) > 1


def test_single_crop_resizes_to_jitter_min(kinetics_root):
    cfg = make_cfg(kinetics_root, "TEST.NUM_SPATIAL_CROPS", "1", "TEST.NUM_ENSEMBLE_VIEWS", "1",
                   "DATA.TEST_CROP_SIZE", "24")
    dataset = build_dataset("kinetics", cfg, "test")
    inputs = dataset[0][0][0]
    assert inputs.shape == (1, 3, 8, 24, 24)
    assert frame_numbers(inputs[0]).tolist() == reference_indices(dataset.video_path(0), 8, 4, 0, 1)


def test_skipping_unshown_frames_keeps_pixels_exact(test_set):
    """Window frames equal a plain full decode bit for bit (the run-in skips non-reference
    frames before the window)."""
    path = test_set.video_path(0)
    with av.open(path) as container:
        full = {f.pts: f.to_ndarray(format="rgb24") for f in container.decode(video=0)}
    for clips in ([(9, 10)], [(5, 10), (9, 10)], [(t, 10) for t in range(10)]):
        bank = test_set._read_clips(0, clips)
        assert bank.frames and all(np.array_equal(full[pts], frame) for pts, frame in bank.frames.items())
