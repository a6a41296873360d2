"""Spatial-sampling rules that plausible one-line bugs broke without any other test failing
(found by a mutation check); expected values follow framework.md 2.9, not the code."""
import math

import numpy as np

from vov3d.datasets import sampling, transform


def test_inverse_uniform_jitter_is_the_rounded_reciprocal_of_each_draw():
    # framework.md 2.9 step 1: u ~ U(1/max, 1/min), size = round(1/u). Truncating 1/u instead
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
    # framework.md 2.9: the long side becomes floor(long / short * size); 160 / 90 * 128 =
    # 227.6 and 150 / 100 * 37 = 55.5 are the cases where rounding would differ.
    assert sampling.short_side_shape(90, 160, 128) == (128, 227)
    assert sampling.short_side_shape(160, 90, 128) == (227, 128)
    assert sampling.short_side_shape(100, 150, 37) == (37, 55)
    frame = np.zeros((90, 160, 3), dtype=np.uint8)
    assert transform.resize_short_side(frame, 128).shape == (128, 227, 3)
    assert transform.resize_short_side(frame.transpose(1, 0, 2), 128).shape == (227, 128, 3)
