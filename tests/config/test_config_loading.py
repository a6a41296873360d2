"""Config merging: defaults -> yaml (_BASE_) -> overrides -> flags -> validation."""
import argparse
import os
import textwrap

import pytest

from vov3d.config import ConfigError, get_cfg, load_config, merge_file, merge_overrides
from vov3d.config.load import parse_args


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def args_for(cfg_file, opts=(), num_shards=1, shard_id=0):
    return argparse.Namespace(cfg_file=cfg_file, opts=list(opts), num_shards=num_shards,
                              shard_id=shard_id, init_method="tcp://localhost:9999")


def test_yaml_then_overrides_then_flags(tmp_path):
    path = write(tmp_path / "a.yaml", """
        NUM_GPUS: 0
        SOLVER:
          BASE_LR: 0.2
          MAX_EPOCH: 7
        DATA:
          TRAIN_JITTER_SCALES: [128, 160]
          TRAIN_CROP_SIZE: 112
    """)
    cfg = load_config(args_for(path, ["SOLVER.MAX_EPOCH", "9", "DATA.PATH_PREFIX", "/x y"]))
    assert cfg.SOLVER.BASE_LR == 0.2 and cfg.SOLVER.MAX_EPOCH == 9
    assert cfg.DATA.TRAIN_JITTER_SCALES == [128, 160] and cfg.DATA.PATH_PREFIX == "/x y"
    assert cfg.NUM_GPUS == 0 and cfg.is_frozen()


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


def test_validation_runs_after_merge_and_scales_lr_by_shards(tmp_path):
    path = write(tmp_path / "s.yaml", """
        NUM_GPUS: 0
        SOLVER:
          BASE_LR: 0.1
          WARMUP_START_LR: 0.01
          COSINE_END_LR: 0.001
          BASE_LR_SCALE_NUM_SHARDS: True
    """)
    cfg = load_config(args_for(path, num_shards=4, shard_id=3))
    assert cfg.NUM_SHARDS == 4 and cfg.SHARD_ID == 3
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.4)
    assert cfg.SOLVER.WARMUP_START_LR == pytest.approx(0.04)
    assert cfg.SOLVER.COSINE_END_LR == pytest.approx(0.004)


def test_flags_win_over_yaml_shards(tmp_path):
    path = write(tmp_path / "n.yaml", "NUM_GPUS: 0\nNUM_SHARDS: 8\n")
    assert load_config(args_for(path)).NUM_SHARDS == 1


@pytest.mark.parametrize("opts,key", [
    (["NUM_GPUS", "3"], "TRAIN.BATCH_SIZE"),
    (["TEST.NUM_SPATIAL_CROPS", "2"], "TEST.NUM_SPATIAL_CROPS"),
    (["SOLVER.LR_POLICY", "linear"], "SOLVER.LR_POLICY"),
    (["TEST.ENSEMBLE_METHOD", "mean"], "TEST.ENSEMBLE_METHOD"),
    (["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[5, 10]",
      "SOLVER.LRS", "[1, 0.1]"], "SOLVER.STEPS"),
    (["MULTIGRID.LONG_CYCLE", "True"], "MULTIGRID"),
    (["DATA.MULTI_LABEL", "True"], "DATA.MULTI_LABEL"),
    (["TENSORBOARD.MODEL_VIS.ENABLE", "True"], "TENSORBOARD.MODEL_VIS.ENABLE"),
])
def test_invalid_merged_values_are_rejected(tmp_path, opts, key):
    path = write(tmp_path / "v.yaml", "NUM_GPUS: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(args_for(path, opts))
    assert key in str(err.value)


def test_cpu_batch_sizes_need_no_divisibility(tmp_path):
    path = write(tmp_path / "c.yaml", "NUM_GPUS: 0\nTRAIN:\n  BATCH_SIZE: 7\n")
    assert load_config(args_for(path)).TRAIN.BATCH_SIZE == 7


def test_legacy_data_ensemble_method_is_honoured(tmp_path):
    path = write(tmp_path / "e.yaml", "NUM_GPUS: 0\nDATA:\n  ENSEMBLE_METHOD: max\n")
    assert load_config(args_for(path)).TEST.ENSEMBLE_METHOD == "max"


def test_parse_args_accepts_trailing_pairs_and_opts_flag(tmp_path):
    path = write(tmp_path / "p.yaml", "NUM_GPUS: 0\n")
    a = parse_args(["--cfg", path, "--num_shards", "2", "--shard_id", "1", "NUM_GPUS", "0"])
    assert a.opts == ["NUM_GPUS", "0"] and a.num_shards == 2 and a.shard_id == 1
    b = parse_args(["--cfg", path, "--opts", "SOLVER.BASE_LR", "0.5"])
    assert b.opts == ["SOLVER.BASE_LR", "0.5"]


@pytest.mark.parametrize("argv,needle", [
    (["--shard_id", "2", "--num_shards", "2"], "--shard_id"),
    (["NUM_GPUS"], "pairs"),
    (["NUM_GPUS", "0", "--shard_id", "1"], "before"),
])
def test_parse_args_rejects_bad_command_lines(tmp_path, capsys, argv, needle):
    path = write(tmp_path / "p.yaml", "NUM_GPUS: 0\n")
    with pytest.raises(SystemExit) as exc:
        parse_args(["--cfg", path] + argv)
    assert exc.value.code != 0 and needle in capsys.readouterr().err


def test_parse_args_missing_cfg_file(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--cfg", os.path.join("no", "such.yaml")])
    assert exc.value.code != 0 and "such.yaml" in capsys.readouterr().err


def test_keys_without_effect_are_named_in_a_warning(tmp_path, caplog):
    path = write(tmp_path / "w.yaml", "NUM_GPUS: 0\nRESNET:\n  WIDTH_PER_GROUP: 32\nSOLVER:\n  GAMMA: 0.5\n")
    with caplog.at_level("WARNING"):
        cfg = load_config(args_for(path))
    assert cfg.SOLVER.GAMMA == 0.5
    assert "RESNET.WIDTH_PER_GROUP" in caplog.text and "SOLVER.GAMMA" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_config(args_for(write(tmp_path / "q.yaml", "NUM_GPUS: 0\n")))
    assert "no effect" not in caplog.text


def test_pyslowfast_style_merge_methods_use_the_checked_merge(tmp_path):
    write(tmp_path / "base.yaml", "SOLVER:\n  BASE_LR: 0.3\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  WEIGHT_DECAY: 5e-5\n")
    cfg = get_cfg()
    cfg.merge_from_file(child)
    cfg.merge_from_list(["SOLVER.MAX_EPOCH", "3"])
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.MAX_EPOCH) == (0.3, 5e-5, 3)
    assert type(cfg.SOLVER) is type(cfg)
    with pytest.raises(ConfigError, match="Did you mean"):
        cfg.merge_from_list(["SOLVER.BASE_LRR", "1.0"])
