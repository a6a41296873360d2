"""tools/make_toy_dataset.py: deterministic, balanced, decodable, and time is needed."""
import filecmp
import json
import os
import runpy
import subprocess

import av
import numpy as np
import pytest

from tests.conftest import PYTHON, REPO_ROOT, run_tool_env

TOOL = os.path.join(REPO_ROOT, "tools", "make_toy_dataset.py")


@pytest.fixture(scope="module")
def tool():
    return runpy.run_path(TOOL)


def small(tool, out, seed=5, fmt="kinetics"):
    return tool["generate"](str(out), num_classes=6, videos_per_class=2, eval_per_class=1,
                            num_frames=16, width=48, height=32, seed=seed, fmt=fmt)


def test_same_seed_same_bytes_balanced_and_decodable(tool, tmp_path):
    counts = small(tool, tmp_path / "a")
    small(tool, tmp_path / "b")
    assert counts == {"train": 12, "val": 6, "test": 6}
    a, b = tmp_path / "a", tmp_path / "b"
    names = sorted(os.listdir(a / "videos"))
    assert len(names) == 24
    match, mismatch, errors = filecmp.cmpfiles(a / "videos", b / "videos", names, shallow=False)
    assert mismatch == [] and errors == []
    assert (a / "train.csv").read_text() == (b / "train.csv").read_text()
    assert json.loads((a / "classes.json").read_text())[:2] == ["moving up", "moving down"]
    labels = [int(line.split()[1]) for line in (a / "train.csv").read_text().splitlines()]
    assert np.bincount(labels).tolist() == [2] * 6
    for line in (a / "test.csv").read_text().splitlines():
        with av.open(str(a / line.split()[0])) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 16 and frames[0].shape == (32, 48, 3)
    small(tool, tmp_path / "c", seed=6)
    assert not filecmp.cmp(a / "videos" / names[0], tmp_path / "c" / "videos" / names[0], shallow=False)


def test_pairs_are_exact_time_reversals(tool):
    """Same random draws, paired class: the frames are the same, in reverse order."""
    for label in (0, 2, 4):
        for seed in range(5):
            forward = tool["render_video"](
                tool["sample_params"](label, 16, 32, 48, np.random.default_rng(seed)), 32, 48)
            backward = tool["render_video"](
                tool["sample_params"](label + 1, 16, 32, 48, np.random.default_rng(seed)), 32, 48)
            assert np.array_equal(forward, backward[::-1])
            assert not np.array_equal(forward, backward)  # yet the videos differ


def test_time_free_statistics_cannot_separate_pairs(tool):
    """Over the same random draws, paired classes have identical mean frames (what a model
    that averages frames sees), while the change from first to last frame flips sign."""
    for label in (0, 2, 4):
        videos = {c: [tool["render_video"](tool["sample_params"](c, 8, 32, 48, np.random.default_rng(s)),
                                           32, 48).astype(np.float64) for s in range(20)]
                  for c in (label, label + 1)}
        mean_frame = {c: np.mean([v.mean(0) for v in videos[c]], 0) for c in videos}
        assert np.allclose(mean_frame[label], mean_frame[label + 1])
        change = {c: np.mean([v[-1] - v[0] for v in videos[c]], 0) for c in videos}
        assert np.allclose(change[label], -change[label + 1]) and np.abs(change[label]).max() > 20


def test_something_something_layouts(tool, tmp_path):
    small(tool, tmp_path / "v1", fmt="ssv1")
    small(tool, tmp_path / "v2", fmt="ssv2")
    v1 = (tmp_path / "v1" / "something-something-v1-train.csv").read_text().splitlines()
    assert len(v1) == 12 and v1[0] == "00001;moving up"
    assert (tmp_path / "v1" / "frames" / "00001" / "00016.jpg").is_file()
    labels = json.loads((tmp_path / "v2" / "something-something-v2-labels.json").read_text())
    assert labels["Something moving down"] == "1"
    entry = json.loads((tmp_path / "v2" / "something-something-v2-validation.json").read_text())[0]
    assert entry["template"] == "[Something] moving up" and entry["id"] == "00013"
    assert (tmp_path / "v2" / "frames" / "00013" / "00013_000016.jpg").is_file()
    with av.open(str(tmp_path / "v2" / "videos" / "00013.webm")) as container:
        assert len(list(container.decode(video=0))) == 16
    header = (tmp_path / "v2" / "val.csv").read_text().splitlines()[:2]
    assert header == ["original_vido_id video_id frame_id path labels",
                      '00013 0 0 00013/00013_000001.jpg ""']


def test_command_line(tmp_path):
    out = subprocess.run([PYTHON, TOOL, "--out", str(tmp_path / "t"), "--classes", "2",
                          "--videos-per-class", "1", "--eval-per-class", "1", "--frames", "8",
                          "--size", "32x32"], env=run_tool_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "train 2, val 2, test 2 videos" in out.stdout
    bad = subprocess.run([PYTHON, TOOL, "--out", str(tmp_path / "u"), "--size", "33x32"],
                         env=run_tool_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "must be even" in bad.stderr


def test_demo_video_plays_the_first_test_video_of_every_class(tool, tmp_path):
    out = tmp_path / "d"
    tool["generate"](str(out), num_classes=3, videos_per_class=1, eval_per_class=2, num_frames=8, width=32,
                     height=32, seed=3, demo_video=str(tmp_path / "demo.mp4"))

    def decode(path):
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)

    demo = decode(tmp_path / "demo.mp4")
    rows = [line.split() for line in (out / "test.csv").read_text().splitlines()]
    first = [next(path for path, label in rows if int(label) == c) for c in range(3)]
    assert demo.shape == (24, 32, 32, 3)
    for c, path in enumerate(first):  # the same frames, up to the codec
        assert np.abs(demo[8 * c:8 * c + 8] - decode(out / path)).mean() < 2
    assert np.abs(demo[:8] - decode(out / first[1])).mean() > 2 * np.abs(demo[:8] - decode(out / first[0])).mean()
