"""RandAugment of training clips: PIL's results per frame, one draw per clip (every frame
the same operations), reproducible from the seeds, the policy grammar's errors."""
import random

import cv2
import numpy as np
import pytest

from vov3d.datasets import rand_augment as ra
from vov3d.utils.augment_policy import PolicyError, RandAugmentPolicy

PIL = pytest.importorskip("PIL", reason="the reference operations are PIL's")
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def _smooth_image(seed, h=48, w=40):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    img[..., 1] = (img[..., 1] * 0.5 + 60).astype(np.uint8)  # channels with different ranges
    return img


def _clip(frames):
    """[H, W, 3] frames -> uint8 clip [3, T, H, W]."""
    return np.ascontiguousarray(np.stack(frames).transpose(3, 0, 1, 2))


def _apply(name, args, clip):
    return ra.RandAugment(RandAugmentPolicy()).apply(clip, [(name, args)])


def _frame(clip, t):
    return clip[:, t].transpose(1, 2, 0)


PIL_REFERENCE = [
    ("AutoContrast", (), lambda im: ImageOps.autocontrast(im)),
    ("Equalize", (), lambda im: ImageOps.equalize(im)),
    ("Invert", (), lambda im: ImageOps.invert(im)),
    ("Posterize", (3,), lambda im: ImageOps.posterize(im, 3)),
    ("Solarize", (100,), lambda im: ImageOps.solarize(im, 100)),
    ("SolarizeAdd", (50,), lambda im: im.point([min(255, i + 50) if i < 128 else i for i in range(256)] * 3)),
    ("Color", (0.3,), lambda im: ImageEnhance.Color(im).enhance(0.3)),
    ("Color", (1.7,), lambda im: ImageEnhance.Color(im).enhance(1.7)),
    ("Contrast", (0.4,), lambda im: ImageEnhance.Contrast(im).enhance(0.4)),
    ("Contrast", (1.8,), lambda im: ImageEnhance.Contrast(im).enhance(1.8)),
    ("Brightness", (1.6,), lambda im: ImageEnhance.Brightness(im).enhance(1.6)),
    ("Sharpness", (0.2,), lambda im: ImageEnhance.Sharpness(im).enhance(0.2)),
    ("Sharpness", (1.9,), lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
    ("TranslateXRel", (0.3, "bilinear"),
     lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0.3 * im.size[0], 0, 1, 0), resample=Image.BILINEAR,
                             fillcolor=(128,) * 3)),
    ("TranslateYRel", (-0.25, "bicubic"),
     lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, -0.25 * im.size[1]), resample=Image.BICUBIC,
                             fillcolor=(128,) * 3)),
]


@pytest.mark.parametrize("name,args,reference", PIL_REFERENCE, ids=[f"{n}{a[:1]}" for n, a, _ in PIL_REFERENCE])
def test_each_frame_gets_what_pil_gives_that_frame(name, args, reference):
    frames = [_smooth_image(seed) for seed in range(3)]
    out = _apply(name, args, _clip(frames))
    assert out.dtype == np.uint8 and out.shape == (3, 3, 48, 40)
    # OpenCV's blends round where PIL truncates: Color and Sharpness within one level.
    tolerance = 1 if name in ("Color", "Sharpness") else 0
    for t, frame in enumerate(frames):
        diff = np.abs(_frame(out, t).astype(int) - np.asarray(reference(Image.fromarray(frame))).astype(int))
        assert diff.max() <= tolerance and diff.mean() < 0.6, (name, t)


@pytest.mark.parametrize("name,args,pil_data", [
    ("Rotate", (20.0, "bilinear"), None), ("Rotate", (-25.0, "bicubic"), None),
    ("ShearX", (0.2, "bilinear"), (1, 0.2, 0, 0, 1, 0)), ("ShearY", (-0.25, "bicubic"), (1, 0, 0, -0.25, 1, 0)),
])
def test_rotations_and_shears_match_pil_up_to_interpolation_rounding(name, args, pil_data):
    frame = _smooth_image(4)
    image = Image.fromarray(frame)
    resample = Image.BILINEAR if args[1] == "bilinear" else Image.BICUBIC
    if pil_data is None:
        ref = image.rotate(args[0], resample=resample, fillcolor=(128,) * 3)
    else:
        ref = image.transform(image.size, Image.AFFINE, pil_data, resample=resample, fillcolor=(128,) * 3)
    diff = np.abs(_frame(_apply(name, args, _clip([frame])), 0).astype(int) - np.asarray(ref).astype(int))
    # Same geometry; the kernels differ in fixed-point rounding and at the fill's edge.
    assert diff.mean() < 2.0 and (diff > 8).mean() < 0.03


