"""Unreadable, missing, empty and truncated files; malformed lists; missing split files."""
import json
import logging
import os
import random
import shutil

import numpy as np
import pytest
import torch

from tests.datasets.conftest import make_cfg
from vov3d.datasets import build_dataset
from vov3d.datasets.failures import DataLoadError
from vov3d.datasets.lists import ListFormatError

BAD = ["missing.mp4", "empty.mp4", "truncated.mp4", "garbage.mp4"]


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory, kinetics_root):
    root = tmp_path_factory.mktemp("bad")
    shutil.copy(kinetics_root / "long.mp4", root / "good.mp4")
    data = (root / "good.mp4").read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "garbage.mp4").write_bytes(np.random.RandomState(0).bytes(4000))
    for split in ("train", "val", "test"):
        (root / f"{split}.csv").write_text("good.mp4 0\n" + "".join(f"{b} 1\n" for b in BAD)
                                           + "good.mp4 0\n" * 5)
    return root


def bad_cfg(root, *overrides):
    return make_cfg(root, "DATA_LOADER.NUM_RETRIES", "10", "TEST.NUM_ENSEMBLE_VIEWS", "2", *overrides)


def test_train_substitutes_logs_once_and_lists_files(bad_root, caplog):
    dataset = build_dataset("kinetics", bad_cfg(bad_root), "train")
    random.seed(0)
    with caplog.at_level(logging.WARNING):
        for index in range(1, 5):
            for _ in range(2):
                inputs, label, returned, meta = dataset[index]
                assert inputs[0].shape == (3, 8, 32, 32) and meta["num_failures"] >= 1
                assert returned in (0, 5, 6, 7, 8, 9) and label == 0  # a readable video
    listed = [line.split("\t")[0] for line in (bad_root / "out" / "bad_videos.txt").read_text().splitlines()]
    assert sorted(listed) == sorted(str(bad_root / b) for b in BAD)  # each file once
    for name in BAD:
        assert sum(str(bad_root / name) in r.getMessage() for r in caplog.records) == 1
    assert dataset[0][3] == {"num_failures": 0}


def test_same_video_is_retried_before_substitution(bad_root):
    dataset = build_dataset("kinetics", bad_cfg(bad_root), "train")
    random.seed(0)
    *_, meta = dataset[3]  # truncated: attempts 0..6 on the same file, then random others
    assert meta["num_failures"] >= 7


def test_all_bad_training_set_names_files(bad_root, tmp_path):
    (tmp_path / "train.csv").write_text("".join(f"{bad_root / b} 1\n" for b in BAD))
    dataset = build_dataset("kinetics", bad_cfg(tmp_path), "train")
    with pytest.raises(DataLoadError, match=r"after 10 attempts.*(missing|empty|truncated|garbage)\.mp4") as error:
        dataset[0]
    assert f"DATA.PATH_PREFIX ('{tmp_path}')" in str(error.value)
    assert str(tmp_path / "out" / "bad_videos.txt") in str(error.value)


def test_test_split_never_substitutes(bad_root):
    dataset = build_dataset("kinetics", bad_cfg(bad_root), "test")
    good = dataset[0]
    assert good[3]["failed"] == 0
    for index in range(1, 5):
        inputs, label, returned, meta = dataset[index]
        assert (label, returned, meta["failed"]) == (1, index, 1) and meta["num_failures"] >= 1
        assert inputs[0].shape == good[0][0].shape and inputs[0].dtype == torch.uint8 and not inputs[0].any()


def test_bad_frames_and_folders(ss_roots, tmp_path):
    root = tmp_path / "ssv1"
    shutil.copytree(ss_roots["ssv1"], root)
    folders = sorted(os.listdir(root / "frames"))
    shutil.rmtree(root / "frames" / folders[0])  # first train video: folder gone
    val_ids = [line.split(";")[0] for line in (root / "something-something-v1-validation.csv").read_text().split()]
    (root / "frames" / val_ids[0] / "00010.jpg").write_bytes(b"not a jpeg")
    cfg = make_cfg(root, "DATA.PATH_PREFIX", str(root / "frames"), "TEST.NUM_ENSEMBLE_VIEWS", "2",
                   "DATA_LOADER.NUM_RETRIES", "6", "MODEL.NUM_CLASSES", "2")
    train = build_dataset("ssv1", cfg, "train")
    random.seed(0)
    *_, index, meta = train[0]
    assert index != 0 and meta["num_failures"] >= 1
    test = build_dataset("ssv1", cfg, "test")
    assert [test[i][3]["failed"] for i in range(2)] == [1, 0]
    bad = (root / "out" / "bad_videos.txt").read_text()
    assert folders[0] in bad and val_ids[0] in bad


