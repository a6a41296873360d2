"""CSN checkpoint conversion: every name of pytorchvideo, mmaction2 and VMZ lands on the right
vov3d tensor, leftovers are reported, and the tool writes nothing unless all is well."""
import os
import stat
import subprocess

import pytest
import torch

from tests.conftest import PYTHON, REPO_ROOT, import_tool, run_tool_env
from vov3d.config import get_cfg
from vov3d.models.csn import CSN
from vov3d.models.csn_convert import (check_against_model, convert_csn_state_dict,
                                      infer_csn_layout)
from vov3d.utils.checkpoint_io import CheckpointError

TOOL = os.path.join(REPO_ROOT, "tools", "convert_checkpoint.py")
CFG_IR50 = os.path.join(REPO_ROOT, "configs", "Kinetics", "csn", "ircsn_r50_32x2.yaml")
DEPTHS_50 = (3, 4, 6, 3)
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _layers(source: str, block: str, first: bool):
    """(source layer, vov3d layer, kind) of one bottleneck, written from the spec's table."""
    if source == "pytorchvideo":
        rows = [("branch2.conv_a", "branch2.a", "conv"), ("branch2.norm_a", "branch2.a_bn", "bn"),
                ("branch2.conv_b", "branch2.b", "conv"), ("branch2.norm_b", "branch2.b_bn", "bn"),
                ("branch2.conv_c", "branch2.c", "conv"), ("branch2.norm_c", "branch2.c_bn", "bn")]
        shortcut = [("branch1_conv", "branch1", "conv"), ("branch1_norm", "branch1_bn", "bn")]
    elif source == "mmaction2":
        b = [("conv2.0.conv", "branch2.b", "conv"), ("conv2.0.bn", "branch2.b_bn", "bn")]
        if block == "ip":
            b = [("conv2.0.conv", "branch2.b_pw", "conv"), ("conv2.0.bn", "branch2.b_pw_bn", "bn"),
                 ("conv2.1.conv", "branch2.b", "conv"), ("conv2.1.bn", "branch2.b_bn", "bn")]
        rows = [("conv1.conv", "branch2.a", "conv"), ("conv1.bn", "branch2.a_bn", "bn")] + b + [
            ("conv3.conv", "branch2.c", "conv"), ("conv3.bn", "branch2.c_bn", "bn")]
        shortcut = [("downsample.conv", "branch1", "conv"), ("downsample.bn", "branch1_bn", "bn")]
    else:  # VMZ port (torchvision VideoResNet layout)
        b = [("conv2.0", "branch2.b", "conv"), ("conv2.1", "branch2.b_bn", "bn")]
        if block == "ip":
            b = [("conv2.0.0", "branch2.b_pw", "conv"), ("conv2.0.1", "branch2.b_pw_bn", "bn"),
                 ("conv2.0.2", "branch2.b", "conv"), ("conv2.1", "branch2.b_bn", "bn")]
        rows = [("conv1.0", "branch2.a", "conv"), ("conv1.1", "branch2.a_bn", "bn")] + b + [
            ("conv3.0", "branch2.c", "conv"), ("conv3.1", "branch2.c_bn", "bn")]
        shortcut = [("downsample.0", "branch1", "conv"), ("downsample.1", "branch1_bn", "bn")]
    return (shortcut if first else []) + rows


def _block_prefix(source: str, n: int, i: int) -> str:
    return {"pytorchvideo": f"blocks.{n - 1}.res_blocks.{i}", "mmaction2": f"backbone.layer{n - 1}.{i}",
            "vmz": f"layer{n - 1}.{i}"}[source]


_STEM_HEAD = {
    "pytorchvideo": [("blocks.0.conv", "s1.pathway0_stem.conv", "conv"),
                     ("blocks.0.norm", "s1.pathway0_stem.bn", "bn"),
                     ("blocks.5.proj", "head.projection", "linear")],
    "mmaction2": [("backbone.conv1.conv", "s1.pathway0_stem.conv", "conv"),
                  ("backbone.conv1.bn", "s1.pathway0_stem.bn", "bn"),
                  ("cls_head.fc_cls", "head.projection", "linear")],
    "vmz": [("stem.0", "s1.pathway0_stem.conv", "conv"), ("stem.1", "s1.pathway0_stem.bn", "bn"),
            ("fc", "head.projection", "linear")],
}


def expected_pairs(source: str, block: str):
    """Every (source key, vov3d key) of a depth-50 CSN."""
    rows = list(_STEM_HEAD[source])
    for n, depth in enumerate(DEPTHS_50, start=2):
        for i in range(depth):
            rows += [(f"{_block_prefix(source, n, i)}.{s}", f"s{n}.pathway0_res{i}.{t}", kind)
                     for s, t, kind in _layers(source, block, first=i == 0)]
    entries = {"conv": ("weight",), "bn": BN_ENTRIES, "linear": ("weight", "bias")}
    return [(f"{s}.{e}", f"{t}.{e}") for s, t, kind in rows for e in entries[kind]]


