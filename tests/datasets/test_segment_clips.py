"""SSv1/SSv2: segment indices end to end (L = 37, T = 8), frame folders and .webm files,
channel order, decode-once == per-view, label files."""
import json

import numpy as np
import pytest
import torch

from tests.datasets.conftest import make_cfg
from vov3d.datasets import build_dataset
from vov3d.engine.input_step import InputStep

L = 37
SPREAD = [[1, 5, 10, 15, 19, 23, 28, 33], [3, 8, 13, 17, 21, 26, 31, 35]]
MIDPOINT = [2, 6, 11, 16, 20, 24, 29, 34]
STARTS, ENDS = [0, 4, 9, 14, 18, 22, 27, 32], [4, 9, 14, 18, 22, 27, 32, 36]


def colour_ramp(num_frames):
    """Frame j: R = G = 6 j, B = 255 - 6 j (RGB)."""
    frames = np.zeros((num_frames, 32, 48, 3), dtype=np.uint8)
    for j in range(num_frames):
        frames[j] = (6 * j, 6 * j, 255 - 6 * j)
    return frames


def model_input(dataset, clip):
    """What the model sees of a dataset's uint8 clip: the input step's output under the
    dataset's config (RGB when DATA.REVERSE_INPUT_CHANNEL reverses OpenCV's BGR)."""
    return InputStep(dataset.cfg, torch.device("cpu")).clips(clip)


def red_numbers(clip):
    """Frame index from channel 0 of a normalised [3, T, H, W] clip that is RGB."""
    red = clip[0].mean(dim=(1, 2)).numpy() * 0.225 + 0.45
    return np.round(red * 255 / 6).astype(int).tolist()


@pytest.fixture(scope="module")
def ramp_ssv2(tmp_path_factory, toy_tool):
    root = tmp_path_factory.mktemp("ramp_ssv2")
    frames = colour_ramp(L)
    videos = []
    for vid in ("7", "8"):
        names = toy_tool["write_jpegs"](str(root / "frames" / vid), frames, vid + "_%06d.jpg")
        videos.append((vid, [f"{vid}/{n}" for n in names]))
        (root / "videos").mkdir(exist_ok=True)
        toy_tool["write_video"](str(root / "videos" / f"{vid}.webm"), frames, "libvpx-vp9", 8)
    (root / "something-something-v2-labels.json").write_text(
        json.dumps({"Pushing something": "0", "Pulling something": "1"}))
    entries = [{"id": "7", "template": "Pushing [something]"}, {"id": "8", "template": "Pulling [something]"}]
    for official, name in (("train", "train.csv"), ("validation", "val.csv")):
        (root / f"something-something-v2-{official}.json").write_text(json.dumps(entries))
        toy_tool["write_frame_list"](str(root / name), videos)
    return root


def ss_cfg(root, prefix, *overrides):
    # Every Something-Something copy here has 2 classes; the label file must match.
    return make_cfg(root, "MODEL.NUM_CLASSES", "2", "DATA.PATH_PREFIX", str(prefix),
                    "TEST.NUM_ENSEMBLE_VIEWS", "2",
                    "DATA.REVERSE_INPUT_CHANNEL", "True", "DATA.RANDOM_FLIP", "False", *overrides)


