"""tools/make_video_lists.py: a folder-per-class tree becomes lists the Kinetics reader takes."""
import json
import os
import runpy
import shutil

import pytest

from tests.conftest import REPO_ROOT
from tests.datasets.conftest import make_cfg
from vov3d.datasets import build_dataset

TOOL = os.path.join(REPO_ROOT, "tools", "make_video_lists.py")


@pytest.fixture(scope="module")
def tool():
    return runpy.run_path(TOOL)


def _tree(root, split, classes):
    for name, videos in classes.items():
        os.makedirs(root / split / name, exist_ok=True)
        for video in videos:
            (root / split / name / video).write_bytes(b"x")


def test_lists_round_trip_through_the_reader(tool, tmp_path, capsys):
    _tree(tmp_path, "train", {"zumba": ["b.mp4", "a.mp4"], "air drumming": ["c d.webm"],
                              "yoga": ["e.mp4", "notes.txt"]})
    _tree(tmp_path, "val", {"yoga": ["f.mkv"], "zumba": ["g.mp4"]})
    assert tool["main"](["--root", str(tmp_path), "--test-split", "val"]) == 0
    names = json.loads((tmp_path / "classes.json").read_text())
    assert names == ["air drumming", "yoga", "zumba"]
    assert (tmp_path / "train.csv").read_text().splitlines() == [
        "train/air drumming/c d.webm 0", "train/yoga/e.mp4 1", "train/zumba/a.mp4 2",
        "train/zumba/b.mp4 2"]
    assert (tmp_path / "test.csv").read_text() == (tmp_path / "val.csv").read_text() == \
        "val/yoga/f.mkv 1\nval/zumba/g.mp4 2\n"
    cfg = make_cfg(tmp_path, "MODEL.NUM_CLASSES", "3", "DATA.CLASS_NAMES_PATH", "classes.json")
    train = build_dataset("kinetics", cfg, "train")
    assert train.labels == [0, 1, 2, 2] and train.class_names == names
    assert train.video_path(0) == os.path.join(str(tmp_path), "train/air drumming/c d.webm")
    # A second run refuses to replace the lists it wrote.
    assert tool["main"](["--root", str(tmp_path)]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert tool["main"](["--root", str(tmp_path), "--overwrite"]) == 0


def test_bad_trees_are_named(tool, tmp_path, capsys):
    assert tool["main"](["--root", str(tmp_path)]) == 1
    assert "has no train/ folder" in capsys.readouterr().err
    _tree(tmp_path, "train", {"yoga": ["a.mp4"]})
    _tree(tmp_path, "val", {"surfing": ["b.mp4"]})
    assert tool["main"](["--root", str(tmp_path)]) == 1
    assert "classes that train/ lacks: surfing" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "val")
    assert tool["main"](["--root", str(tmp_path), "--test-split", "val"]) == 1
    assert "--test-split val" in capsys.readouterr().err