def csn50_cfg(block="ir", classes=400):
    cfg = get_cfg()
    cfg.NUM_GPUS = 0
    cfg.MODEL.MODEL_NAME = "CSN"
    cfg.MODEL.NUM_CLASSES = classes
    cfg.CSN.DEPTH = 50
    cfg.CSN.BLOCK = block
    return cfg


def _target_shapes(block: str, classes: int = 400):
    with torch.device("meta"):
        return {k: v.shape for k, v in CSN(csn50_cfg(block, classes)).state_dict().items()}


def make_source(source: str, block: str, classes: int = 400, seed: int = 0):
    """A random source state dict with the source's names and the shapes of the tensors they
    must land on; returns it with the expected key pairs."""
    shapes = _target_shapes(block, classes)
    g = torch.Generator().manual_seed(seed)
    pairs = expected_pairs(source, block)
    state = {}
    for src, dst in pairs:
        if dst.endswith("num_batches_tracked"):
            state[src] = torch.randint(0, 1000, (), generator=g)
        else:
            state[src] = torch.randn(shapes[dst], generator=g)
    return state, pairs


CASES = [("pytorchvideo", "ir"), ("mmaction2", "ir"), ("mmaction2", "ip"), ("vmz", "ir"),
         ("vmz", "ip")]


@pytest.mark.parametrize("source,block", CASES)
def test_every_key_lands_on_its_tensor(source, block):
    state, pairs = make_source(source, block)
    assert len(pairs) == len(_target_shapes(block))  # the expectation covers the whole model
    result = convert_csn_state_dict(state, source)
    assert result.block == block and result.unmapped == []
    assert sorted(result.state_dict) == sorted(dst for _, dst in pairs)
    for src, dst in pairs:
        assert result.state_dict[dst] is state[src], (src, dst)
    assert infer_csn_layout(result.state_dict) == (50, block, 400)
    assert check_against_model(result.state_dict, csn50_cfg(block)).ok


def test_converted_weights_load_strictly_and_land_by_value():
    state, _ = make_source("mmaction2", "ip", classes=7, seed=1)
    checkpoint = {"meta": {"mmcv_version": "1.3"},
                  "state_dict": {"module." + k: v for k, v in state.items()}}
    result = convert_csn_state_dict(checkpoint, "mmaction2")
    model = CSN(csn50_cfg("ip", classes=7))
    model.load_state_dict(result.state_dict, strict=True)
    checks = {
        "backbone.conv1.conv.weight": model.s1.pathway0_stem.conv.weight,
        "backbone.layer2.0.downsample.conv.weight": model.s3.pathway0_res0.branch1.weight,
        "backbone.layer3.5.conv2.0.conv.weight": model.s4.pathway0_res5.branch2.b_pw.weight,
        "backbone.layer3.5.conv2.1.bn.running_var": model.s4.pathway0_res5.branch2.b_bn.running_var,
        "backbone.layer4.2.conv3.bn.bias": model.s5.pathway0_res2.branch2.c_bn.bias,
        "cls_head.fc_cls.weight": model.head.projection.weight,
    }
    for src, tensor in checks.items():
        assert torch.equal(state[src], tensor), src


def test_wrappers_unknown_keys_and_missing_counters():
    state, _ = make_source("pytorchvideo", "ir")
    wrapped = {"model_state": {"model." + k: v for k, v in state.items()
                               if not k.endswith("num_batches_tracked")}, "epoch": 196}
    wrapped["model_state"]["model.blocks.5.extra.weight"] = torch.zeros(1)
    result = convert_csn_state_dict(wrapped, "pytorchvideo")
    assert result.unmapped == ["model.blocks.5.extra.weight"]
    tracked = result.state_dict["s2.pathway0_res0.branch2.a_bn.num_batches_tracked"]
    assert tracked.dtype == torch.long and tracked.item() == 0
    assert check_against_model(result.state_dict, csn50_cfg()).ok
    with pytest.raises(CheckpointError, match=r"'empty.pth' has no state dict"):
        convert_csn_state_dict({"state_dict": {"note": "empty"}}, "pytorchvideo", "empty.pth")
    with pytest.raises(ValueError, match="unknown checkpoint source"):
        convert_csn_state_dict(state, "timm")