@pytest.mark.parametrize("source", ["frames", "webm"])
def test_spread_views_and_decode_once(ramp_ssv2, source):
    ext = ".webm" if source == "webm" else ""
    cfg = ss_cfg(ramp_ssv2, ramp_ssv2 / ("videos" if ext else "frames"), "DATA.SSV2_VIDEO_EXT", ext)
    dataset = build_dataset("ssv2", cfg, "test")
    inputs, label, index, meta = dataset[1]
    assert inputs[0].shape == (6, 3, 8, 32, 32) and (label, index) == (1, 1) and meta["failed"] == 0
    for view in range(6):
        assert red_numbers(model_input(dataset, inputs[0][view])) == SPREAD[view // 3], view
        assert torch.equal(dataset.get_view(1, view), inputs[0][view])


def test_midpoint_and_random_test_modes(ramp_ssv2):
    prefix = ramp_ssv2 / "frames"
    mid = build_dataset("ssv2", ss_cfg(ramp_ssv2, prefix, "DATA.SEGMENT_TEST_SAMPLING", "midpoint"), "test")
    assert all(red_numbers(view) == MIDPOINT for view in model_input(mid, mid[0][0][0]))
    one = build_dataset("ssv2", ss_cfg(ramp_ssv2, prefix, "TEST.NUM_ENSEMBLE_VIEWS", "1",
                                       "TEST.NUM_SPATIAL_CROPS", "1"), "test")
    assert red_numbers(model_input(one, one[0][0][0][0])) == MIDPOINT
    rnd = build_dataset("ssv2", ss_cfg(ramp_ssv2, prefix, "DATA.SEGMENT_TEST_SAMPLING", "random"), "test")
    np.random.seed(0)
    views = [red_numbers(v) for v in model_input(rnd, rnd[0][0][0])]
    assert len({tuple(v) for v in views}) > 1  # every view (even crops) draws its own frames
    assert all(s <= i <= e for v in views for i, s, e in zip(v, STARTS, ENDS))


def test_train_range_and_val_midpoint(ramp_ssv2):
    prefix = ramp_ssv2 / "frames"
    train = build_dataset("ssv2", ss_cfg(ramp_ssv2, prefix), "train")
    np.random.seed(1)
    draws = np.array([red_numbers(model_input(train, train[0][0][0])) for _ in range(30)])
    assert (draws >= STARTS).all() and (draws <= ENDS).all() and len({tuple(d) for d in draws}) > 1
    assert train[0][0][0].shape == (3, 8, 32, 32)
    val = build_dataset("ssv2", ss_cfg(ramp_ssv2, prefix), "val")
    assert red_numbers(model_input(val, val[0][0][0])) == MIDPOINT


def test_channel_order_flag_reverses_loader_order(ramp_ssv2):
    prefix = ramp_ssv2 / "frames"
    flagged = build_dataset("ssv2", ss_cfg(ramp_ssv2, prefix), "test")
    plain = build_dataset("ssv2", ss_cfg(ramp_ssv2, prefix, "DATA.REVERSE_INPUT_CHANNEL", "False"), "test")
    clips = flagged[0][0][0]
    # The flag leaves items in the loader's (BGR) order, with red in channel 2.
    assert torch.equal(clips, plain[0][0][0])
    assert np.round(clips[0, 2].double().mean(dim=(1, 2)).numpy() / 6).astype(int).tolist() == SPREAD[0]
    rgb, bgr = model_input(flagged, clips), model_input(plain, clips)
    assert torch.equal(rgb, bgr.flip(1))
    # Without the flag channel 0 is blue (255 - 6 j): OpenCV delivers BGR.
    assert red_numbers(rgb[0]) == SPREAD[0] and red_numbers(bgr[0]) != SPREAD[0]


@pytest.mark.parametrize("fmt", ["ssv1", "ssv2"])
def test_toy_copies_load(ss_roots, fmt):
    root = ss_roots[fmt]
    cfg = ss_cfg(root, root / "frames")
    labels = json.loads((root / "classes.json").read_text())
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        dataset = build_dataset(fmt, cfg, split)
        assert dataset.num_videos == count and sorted(set(dataset.labels)) == [0, 1]
    test = build_dataset(fmt, cfg, "test")
    inputs, label, _, _ = test[1]
    assert inputs[0].shape == (6, 3, 8, 32, 32) and labels[label] in ("moving up", "moving down")
    assert torch.equal(test.get_view(1, 4), inputs[0][4])


def test_ssv2_webm_matches_frames(ss_roots):
    root = ss_roots["ssv2"]
    frames_set = build_dataset("ssv2", ss_cfg(root, root / "frames"), "test")
    frames = frames_set[0][0][0]
    video = build_dataset("ssv2", ss_cfg(root, root / "videos", "DATA.SSV2_VIDEO_EXT", ".webm"),
                          "test")[0][0][0]
    # Same frames through JPEG vs vp9: equal up to compression noise.
    frames, video = model_input(frames_set, frames), model_input(frames_set, video)
    assert (frames - video).abs().mean() < 0.1


def test_ssv1_class_names_are_stripped(ss_roots, tmp_path):
    root = ss_roots["ssv1"]
    for name in ("something-something-v1-labels.csv", "something-something-v1-validation.csv",
                 "val.csv"):
        text = (root / name).read_text()
        if name.endswith("labels.csv"):
            text = "  " + text.replace("\n", " \r\n").rstrip()  # stray spaces, no final newline
        (tmp_path / name).write_text(text)
    cfg = ss_cfg(tmp_path, root / "frames")
    assert build_dataset("ssv1", cfg, "val").labels == build_dataset(
        "ssv1", ss_cfg(root, root / "frames"), "val").labels
