"""merge_file / merge_overrides: yaml with _BASE_ (repeats across files), unknown keys with
suggestions, types and coercion."""
import pytest

from tests.config.config_helpers import write
from vov3d.config import ConfigError, get_cfg, merge_file, merge_overrides


def test_yaml_strings_are_decoded_like_yacs(tmp_path):
    # YAML 1.1 reads 5e-5 as a string; the reference configs write weight decay that way.
    path = write(tmp_path / "wd.yaml", "SOLVER:\n  WEIGHT_DECAY: 5e-5\nDATA:\n  MEAN: '[0.5, 0.5, 0.5]'\n")
    cfg = get_cfg()
    merge_file(cfg, path)
    assert cfg.SOLVER.WEIGHT_DECAY == 5e-5 and cfg.DATA.MEAN == [0.5, 0.5, 0.5]


def test_base_inheritance_is_relative_and_overridden(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "base.yaml", """
        SOLVER:
          BASE_LR: 0.3
          MAX_EPOCH: 11
        MODEL:
          NUM_CLASSES: 10
    """)
    child = write(tmp_path / "sub" / "child.yaml", """
        _BASE_: ../base.yaml
        SOLVER:
          MAX_EPOCH: 12
    """)
    cfg = get_cfg()
    merge_file(cfg, child)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_EPOCH, cfg.MODEL.NUM_CLASSES) == (0.3, 12, 10)


def test_base_cycle_and_missing_base_are_reported(tmp_path):
    write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        merge_file(get_cfg(), str(tmp_path / "a.yaml"))
    write(tmp_path / "c.yaml", "_BASE_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        merge_file(get_cfg(), str(tmp_path / "c.yaml"))


def test_repeats_in_a_base_file_are_found_and_distinct_files_may_repeat_keys(tmp_path):
    write(tmp_path / "base.yaml", "MODEL:\n  NUM_CLASSES: 3\nMODEL:\n  NUM_CLASSES: 4\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml.*'MODEL'.*lines 1 and 3"):
        merge_file(get_cfg(), child)
    # The same key in a base and in its child is an override, not a repeat.
    write(tmp_path / "base.yaml", "MODEL:\n  NUM_CLASSES: 3\nSOLVER:\n  BASE_LR: 0.5\n")
    write(tmp_path / "child.yaml", "_BASE_: base.yaml\nMODEL:\n  NUM_CLASSES: 7\n")
    cfg = get_cfg()
    merge_file(cfg, child)
    assert (cfg.MODEL.NUM_CLASSES, cfg.SOLVER.BASE_LR) == (7, 0.5)


def test_unknown_yaml_key_names_key_file_and_suggestions(tmp_path):
    path = write(tmp_path / "typo.yaml", """
        SOLVER:
          BASE_LRR: 0.1
    """)
    with pytest.raises(ConfigError) as err:
        merge_file(get_cfg(), path)
    msg = str(err.value)
    assert "SOLVER.BASE_LRR" in msg and "typo.yaml" in msg and "SOLVER.BASE_LR" in msg


def test_unknown_override_suggests_by_leaf_name():
    with pytest.raises(ConfigError) as err:
        merge_overrides(get_cfg(), ["TRAIN.NUM_FRAMES", "16"])
    assert "TRAIN.NUM_FRAMES" in str(err.value) and "DATA.NUM_FRAMES" in str(err.value)


@pytest.mark.parametrize("key,first", [("solver.base_lr", "SOLVER.BASE_LR"),
                                       ("Train.Batch_Size", "TRAIN.BATCH_SIZE"),
                                       ("data.num_frame", "DATA.NUM_FRAMES"),
                                       ("solver", "SOLVER")])
def test_unknown_key_suggestions_ignore_case(key, first):
    with pytest.raises(ConfigError) as err:
        merge_overrides(get_cfg(), [key, "1"])
    assert f"Did you mean: {first}" in str(err.value)


def test_yaml_keys_in_lower_case_get_a_suggestion(tmp_path):
    path = write(tmp_path / "lower.yaml", "SOLVER:\n  base_lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"Did you mean: SOLVER\.BASE_LR\?"):
        merge_file(get_cfg(), path)


@pytest.mark.parametrize("key,value,given,expected", [
    ("SOLVER.BASE_LR", "abc", "'abc'", "expected float"),
    ("DATA.TRAIN_JITTER_SCALES", "256", "256", "expected list"),
    ("TRAIN.ENABLE", "1", "1", "expected bool"),
    ("SOLVER.MAX_EPOCH", "2.5", "2.5", "expected int"),
    ("DATA.MEAN", "[0.4, 'x', 0.4]", "'x'", "expected a number"),
])
def test_wrong_type_names_key_given_and_expected(key, value, given, expected):
    with pytest.raises(ConfigError) as err:
        merge_overrides(get_cfg(), [key, value])
    msg = str(err.value)
    assert key in msg and f"got {given}" in msg and expected in msg


def test_int_is_coerced_to_float_and_strings_stay_strings():
    cfg = get_cfg()
    merge_overrides(cfg, ["SOLVER.BASE_LR", "1", "SOLVER.WARMUP_EPOCHS", "5", "OUTPUT_DIR", "2020",
                          "SOLVER.CLIP_GRAD_VAL", "1.5"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.WARMUP_EPOCHS == 5.0 and cfg.OUTPUT_DIR == "2020"
    assert cfg.SOLVER.CLIP_GRAD_VAL == 1.5


def test_odd_override_list_is_an_error():
    with pytest.raises(ConfigError, match="pairs"):
        merge_overrides(get_cfg(), ["NUM_GPUS", "0", "SOLVER.BASE_LR"])
