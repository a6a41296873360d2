"""parse_args and load_config: defaults -> yaml (_BASE_) -> overrides -> flags -> validation,
and the warnings of loading."""
import glob
import logging
import os

import pytest

from tests.conftest import REPO_ROOT
from tests.config.config_helpers import args_for, warnings_of, write
from vov3d.config import load_config
from vov3d.config.load import parse_args


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


def test_flags_win_over_yaml_shards(tmp_path):
    path = write(tmp_path / "n.yaml", "NUM_GPUS: 0\nNUM_SHARDS: 8\n")
    assert load_config(args_for(path)).NUM_SHARDS == 1


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


def test_a_directory_as_config_file_is_named_as_such(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--cfg", str(tmp_path)])
    assert exc.value.code != 0 and "is a directory; expected a YAML file" in capsys.readouterr().err


def _prefix_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "DATA.PATH_PREFIX" in r.getMessage()]


def test_overriding_only_the_data_dir_warns_about_the_yaml_prefix(tmp_path, caplog):
    path = write(tmp_path / "toy.yaml", "NUM_GPUS: 0\nDATA:\n  PATH_TO_DATA_DIR: data/toy\n  PATH_PREFIX: data/toy\n")
    elsewhere = str(tmp_path / "mine")
    with caplog.at_level(logging.WARNING):
        load_config(args_for(path, ["DATA.PATH_TO_DATA_DIR", elsewhere]))
    [warning] = _prefix_warnings(caplog)
    assert "DATA.PATH_TO_DATA_DIR" in warning and elsewhere in warning and "'data/toy'" in warning
    assert "set DATA.PATH_PREFIX too" in warning
    assert warnings_of(caplog) == [warning]  # the one warning of this load


@pytest.mark.parametrize("yaml_prefix,opts", [
    ("data/toy", ["DATA.PATH_PREFIX", "/d/videos"]),  # both overridden
    ("/d/videos", []),                                 # the prefix lies inside the new folder
    ("/d", []),                                        # ... or is that folder
    ("", []),                                          # paths in the lists are used as they are
])
def test_no_prefix_warning_when_the_prefix_follows(tmp_path, caplog, yaml_prefix, opts):
    path = write(tmp_path / "c.yaml", f"NUM_GPUS: 0\nDATA:\n  PATH_PREFIX: '{yaml_prefix}'\n")
    with caplog.at_level(logging.WARNING):
        load_config(args_for(path, ["DATA.PATH_TO_DATA_DIR", "/d/"] + opts))
    assert _prefix_warnings(caplog) == [] and warnings_of(caplog) == []


def test_a_load_warns_once_per_finding(tmp_path, caplog):
    path = write(tmp_path / "w.yaml", "NUM_GPUS: 0\nSOLVER:\n  GAMMA: 0.5\n")
    with caplog.at_level(logging.WARNING):
        load_config(args_for(path))
    [warning] = warnings_of(caplog)
    assert "SOLVER.GAMMA" in warning and "no effect" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_config(args_for(write(tmp_path / "q.yaml", "NUM_GPUS: 0\n")))
    assert warnings_of(caplog) == []


def _project_configs():
    found = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True))
    assert len(found) >= 40, "configs/ lost its files"
    return [os.path.relpath(p, REPO_ROOT) for p in found]


@pytest.mark.parametrize("relpath", _project_configs())
def test_every_project_config_loads_without_a_warning(relpath, caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_config(args_for(os.path.join(REPO_ROOT, relpath), ["NUM_GPUS", "0"]))
    assert warnings_of(caplog) == [] and cfg.is_frozen()
