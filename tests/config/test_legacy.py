"""The legacy-key table: reference keys accepted at merge time (yaml, _BASE_ chains,
overrides), then ignored with a warning, refused when switched on, or moved."""
import logging
import os

import pytest
import torch
import yaml

from tests.conftest import FIXTURES_DIR, REPO_ROOT
from tests.config.config_helpers import args_for, warnings_of, write
from vov3d.config import ConfigError, assert_and_infer_cfg, get_cfg, load_config, merge_file
from vov3d.config.legacy import LEGACY_KEYS
from vov3d.config.merge import all_keys

OLD_DUMP = os.path.join(FIXTURES_DIR, "config", "x3d_M_toy_dump_v0.yaml")
IGNORED = sorted(k for k, e in LEGACY_KEYS.items() if e.action == "ignore")
# (key, a value that switches the feature on, values that leave it off)
REFUSED = [
    ("NONLOCAL.LOCATION", [[[0]], [[]], [[]], [[]]], [[[[]], [[]], [[]], [[]]],
                                                      [[[], []], [[], []], [[], []], [[], []]]]),
    ("BN.NUM_SPLITS", 2, [1]),
    ("DATA.MULTI_LABEL", True, [False]),
    ("DETECTION.ENABLE", True, [False]),
    ("DEMO.PREDS_BOXES", "boxes.csv", [""]),
    ("DEMO.GT_BOXES", "gt.csv", [""]),
    ("DEMO.VIS_MODE", "thres", ["top-k"]),
    ("DEMO.SLOWMO", 2, [1]),
]


def _nested(values):
    """{"A.B": v} -> {"A": {"B": v}}, as a yaml file writes it."""
    out = {}
    for key, value in values.items():
        node = out
        *groups, leaf = key.split(".")
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = value
    return out


def _yaml(tmp_path, name, values, extra="NUM_GPUS: 0\n"):
    path = tmp_path / name
    path.write_text(extra + (yaml.safe_dump(_nested(values)) if values else ""))
    return str(path)


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "_other"
    return [[7]]


def test_no_legacy_key_is_in_the_tree_and_features_to_come_are():
    keys = set(all_keys(get_cfg()))
    assert not keys & set(LEGACY_KEYS)
    assert {"MODEL.SINGLE_PATHWAY_ARCH", "MODEL.MULTI_PATHWAY_ARCH", "SOLVER.GAMMA"} <= set(LEGACY_KEYS)
    for group in ("NONLOCAL", "SLOWFAST", "BENCHMARK", "DETECTION"):
        assert group not in get_cfg()
    for kept in ("TENSORBOARD.CONFUSION_MATRIX.ENABLE", "TENSORBOARD.HISTOGRAM.TOPK",
                 "TENSORBOARD.MODEL_VIS.GRAD_CAM.COLORMAP", "TENSORBOARD.WRONG_PRED_VIS.TAG",
                 "MULTIGRID.LONG_CYCLE_FACTORS", "DEMO.ENABLE"):
        assert kept in keys


def test_keys_without_effect_are_named_in_a_warning(tmp_path, caplog):
    path = write(tmp_path / "w.yaml", "NUM_GPUS: 0\nRESNET:\n  WIDTH_PER_GROUP: 32\nSOLVER:\n  GAMMA: 0.5\n")
    with caplog.at_level("WARNING"):
        cfg = load_config(args_for(path))
    assert "GAMMA" not in cfg.SOLVER and "WIDTH_PER_GROUP" not in cfg.RESNET  # accepted, not kept
    assert "RESNET.WIDTH_PER_GROUP" in caplog.text and "SOLVER.GAMMA" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_config(args_for(write(tmp_path / "q.yaml", "NUM_GPUS: 0\n")))
    assert "no effect" not in caplog.text


def test_ignored_keys_warn_only_when_they_differ_from_the_references(tmp_path, caplog):
    defaults = {k: LEGACY_KEYS[k].default for k in IGNORED}
    with caplog.at_level(logging.WARNING):
        load_config(args_for(_yaml(tmp_path, "same.yaml", defaults)))
    assert warnings_of(caplog) == []
    with caplog.at_level(logging.WARNING):
        load_config(args_for(_yaml(tmp_path, "other.yaml", {k: _changed(v) for k, v in defaults.items()})))
    [warning] = warnings_of(caplog)
    assert "no effect in vov3d" in warning
    assert sorted(warning.split(": ", 1)[1].rstrip(".").split(", ")) == IGNORED


def test_command_line_values_are_decoded_before_the_comparison(tmp_path, caplog):
    path = write(tmp_path / "c.yaml", "NUM_GPUS: 0\n")
    with caplog.at_level(logging.WARNING):
        load_config(args_for(path, ["SOLVER.GAMMA", "0.1", "NONLOCAL.POOL", str(LEGACY_KEYS["NONLOCAL.POOL"].default),
                                    "BENCHMARK.SHUFFLE", "True", "BN.NUM_SPLITS", "1"]))
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("key,on,offs", REFUSED)
def test_switched_on_features_are_refused_naming_key_and_source(tmp_path, caplog, key, on, offs):
    path = _yaml(tmp_path, "on.yaml", {key: on})
    with pytest.raises(ConfigError) as err:
        load_config(args_for(path))
    assert str(err.value).startswith(f"{path}: invalid value for '{key}'")
    with pytest.raises(ConfigError, match=f"^command line: invalid value for '{key}'"):
        load_config(args_for(_yaml(tmp_path, "plain.yaml", {}), [key, str(on)]))
    for i, off in enumerate(offs):
        with caplog.at_level(logging.WARNING):
            load_config(args_for(_yaml(tmp_path, f"off{i}.yaml", {key: off})))
        assert warnings_of(caplog) == []


