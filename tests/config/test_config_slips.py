"""Config slips that used to pass silently: repeated YAML keys, a dot-less SSv2 extension,
lower-case keys, a directory as --cfg, the CPU backend, a stale PATH_PREFIX."""
import argparse
import logging
import pickle
import textwrap

import pytest

from vov3d.config import ConfigError, assert_and_infer_cfg, get_cfg, load_config, merge_file, merge_overrides
from vov3d.config.load import config_warnings, parse_args


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def args_for(cfg_file, opts=()):
    return argparse.Namespace(cfg_file=cfg_file, opts=list(opts), num_shards=1, shard_id=0,
                              init_method="tcp://localhost:9999")


def test_repeated_top_level_block_names_file_key_and_both_lines(tmp_path):
    path = write(tmp_path / "twice.yaml", """
        SOLVER:
          BASE_LR: 0.3
        NUM_GPUS: 0
        SOLVER:
          MAX_EPOCH: 5
    """)
    with pytest.raises(ConfigError) as err:
        merge_file(get_cfg(), path)
    msg = str(err.value)
    assert path in msg and "'SOLVER'" in msg and "lines 1 and 4" in msg


def test_repeated_key_inside_a_block_is_named_with_its_group(tmp_path):
    path = write(tmp_path / "inner.yaml", """
        NUM_GPUS: 0
        SOLVER:
          BASE_LR: 0.3
          MAX_EPOCH: 5
          BASE_LR: 0.1
    """)
    with pytest.raises(ConfigError) as err:
        merge_file(get_cfg(), path)
    assert "'SOLVER.BASE_LR'" in str(err.value) and "lines 3 and 5" in str(err.value)


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


@pytest.mark.parametrize("ext,ok", [("webm", False), (".", False), ("mp4", False), (".webm", True), ("", True)])
def test_ssv2_video_extension_needs_its_dot(tmp_path, ext, ok):
    path = write(tmp_path / "s.yaml", "NUM_GPUS: 0\n")
    if ok:
        assert load_config(args_for(path, ["DATA.SSV2_VIDEO_EXT", ext])).DATA.SSV2_VIDEO_EXT == ext
        return
    with pytest.raises(ConfigError) as err:
        load_config(args_for(path, ["DATA.SSV2_VIDEO_EXT", ext]))
    assert "DATA.SSV2_VIDEO_EXT" in str(err.value) and "'.webm'" in str(err.value)


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


def test_a_directory_as_config_file_is_named_as_such(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--cfg", str(tmp_path)])
    assert exc.value.code != 0 and "is a directory; expected a YAML file" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="is a directory; expected a YAML file"):
        merge_file(get_cfg(), str(tmp_path))


def test_cpu_configs_say_gloo_and_gpu_configs_keep_their_backend():
    cfg = get_cfg()
    merge_overrides(cfg, ["NUM_GPUS", "0"])
    assert assert_and_infer_cfg(cfg).DIST_BACKEND == "gloo"
    # Tools such as model_summary validate 8-GPU configs on machines without GPUs.
    cfg = get_cfg()
    merge_overrides(cfg, ["NUM_GPUS", "8", "TRAIN.BATCH_SIZE", "16", "TEST.BATCH_SIZE", "8"])
    assert assert_and_infer_cfg(cfg).DIST_BACKEND == "nccl"


def _prefix_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "DATA.PATH_PREFIX" in r.getMessage()]


def test_overriding_only_the_data_dir_warns_about_the_yaml_prefix(tmp_path, caplog):
    path = write(tmp_path / "toy.yaml", "NUM_GPUS: 0\nDATA:\n  PATH_TO_DATA_DIR: data/toy\n  PATH_PREFIX: data/toy\n")
    elsewhere = str(tmp_path / "mine")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(args_for(path, ["DATA.PATH_TO_DATA_DIR", elsewhere]))
    [warning] = _prefix_warnings(caplog)
    assert "DATA.PATH_TO_DATA_DIR" in warning and elsewhere in warning and "'data/toy'" in warning
    assert "set DATA.PATH_PREFIX too" in warning
    # Kept with the config (also across pickling, as spawned processes receive it).
    assert warning in config_warnings(pickle.loads(pickle.dumps(cfg)))


@pytest.mark.parametrize("yaml_prefix,opts", [
    ("data/toy", ["DATA.PATH_PREFIX", "/d/videos"]),  # both overridden
    ("/d/videos", []),                                 # the prefix lies inside the new folder
    ("/d", []),                                        # ... or is that folder
    ("", []),                                          # paths in the lists are used as they are
])
def test_no_prefix_warning_when_the_prefix_follows(tmp_path, caplog, yaml_prefix, opts):
    path = write(tmp_path / "c.yaml", f"NUM_GPUS: 0\nDATA:\n  PATH_PREFIX: '{yaml_prefix}'\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(args_for(path, ["DATA.PATH_TO_DATA_DIR", "/d/"] + opts))
    assert _prefix_warnings(caplog) == [] and config_warnings(cfg) == []


def test_loading_keeps_its_warnings_with_the_config(tmp_path):
    path = write(tmp_path / "w.yaml", "NUM_GPUS: 0\nSOLVER:\n  GAMMA: 0.5\n")
    [warning] = config_warnings(load_config(args_for(path)))
    assert "SOLVER.GAMMA" in warning and "no effect" in warning
    assert config_warnings(get_cfg()) == []


def test_precise_bn_needs_at_least_one_batch():
    cfg = get_cfg()
    merge_overrides(cfg, ["BN.USE_PRECISE_STATS", "True", "BN.NUM_BATCHES_PRECISE", "0"])
    # 0 batches would write all-zero statistics into every BN layer.
    with pytest.raises(ConfigError, match=r"BN.NUM_BATCHES_PRECISE.*>= 1"):
        assert_and_infer_cfg(cfg)
    cfg = get_cfg()
    merge_overrides(cfg, ["BN.USE_PRECISE_STATS", "False", "BN.NUM_BATCHES_PRECISE", "0"])
    assert_and_infer_cfg(cfg)  # unused when precise BN is off


@pytest.mark.parametrize("key", ["DIST_TIMEOUT", "DIST_INIT_TIMEOUT"])
def test_distributed_waits_must_be_positive(key):
    cfg = get_cfg()
    assert cfg.DIST_INIT_TIMEOUT == 300 and cfg.DIST_TIMEOUT == 1800  # minutes to join, half an hour per collective
    merge_overrides(cfg, [key, "0"])
    with pytest.raises(ConfigError, match=f"invalid value for '{key}': 0; expected > 0 seconds"):
        assert_and_infer_cfg(cfg)