@pytest.mark.parametrize("line, message", [
    ("just_a_path.mp4", r"train.csv:2: expected '<path> <label>'"),
    ("video.mp4 seven", r"train.csv:2: label 'seven' is not an integer"),
    ("video.mp4 6", r"train.csv:2: label 6 is outside \[0, 5\]"),
])
def test_malformed_video_list(tmp_path, line, message):
    (tmp_path / "train.csv").write_text(f"good.mp4 0\n{line}\n")
    with pytest.raises(ListFormatError, match=message):
        build_dataset("kinetics", make_cfg(tmp_path), "train")


def test_list_files_that_are_not_utf8_are_named_with_their_line(ss_roots, tmp_path):
    # Latin-1 "é" (0xe9) where UTF-8 is expected, on the third line.
    (tmp_path / "train.csv").write_bytes(b"a.mp4 0\nb.mp4 1\ncaf\xe9.mp4 2\n")
    with pytest.raises(ListFormatError, match=r"train.csv:3: not UTF-8 text \(byte 0xe9 at column 4\); "
                                              r"save the file as UTF-8"):
        build_dataset("kinetics", make_cfg(tmp_path), "train")
    v1 = tmp_path / "v1"
    shutil.copytree(ss_roots["ssv1"], v1)
    labels = v1 / "something-something-v1-labels.csv"
    labels.write_bytes(labels.read_bytes().replace(b"\n", b" \xff\n", 1))
    with pytest.raises(ListFormatError, match=r"v1-labels.csv:1: not UTF-8 text \(byte 0xff"):
        build_dataset("ssv1", make_cfg(v1, "MODEL.NUM_CLASSES", "2"), "train")
    v2 = tmp_path / "v2"
    shutil.copytree(ss_roots["ssv2"], v2)
    (v2 / "something-something-v2-train.json").write_bytes(b'[\n {"id": "1",\n  "template": "\xe9"}]')
    with pytest.raises(ListFormatError, match=r"v2-train.json:3: not UTF-8 text \(byte 0xe9 at column 16\)"):
        build_dataset("ssv2", make_cfg(v2, "MODEL.NUM_CLASSES", "2"), "train")


def test_an_image_renamed_as_a_video_is_named_once_per_file(tmp_path, kinetics_root, caplog):
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((48, 64, 3), 90, np.uint8))
    shutil.copy(tmp_path / "photo.jpg", tmp_path / "photo.mp4")
    shutil.copy(kinetics_root / "long.mp4", tmp_path / "long.mp4")
    (tmp_path / "test.csv").write_text("photo.mp4 0\nlong.mp4 1\n")
    test = build_dataset("kinetics", make_cfg(tmp_path, "TEST.NUM_ENSEMBLE_VIEWS", "2"), "test")
    with caplog.at_level(logging.WARNING):
        items = [test[0], test[0], test[1]]
    assert [item[3]["video_frames"] for item in items] == [1, 1, 40]
    assert [item[3]["failed"] for item in items] == [0, 0, 0]  # it decodes: only the warning tells
    warnings = [r.getMessage() for r in caplog.records if "frame(s)" in r.getMessage()]
    assert warnings == [f"{tmp_path / 'photo.mp4'} holds 1 frame(s): every clip of it is one still image. Is it "
                        "really a video (not an image renamed, or a truncated download)?"]


def test_missing_split_file_names_file_and_split(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"split 'test' needs the video list: .*test.csv"):
        build_dataset("kinetics", make_cfg(tmp_path), "test")
    (tmp_path / "train.csv").write_text("\n")
    with pytest.raises(ListFormatError, match="lists no videos"):
        build_dataset("kinetics", make_cfg(tmp_path), "train")


def test_malformed_something_something_files(ss_roots, tmp_path):
    v1 = tmp_path / "v1"
    shutil.copytree(ss_roots["ssv1"], v1)
    with open(v1 / "something-something-v1-train.csv", "a") as f:
        f.write("99999;no such class\n")
    with pytest.raises(ListFormatError, match=r"v1-train.csv:5: unknown class name 'no such class'"):
        build_dataset("ssv1", make_cfg(v1, "MODEL.NUM_CLASSES", "2"), "train")
    v2 = tmp_path / "v2"
    shutil.copytree(ss_roots["ssv2"], v2)
    split = json.loads((v2 / "something-something-v2-train.json").read_text())
    split[1]["template"] = "Juggling [something]"
    (v2 / "something-something-v2-train.json").write_text(json.dumps(split))
    with pytest.raises(ListFormatError, match=r"entry 1 .*'Juggling \[something\]', which is not in the labels"):
        build_dataset("ssv2", make_cfg(v2, "MODEL.NUM_CLASSES", "2"), "train")
    (v2 / "something-something-v2-validation.json").write_text('[{"id": "1",')
    with pytest.raises(ListFormatError, match=r"validation.json:1: not valid JSON"):
        build_dataset("ssv2", make_cfg(v2, "MODEL.NUM_CLASSES", "2"), "val")
    (v2 / "val.csv").write_text("original_vido_id video_id frame_id path labels\n1 0 0 a.jpg\n")
    with pytest.raises(FileNotFoundError, match="split 'val' needs the template labels|not valid"):
        os.remove(v2 / "something-something-v2-labels.json")
        build_dataset("ssv2", make_cfg(v2, "MODEL.NUM_CLASSES", "2"), "val")