def test_a_load_is_settled_on_its_final_values(tmp_path, caplog):
    # A base may switch on (or change) what its child, or the command line, sets back.
    write(tmp_path / "base.yaml", "DETECTION:\n  ENABLE: True\nSOLVER:\n  GAMMA: 0.5\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nNUM_GPUS: 0\nDETECTION:\n  ENABLE: False\n")
    with caplog.at_level(logging.WARNING):
        load_config(args_for(child, ["SOLVER.GAMMA", "0.1"]))
    assert warnings_of(caplog) == []
    with pytest.raises(ConfigError, match="^command line: invalid value for 'DETECTION.ENABLE'"):
        load_config(args_for(child, ["DETECTION.ENABLE", "True"]))
    on_in_child = write(tmp_path / "on.yaml", "_BASE_: child.yaml\nDETECTION:\n  ENABLE: True\n")
    with pytest.raises(ConfigError, match=r"on\.yaml: invalid value for 'DETECTION.ENABLE'"):
        load_config(args_for(on_in_child))


def test_legacy_data_ensemble_method_is_honoured(tmp_path):
    path = write(tmp_path / "e.yaml", "NUM_GPUS: 0\nDATA:\n  ENSEMBLE_METHOD: max\n")
    assert load_config(args_for(path)).TEST.ENSEMBLE_METHOD == "max"


def test_the_moved_key_takes_its_place_in_the_merge_order(tmp_path, caplog):
    path = write(tmp_path / "e.yaml", "NUM_GPUS: 0\nDATA:\n  ENSEMBLE_METHOD: max\n")
    with caplog.at_level(logging.WARNING):
        assert load_config(args_for(path, ["TEST.ENSEMBLE_METHOD", "sum"])).TEST.ENSEMBLE_METHOD == "sum"
    [warning] = warnings_of(caplog)
    assert "DATA.ENSEMBLE_METHOD is the legacy name of TEST.ENSEMBLE_METHOD" in warning
    path = write(tmp_path / "t.yaml", "NUM_GPUS: 0\nTEST:\n  ENSEMBLE_METHOD: max\n")
    assert load_config(args_for(path, ["DATA.ENSEMBLE_METHOD", "sum"])).TEST.ENSEMBLE_METHOD == "sum"
    with pytest.raises(ConfigError, match="TEST.ENSEMBLE_METHOD"):
        load_config(args_for(path, ["DATA.ENSEMBLE_METHOD", "mean"]))


def test_unknown_keys_in_a_legacy_group_are_still_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'SLOWFAST\.ALPHAA'"):
        load_config(args_for(write(tmp_path / "a.yaml", "SLOWFAST:\n  ALPHAA: 4\n")))
    with pytest.raises(ConfigError, match="'NONLOCAL' is a group of keys"):
        load_config(args_for(write(tmp_path / "b.yaml", "NONLOCAL: 3\n")))


def test_config_dumps_in_older_checkpoints_load_and_resume(tmp_path, caplog):
    from vov3d.engine.checkpoint_loading import load_for_resume
    from vov3d.engine.checkpointer import Checkpointer
    from vov3d.models import build_model

    toy = os.path.join(REPO_ROOT, "configs", "Toy", "x3d_M_toy.yaml")
    current = load_config(args_for(toy, ["NUM_GPUS", "0", "OUTPUT_DIR", "output/toy"]))
    old = get_cfg()
    with caplog.at_level(logging.WARNING):
        merge_file(old, OLD_DUMP)
    # The old tree listed vov3d's own architectures there; the value has no effect now.
    [warning] = warnings_of(caplog)
    assert "MODEL.SINGLE_PATHWAY_ARCH" in warning and "no effect" in warning
    # Every value as today's load gives it (numbers compared as numbers: a merge writes the
    # integers of a float list such as VOV3D.OUT_MULTIPLIER as floats).
    assert yaml.safe_load(assert_and_infer_cfg(old).dump()) == yaml.safe_load(current.dump())

    with torch.device("meta"):
        model = build_model(current)
    model = model.to_empty(device="cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = current.clone()
    run.defrost()
    run.OUTPUT_DIR = str(tmp_path)
    path = Checkpointer(run, model, optimizer).save(4)
    state = torch.load(path, weights_only=True)
    with open(OLD_DUMP) as f:
        state["cfg"] = f.read()
    torch.save(state, path)
    assert load_for_resume(path, model, optimizer, cfg=current) == 4


def test_visualisation_docs_top_k_spelling_reaches_histogram_topk(tmp_path, caplog):
    path = write(tmp_path / "v.yaml", "NUM_GPUS: 0\nTENSORBOARD:\n  HISTOGRAM:\n    TOP_K: 3\n")
    with caplog.at_level("WARNING"):
        cfg = load_config(args_for(path))
    assert cfg.TENSORBOARD.HISTOGRAM.TOPK == 3 and "TOP_K" not in cfg.TENSORBOARD.HISTOGRAM
    assert "TENSORBOARD.HISTOGRAM.TOP_K is the legacy name of TENSORBOARD.HISTOGRAM.TOPK" in caplog.text
    # On the command line the text is read as the new key's type.
    assert load_config(args_for(path, ["TENSORBOARD.HISTOGRAM.TOP_K", "4"])).TENSORBOARD.HISTOGRAM.TOPK == 4
