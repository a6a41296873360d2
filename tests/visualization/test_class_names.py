"""Class-name files of TENSORBOARD: names, subsets and parent categories, and their errors."""
import json

import pytest

from vov3d.config import ConfigError, get_cfg
from vov3d.visualization.class_names import (choose_class_names, read_categories, read_class_subset,
                                             read_tensorboard_class_names)

NAMES = ["abseiling", "air drumming", "answering questions", "applauding", "applying cream"]


def _cfg(**tensorboard):
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = len(NAMES)
    for key, value in tensorboard.items():
        cfg.TENSORBOARD[key] = value
    return cfg


def test_pyslowfast_name_to_index_json_gives_names_in_label_order(tmp_path):
    path = tmp_path / "kinetics_classnames.json"
    path.write_text(json.dumps({name: i for i, name in reversed(list(enumerate(NAMES)))}))
    assert read_tensorboard_class_names(_cfg(CLASS_NAMES_PATH=str(path))) == NAMES
    assert read_tensorboard_class_names(_cfg()) is None


def test_names_come_from_the_data_then_the_checkpoint_then_tensorboard(tmp_path):
    path = tmp_path / "names.json"
    path.write_text(json.dumps(NAMES))
    cfg = _cfg(CLASS_NAMES_PATH=str(path))
    assert choose_class_names(cfg, None, None) == NAMES
    assert choose_class_names(cfg, NAMES, None) == NAMES
    assert choose_class_names(_cfg(), None, ("a", "b", "c", "d", "e")) == ["a", "b", "c", "d", "e"]
    assert choose_class_names(_cfg(), None, None) is None
    swapped = [NAMES[1], NAMES[0]] + NAMES[2:]
    with pytest.raises(ConfigError) as err:
        choose_class_names(cfg, swapped, None)
    assert str(err.value) == (f"TENSORBOARD.CLASS_NAMES_PATH '{path}' names label 0 'abseiling' but "
                              "DATA.CLASS_NAMES_PATH names it 'air drumming'; use one numbering of the classes "
                              "(or leave TENSORBOARD.CLASS_NAMES_PATH empty).")


def test_missing_class_names_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"TENSORBOARD.CLASS_NAMES_PATH '.*nope.json' does not exist"):
        read_tensorboard_class_names(_cfg(CLASS_NAMES_PATH=str(tmp_path / "nope.json")))


def test_subset_reads_names_in_file_order(tmp_path):
    path = tmp_path / "subset.txt"
    path.write_text("applauding\n\n  abseiling \napplauding\n")
    assert read_class_subset(str(path), NAMES, "TENSORBOARD.CONFUSION_MATRIX.SUBSET_PATH") == [3, 0]


def test_unknown_class_in_a_subset_names_file_line_and_closest_names(tmp_path):
    path = tmp_path / "subset.txt"
    path.write_text("abseiling\napplaudin\n")
    with pytest.raises(ConfigError) as err:
        read_class_subset(str(path), NAMES, "TENSORBOARD.HISTOGRAM.SUBSET_PATH")
    assert str(err.value) == (f"TENSORBOARD.HISTOGRAM.SUBSET_PATH '{path}', line 2: 'applaudin' is not a class "
                              "name; closest: 'applauding'.")


def test_subset_without_class_names_says_where_to_get_them(tmp_path):
    path = tmp_path / "subset.txt"
    path.write_text("abseiling\n")
    with pytest.raises(ConfigError, match=r"SUBSET_PATH picks classes by name, but no class names are known: set "
                                          r"TENSORBOARD.CLASS_NAMES_PATH"):
        read_class_subset(str(path), None, "TENSORBOARD.CONFUSION_MATRIX.SUBSET_PATH")


def test_categories_map_parents_to_child_indices(tmp_path):
    path = tmp_path / "parents.json"
    path.write_text(json.dumps({"hands": ["applauding", "air drumming"], "outdoor": ["abseiling"]}))
    assert read_categories(str(path), NAMES) == {"hands": [3, 1], "outdoor": [0]}


def test_category_child_that_is_no_class_names_file_line_and_closest_names(tmp_path):
    path = tmp_path / "parents.json"
    path.write_text('{\n "hands": ["applauding",\n   "air drums"],\n "outdoor": ["abseiling"]\n}\n')
    with pytest.raises(ConfigError) as err:
        read_categories(str(path), NAMES)
    assert str(err.value) == (f"TENSORBOARD.CATEGORIES_PATH '{path}', line 3: parent 'hands' lists 'air drums', "
                              "which is not a class name; closest: 'air drumming'.")
    path.write_text('{"hands": "applauding"}')
    with pytest.raises(ConfigError, match=r"expected a JSON object \{\"parent\": \[\"child class\", \.\.\.\]"):
        read_categories(str(path), NAMES)