def test_posterize_to_zero_bits_blacks_out_as_older_pil_did():
    clip = _clip([_smooth_image(0)])
    assert not _apply("Posterize", (0,), clip).any()
    assert np.array_equal(_apply("Posterize", (8,), clip), clip)


@pytest.mark.parametrize("name", sorted(set(ra.TRANSFORMS + ra.INCREASING_TRANSFORMS)))
def test_every_frame_of_a_clip_gets_the_same_operation(name):
    """The clip is transformed at once; each frame equals that frame transformed alone
    with the same arguments (no mixing between frames, nothing drawn per frame)."""
    random.seed(3)
    args = ra._level_args(name, 7.0) + (("bicubic",) if name in GEOMETRIC else ())
    frames = [_smooth_image(seed) for seed in range(5)]  # odd channel count for bicubic groups of 4
    out = _apply(name, args, _clip(frames))
    for t, frame in enumerate(frames):
        assert np.array_equal(out[:, t], _apply(name, args, _clip([frame]))[:, 0]), (name, t)
    same = _apply(name, args, _clip([frames[0]] * 4))
    assert all(np.array_equal(same[:, 0], same[:, t]) for t in range(4))


def _draw_and_apply(policy, seed, clip):
    random.seed(seed)
    np.random.seed(seed)
    return ra.RandAugment(RandAugmentPolicy.parse(policy), "random")(clip)


def test_same_seed_same_clip_and_other_seeds_other_clips():
    clip = _clip([_smooth_image(seed) for seed in range(4)])
    policy = "rand-m9-n3-mstd0.5-inc1"
    first, again = _draw_and_apply(policy, 11, clip), _draw_and_apply(policy, 11, clip)
    assert np.array_equal(first, again)
    others = [_draw_and_apply(policy, seed, clip) for seed in range(12, 20)]
    assert sum(not np.array_equal(first, o) for o in others) >= 6


def test_draws_follow_the_policy():
    random.seed(0)
    np.random.seed(0)
    aug = ra.RandAugment(RandAugmentPolicy.parse("rand-m5-n4-inc1"), "bilinear")
    draws = [aug.draw() for _ in range(2000)]
    counts = [len(d) for d in draws]
    assert max(counts) <= 4 and abs(np.mean(counts) - 2.0) < 0.1  # each of n ops applied with p 0.5
    names = [name for d in draws for name, _ in d]
    assert set(names) <= set(ra.INCREASING_TRANSFORMS) and len(set(names)) == 15
    rotations = [args[0] for d in draws for name, args in d if name == "Rotate"]
    assert set(np.round(np.abs(rotations), 6)) == {15.0} and min(rotations) < 0 < max(rotations)
    weighted = ra.RandAugment(RandAugmentPolicy.parse("rand-n2-w0"), "bilinear")
    chosen = [name for _ in range(2000) for name, _ in weighted.draw()]
    assert "Invert" not in chosen and "Posterize" not in chosen and chosen.count("Rotate") > chosen.count("ShearX")


@pytest.mark.parametrize("text,policy", [
    ("rand-m9-mstd0.5-inc1", RandAugmentPolicy(9.0, 2, 0.5, True, None)),
    ("rand-m9-n2-mstd0.5-inc1", RandAugmentPolicy(9.0, 2, 0.5, True, None)),
    ("rand-n6-m7", RandAugmentPolicy(7.0, 6, 0.0, False, None)),
    ("rand-w0-inc0", RandAugmentPolicy(10.0, 2, 0.0, False, 0)),
    ("rand", RandAugmentPolicy()),
])
def test_policy_grammar(text, policy):
    assert RandAugmentPolicy.parse(text) == policy


@pytest.mark.parametrize("text,token", [
    ("rand-m9-x3", "'x3'"), ("auto-m9", "'auto'"), ("rand-m9.5", "'m9.5'"), ("rand-n0", "'n0'"),
    ("rand-w1", "'w1'"), ("rand-inc2", "'inc2'"), ("rand-m", "'m'"), ("rand-m9-", "''"),
])
def test_a_bad_token_is_named(text, token):
    with pytest.raises(PolicyError, match=token):
        RandAugmentPolicy.parse(text)


def test_frame_crops_are_the_clip_crops_in_the_frame_layout():
    from vov3d.datasets import transform

    frames = [_smooth_image(seed, 48, 64) for seed in range(5)]
    for seed in range(6):  # flips and corners of several draws
        clip = transform.train_crops(frames, (40, 56), 32, False, True, np.random.RandomState(seed))
        crops = transform.train_crop_frames(frames, (40, 56), 32, False, True, np.random.RandomState(seed))
        assert crops.shape == (5, 32, 32, 3) and np.array_equal(transform.frames_to_clip(crops), clip)
