"""The CfgNode's own merge methods (PySlowFast-style code calls them) use the checked merge."""
import logging

import pytest

from tests.config.config_helpers import warnings_of, write
from vov3d.config import ConfigError, get_cfg


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


def test_merge_methods_settle_legacy_keys_per_call(tmp_path, caplog):
    cfg = get_cfg()
    with caplog.at_level(logging.WARNING):
        cfg.merge_from_file(write(tmp_path / "g.yaml", "SOLVER:\n  GAMMA: 0.5\n"))
        cfg.merge_from_list(["RESNET.DEPTH", "101"])
    [from_file, from_list] = warnings_of(caplog)
    assert "SOLVER.GAMMA" in from_file and "RESNET.DEPTH" in from_list
    assert "GAMMA" not in cfg.SOLVER and "DEPTH" not in cfg.RESNET
    with pytest.raises(ConfigError, match="DETECTION.ENABLE"):
        cfg.merge_from_list(["DETECTION.ENABLE", "True"])