def test_model_check_names_missing_and_misshapen_keys():
    state, _ = make_source("vmz", "ir")
    result = convert_csn_state_dict(state, "vmz")
    check = check_against_model(result.state_dict, csn50_cfg("ip"))
    assert not check.ok and any(".branch2.b_pw." in k for k in check.missing)
    check = check_against_model(result.state_dict, csn50_cfg("ir", classes=174))
    assert check.wrong_shape == ["head.projection.bias: checkpoint (400,), model (174,)",
                                 "head.projection.weight: checkpoint (400, 2048), model (174, 2048)"]


def _tool_main():
    return import_tool("convert_checkpoint").main


def test_tool_converts_against_a_config(tmp_path, capsys):
    state, pairs = make_source("mmaction2", "ir")
    src, out = tmp_path / "ircsn50.pth", tmp_path / "converted.pyth"
    torch.save({"state_dict": state, "meta": {"epoch": 58}}, src)
    main = _tool_main()
    old_mask = os.umask(0o027)
    try:
        assert main(["--from", "mmaction2", str(src), str(out), "--cfg", CFG_IR50]) == 0
    finally:
        os.umask(old_mask)
    # The mode open() gives under that umask, not the temporary file's private 0600.
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640
    printed = capsys.readouterr().out
    assert "CSN.BN_EPS 0.001 (the config has 1e-05)" in printed
    saved = torch.load(out, weights_only=True)
    assert list(saved) == ["model_state"] and len(saved["model_state"]) == len(pairs)
    for s, d in pairs[:20]:
        assert torch.equal(saved["model_state"][d], state[s])
    assert sorted(os.listdir(tmp_path)) == ["converted.pyth", "ircsn50.pth"]  # no temp left over


def test_tool_refuses_unknown_keys_unless_dropped(tmp_path, capsys):
    state, _ = make_source("vmz", "ip")
    state["layer2.0.conv2.0.3.weight"] = torch.zeros(3)
    src, out = tmp_path / "ipcsn.pth", tmp_path / "out.pyth"
    torch.save(state, src)
    main = _tool_main()
    assert main(["--from", "vmz", str(src), str(out)]) == 1
    err = capsys.readouterr().err
    assert "layer2.0.conv2.0.3.weight" in err and "nothing written" in err and not out.exists()
    assert main(["--from", "vmz", str(src), str(out), "--drop-unmapped"]) == 0
    assert "ip-CSN-50, 400 classes" in capsys.readouterr().out
    assert "s3.pathway0_res0.branch2.b_pw.weight" in torch.load(out, weights_only=True)["model_state"]


def test_tool_rejects_a_wrong_config_and_allows_a_missing_head(tmp_path, capsys):
    state, _ = make_source("pytorchvideo", "ir")
    del state["blocks.5.proj.weight"], state["blocks.5.proj.bias"]  # a backbone-only file
    src, out = tmp_path / "csn.pyth", tmp_path / "out.pyth"
    torch.save({"model_state": state}, src)
    main = _tool_main()
    cfg_ip = os.path.join(REPO_ROOT, "configs", "Kinetics", "csn", "ipcsn_r50_32x2.yaml")
    assert main(["--from", "pytorchvideo", str(src), str(out), "--cfg", cfg_ip]) == 1
    err = capsys.readouterr().err
    assert "s2.pathway0_res0.branch2.b_pw.weight" in err
    assert "head.projection.weight" in err and not out.exists()
    assert main(["--from", "pytorchvideo", str(src), str(out), "--cfg", CFG_IR50,
                 "--allow-missing"]) == 0
    captured = capsys.readouterr()
    assert "head.projection.weight" in captured.err and "(allowed)" in captured.err
    assert "BN eps 1e-05" in captured.out and out.exists()


def test_tool_runs_as_a_script(tmp_path):
    missing = tmp_path / "missing.pth"
    run = subprocess.run([PYTHON, TOOL, "--from", "mmaction2", str(missing), str(tmp_path / "o")],
                         capture_output=True, text=True, env=run_tool_env(), cwd=REPO_ROOT)
    assert run.returncode == 2 and f"input '{missing}' not found." in run.stderr


class _Opaque:
    pass


def test_tool_reads_through_the_safe_reader(tmp_path, capsys):
    state, _ = make_source("vmz", "ir")
    src, out = tmp_path / "pickled.pth", tmp_path / "out.pyth"
    torch.save({"state_dict": state, "note": _Opaque()}, src)
    main = _tool_main()
    assert main(["--from", "vmz", str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"convert_checkpoint.py: input '{src}' is readable but unsafe: it names the Python "
                          f"global '{__name__}._Opaque'") and err.endswith("rerun with --unsafe-load.")
    assert main(["--from", "vmz", str(src), str(out), "--unsafe-load"]) == 0 and out.exists()
    src.write_bytes(b"")
    assert main(["--from", "vmz", str(src), str(out)]) == 2
    assert "is empty (0 bytes)" in capsys.readouterr().err
