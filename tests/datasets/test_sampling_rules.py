"""Temporal, segment, spatial and test-view sampling rules against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from vov3d.datasets import sampling, transform


def test_view_indexing_10x3_and_2x3():
    assert [sampling.view_indices(v, 3) for v in (0, 1, 2, 3, 29)] == [(0, 0), (0, 1), (0, 2), (1, 0), (9, 2)]
    assert [sampling.view_indices(v, 3) for v in range(6)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert sampling.view_indices(7, 1) == (7, 0)


def test_temporal_windows_test_train_offset():
    size = sampling.clip_size(16, 5, fps=30, target_fps=30)
    assert size == 80
    assert sampling.clip_size(16, 5, fps=15, target_fps=30) == 40
    # delta = 220: legacy starts 220 * i / 10, one view = first window.
    assert [sampling.window_start_end(300, size, i, 10)[0] for i in (0, 1, 9)] == [0, 22, 198]
    assert sampling.window_start_end(300, size, 3, 10) == (66, 145)
    assert sampling.window_start_end(300, size, 0, 1)[0] == 0
    # Offset sampling: centre for one view, i * floor(220 / 9) = 24 i otherwise.
    assert sampling.window_start_end(300, size, 0, 1, use_offset=True)[0] == 110
    assert sampling.window_start_end(300, size, 9, 10, use_offset=True)[0] == 216
    rng = np.random.RandomState(0)
    starts = [sampling.window_start_end(300, size, -1, 1, rng=rng)[0] for _ in range(500)]
    assert 0 <= min(starts) < 10 and 210 < max(starts) <= 220
    assert sampling.window_start_end(50, size, -1, 1, rng=rng) == (0, 79)  # shorter than a clip


def test_linspace_indices_long_and_short():
    expected = [0, 5, 10, 15, 21, 26, 31, 36, 42, 47, 52, 57, 63, 68, 73, 79]
    assert sampling.linspace_indices(0, 79, 16, 300).tolist() == expected
    assert sampling.linspace_indices(66, 145, 4, 300).tolist() == [66, 92, 118, 145]
    short = sampling.linspace_indices(0, 79, 16, 20).tolist()
    assert short == [min(i, 19) for i in expected]


def test_segment_indices_L37_T8():
    start, end = sampling.segment_bounds(37, 8)
    assert start.tolist() == [0, 4, 9, 14, 18, 22, 27, 32]  # round-half-even: 4.5 -> 4
    assert end.tolist() == [4, 9, 14, 18, 22, 27, 32, 36]
    assert sampling.segment_indices(37, 8, "midpoint").tolist() == [2, 6, 11, 16, 20, 24, 29, 34]
    assert sampling.segment_indices(37, 8, "spread", 0, 2).tolist() == [1, 5, 10, 15, 19, 23, 28, 33]
    assert sampling.segment_indices(37, 8, "spread", 1, 2).tolist() == [3, 8, 13, 17, 21, 26, 31, 35]
    rng = np.random.RandomState(1)
    draws = np.stack([sampling.segment_indices(37, 8, "random", rng=rng) for _ in range(400)])
    assert (draws.min(0) == start).all() and (draws.max(0) == end).all()
    assert sampling.segment_test_mode("spread", 1) == "midpoint"
    assert sampling.segment_test_mode("random", 6) == "random"


def test_resize_shapes_and_jitter():
    assert sampling.short_side_shape(240, 320, 256) == (256, 341)
    assert sampling.short_side_shape(320, 240, 256) == (341, 256)
    rng = np.random.RandomState(0)
    uniform = [sampling.jitter_size(256, 320, False, rng) for _ in range(20000)]
    inverse = [sampling.jitter_size(256, 320, True, rng) for _ in range(20000)]
    assert min(uniform) == 256 and max(uniform) == 320 and min(inverse) >= 256 and max(inverse) <= 320
    # E[1 / U(1/320, 1/256)] = ln(1.25) / (1/256 - 1/320) = 285.6 < 288 for the uniform draw.
    assert abs(np.mean(inverse) - 285.6) < 0.6 and abs(np.mean(uniform) - 288) < 0.6


def test_crop_offsets():
    assert sampling.uniform_crop_offsets(256, 341, 256, 0) == (0, 0)
    assert sampling.uniform_crop_offsets(256, 341, 256, 1) == (0, 43)
    assert sampling.uniform_crop_offsets(256, 341, 256, 2) == (0, 85)
    assert sampling.uniform_crop_offsets(341, 256, 256, 0) == (0, 0)
    assert sampling.uniform_crop_offsets(341, 256, 256, 1) == (43, 0)
    assert sampling.uniform_crop_offsets(341, 256, 256, 2) == (85, 0)
    rng = np.random.RandomState(0)
    offsets = np.array([sampling.random_crop_offsets(40, 45, 32, rng) for _ in range(2000)])
    assert offsets[:, 0].min() == 0 and offsets[:, 0].max() == 8  # last offset reachable
    assert offsets[:, 1].max() == 13
    assert sampling.random_crop_offsets(32, 32, 32, rng) == (0, 0)


def test_test_resize_single_crop_is_centre():
    assert sampling.test_resize_and_crop(256, 256, 3) == (256, 256)
    assert sampling.test_resize_and_crop(224, 256, 1) == (256, 224)
    assert sampling.test_resize_and_crop(312, 256, 1) == (312, 312)
    assert sampling.spatial_index(0, 1) == 1 and sampling.spatial_index(2, 3) == 2


def test_flip_probability_and_shared_geometry():
    frames = [np.tile(np.arange(48, dtype=np.uint8)[None, :, None], (40, 1, 3)) + t for t in range(4)]
    rng = np.random.RandomState(0)
    flips = 0
    for _ in range(400):
        clip = transform.train_crops(frames, (40, 40), 32, False, True, rng)
        assert clip.shape == (3, 4, 32, 32) and clip.dtype == np.uint8
        row = clip[0, :, 0, :].astype(int)  # channel 0, every frame's first row
        assert (np.diff(row, axis=0) == 1).all()  # same crop and flip for every frame
        flips += row[0, 0] > row[0, -1]
    assert 160 < flips < 240
    no_flip = [transform.train_crops(frames, (40, 40), 32, False, False, rng) for _ in range(50)]
    assert all(c[0, 0, 0, 0] < c[0, 0, 0, -1] for c in no_flip)


@pytest.mark.parametrize("size", [80, 32, 37])
def test_uint8_resize_matches_torch_bilinear(size):
    image = np.random.RandomState(0).randint(0, 256, (48, 64, 3)).astype(np.uint8)
    ours = transform.resize_short_side(image, size).astype(np.float32)
    reference = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=ours.shape[:2],
        mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    assert ours.shape[:2] == sampling.short_side_shape(48, 64, size)
    assert np.abs(ours - reference).max() <= 1.0


def test_inverse_uniform_jitter_is_the_rounded_reciprocal_of_each_draw():
    # The inverse-uniform scale: u ~ U(1/max, 1/min), size = round(1/u). Truncating 1/u instead
    # shifts the mean by only 0.5 px, too little for a distribution check to notice.
    rng, reference = np.random.RandomState(7), np.random.RandomState(7)
    sizes = [sampling.jitter_size(182, 228, True, rng) for _ in range(60)]
    reciprocals = [1.0 / reference.uniform(1.0 / 228, 1.0 / 182) for _ in range(60)]
    assert sizes == [int(round(r)) for r in reciprocals]
    # The draws include reciprocals with a fractional part >= 0.5, where rounding and
    # truncation disagree; without them the comparison above would prove nothing.
    assert any(r - math.floor(r) >= 0.5 for r in reciprocals)
    # The plain rule: size = round(U(min, max)).
    rng, reference = np.random.RandomState(3), np.random.RandomState(3)
    plain = [sampling.jitter_size(256, 320, False, rng) for _ in range(60)]
    assert plain == [int(round(reference.uniform(256, 320))) for _ in range(60)]


def test_long_side_is_floored_not_rounded():
    # The long side becomes floor(long / short * size), as in the references; 160 / 90 * 128 =
    # 227.6 and 150 / 100 * 37 = 55.5 are the cases where rounding would differ.
    assert sampling.short_side_shape(90, 160, 128) == (128, 227)
    assert sampling.short_side_shape(160, 90, 128) == (227, 128)
    assert sampling.short_side_shape(100, 150, 37) == (37, 55)
    frame = np.zeros((90, 160, 3), dtype=np.uint8)
    assert transform.resize_short_side(frame, 128).shape == (128, 227, 3)
    assert transform.resize_short_side(frame.transpose(1, 0, 2), 128).shape == (227, 128, 3)


def test_frame_planes_resize_and_split_every_frame_of_a_video():
    rng = np.random.RandomState(1)
    planes = transform.FramePlanes(48, 64, 32)
    for _ in range(2):  # buffers reused: each call gives that frame's planes
        frame = rng.randint(0, 256, (48, 64, 3)).astype(np.uint8)
        expected = transform.resize_short_side(frame, 32).transpose(2, 0, 1)
        assert planes.shape == (32, 42) and np.array_equal(planes(frame), expected)
    padded = rng.randint(0, 256, (32, 50, 3)).astype(np.uint8)[:, :42]  # rows longer than the frame
    assert np.array_equal(transform.FramePlanes(32, 42, 32)(padded), padded.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="frames of one video differ in size: 64x40"):
        planes(np.zeros((40, 64, 3), np.uint8))