def test_malformed_frame_list(ss_roots, tmp_path):
    root = tmp_path / "v1"
    shutil.copytree(ss_roots["ssv1"], root)
    lines = (root / "train.csv").read_text().splitlines()
    lines[3] = lines[3] + " extra"
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ListFormatError, match=r"train.csv:4: expected 5 space-separated fields"):
        build_dataset("ssv1", make_cfg(root, "MODEL.NUM_CLASSES", "2"), "train")


def test_check_tool_lists_bad_files(bad_root, tmp_path, capsys):
    import runpy

    from tests.conftest import REPO_ROOT

    dataset = build_dataset("kinetics", bad_cfg(bad_root), "val")
    assert dataset.check(0) is None and "empty" in dataset.check(2)
    cfg_file = tmp_path / "check.yaml"
    cfg_file.write_text("NUM_GPUS: 0\nMODEL:\n  NUM_CLASSES: 2\nDATA:\n  NUM_FRAMES: 8\n  SAMPLING_RATE: 4\n")
    tool = runpy.run_path(os.path.join(REPO_ROOT, "tools", "check_dataset.py"))
    status = tool["main"](["--cfg", str(cfg_file), "--splits", "val", "DATA.PATH_TO_DATA_DIR",
                           str(bad_root), "DATA.PATH_PREFIX", str(bad_root),
                           "OUTPUT_DIR", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert status == 1 and "val: 10 videos, 4 unreadable" in out
    assert all(name in out for name in BAD)
    assert len((tmp_path / "out" / "bad_videos.txt").read_text().splitlines()) == 4


@pytest.mark.parametrize("fmt, labels_file", [("ssv1", "something-something-v1-labels.csv"),
                                              ("ssv2", "something-something-v2-labels.json")])
@pytest.mark.parametrize("num_classes", ["174", "1"])
def test_something_something_class_count_must_match(ss_roots, fmt, labels_file, num_classes):
    # The toy label files name 2 classes: a bigger head would train never-used outputs, a
    # smaller one (SSv2) must not be reported as an out-of-range index.
    with pytest.raises(ListFormatError, match=rf"{labels_file} names 2 classes but "
                                              rf"MODEL.NUM_CLASSES is {num_classes}\."):
        build_dataset(fmt, make_cfg(ss_roots[fmt], "MODEL.NUM_CLASSES", num_classes), "train")
    assert build_dataset(fmt, make_cfg(ss_roots[fmt], "MODEL.NUM_CLASSES", "2"), "train").num_videos == 4


def test_ssv2_template_indices_must_be_distinct(ss_roots, tmp_path):
    root = tmp_path / "v2"
    shutil.copytree(ss_roots["ssv2"], root)
    labels = json.loads((root / "something-something-v2-labels.json").read_text())
    (root / "something-something-v2-labels.json").write_text(
        json.dumps({name: "0" for name in labels}))
    with pytest.raises(ListFormatError, match=r"labels.json: index\(es\) 0 are given to more than "
                                              r"one template; expected each of 0 \.\. 1 once"):
        build_dataset("ssv2", make_cfg(root, "MODEL.NUM_CLASSES", "2"), "train")


def test_all_bad_training_set_in_a_worker_stays_a_data_load_error(bad_root, tmp_path):
    from vov3d.datasets.loader import construct_loader

    (tmp_path / "train.csv").write_text("".join(f"{bad_root / b} 1\n" for b in BAD))
    loader = construct_loader(bad_cfg(tmp_path, "DATA_LOADER.NUM_WORKERS", "1",
                                      "DATA_LOADER.NUM_RETRIES", "2"), "train")
    # PyTorch re-creates a worker's exception from its message alone.
    with pytest.raises(DataLoadError, match=r"Failed to load a train clip after 2 attempts"):
        next(iter(loader))
