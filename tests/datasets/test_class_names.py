"""Class names: Kinetics lists with DATA.CLASS_NAMES_PATH (names or indices as labels), and
the names every dataset exposes in label order."""
import json

import pytest

from tests.datasets.conftest import make_cfg
from vov3d.datasets import build_dataset
from vov3d.datasets.lists import ListFormatError

NAMES = ["abseiling", "air drumming", "zumba", "yoga", "welding", "archery"]


def _kinetics(root, names, lines, filename="classes.json"):
    (root / filename).write_text(json.dumps(names))
    (root / "train.csv").write_text("".join(line + "\n" for line in lines))
    return build_dataset("kinetics", make_cfg(root, "DATA.CLASS_NAMES_PATH", filename), "train")


def test_labels_may_be_names_or_indices(tmp_path):
    dataset = _kinetics(tmp_path, NAMES, ["a b.mp4 air drumming", "c.mp4 2", "d.mp4 archery"])
    # Kinetics names contain spaces: the line splits before the longest name that ends it.
    assert dataset.class_names == NAMES
    assert dataset.labels == [1, 2, 5]
    assert dataset.video_path(0).endswith("/a b.mp4")


def test_name_with_space_needs_another_separator(tmp_path):
    (tmp_path / "classes.json").write_text(json.dumps(NAMES))
    (tmp_path / "train.csv").write_text("x/a b.mp4,air drumming\nx/c.mp4,welding\n")
    cfg = make_cfg(tmp_path, "DATA.CLASS_NAMES_PATH", "classes.json",
                   "DATA.PATH_LABEL_SEPARATOR", ",")
    dataset = build_dataset("kinetics", cfg, "train")
    assert dataset.labels == [1, 4]
    assert dataset.video_path(0).endswith("x/a b.mp4")


def test_pyslowfast_object_format_is_ordered_by_index(tmp_path):
    mapping = {name: i for i, name in enumerate(NAMES)}
    shuffled = dict(sorted(mapping.items()))  # file order differs from index order
    dataset = _kinetics(tmp_path, shuffled, ["v.mp4 zumba"])
    assert dataset.class_names == NAMES and dataset.labels == [2]


@pytest.mark.parametrize("names, message", [
    (NAMES[:5], r"names 5 classes but MODEL.NUM_CLASSES is 6"),
    (NAMES[:5] + ["zumba"], r"listed twice: zumba"),
    ({"a": 0, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}, r"indices are not 0 \.\. 5"),
    ({"a": "x"}, r"class index is not an integer"),
    ("abseiling", r"expected a JSON list of 6 class names"),
    (NAMES[:5] + [""], r"non-empty string"),
])
def test_bad_class_name_files(tmp_path, names, message):
    with pytest.raises(ListFormatError, match=message):
        _kinetics(tmp_path, names, ["v.mp4 0"])


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(ListFormatError, match=r"train.csv:2: label 'surfing' is not an integer "
                                              r"class index or a class name"):
        _kinetics(tmp_path, NAMES, ["v.mp4 0", "w.mp4 surfing"])
    (tmp_path / "train.csv").write_text("v.mp4 surfing\n")
    with pytest.raises(ListFormatError, match=r"need DATA.CLASS_NAMES_PATH"):
        build_dataset("kinetics", make_cfg(tmp_path), "train")
    with pytest.raises(FileNotFoundError, match=r"needs the class names of DATA.CLASS_NAMES_PATH: "
                                                r".*nowhere.json does not exist"):
        build_dataset("kinetics", make_cfg(tmp_path, "DATA.CLASS_NAMES_PATH", "nowhere.json"), "train")


def test_kinetics_without_names_has_none(tmp_path):
    (tmp_path / "train.csv").write_text("v.mp4 3\n")
    assert build_dataset("kinetics", make_cfg(tmp_path), "train").class_names is None


def test_something_something_names_in_label_order(ss_roots):
    root = ss_roots["ssv2"]
    labels = json.loads((root / "something-something-v2-labels.json").read_text())
    v2 = build_dataset("ssv2", make_cfg(root, "MODEL.NUM_CLASSES", "2"), "train")
    assert [int(labels[name]) for name in v2.class_names] == list(range(len(labels)))
    root = ss_roots["ssv1"]
    v1 = build_dataset("ssv1", make_cfg(root, "MODEL.NUM_CLASSES", "2"), "train")
    assert v1.class_names == (root / "something-something-v1-labels.csv").read_text().split("\n")[:len(v1.class_names)]
