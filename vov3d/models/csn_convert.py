"""Renaming CSN checkpoints of pytorchvideo, mmaction2 and the VMZ PyTorch port to vov3d.

Every source shares vov3d's tensor shapes (the depthwise weight is [Ci, 1, 3, 3, 3] in all
of them), so conversion is a pure key renaming: a fixed table for the stem and the
head, and a per-bottleneck suffix table that, for mmaction2 and VMZ, depends on whether
the checkpoint is ir-CSN or ip-CSN (told apart by the keys of the extra 1x1x1 conv).
The result is checked key by key and shape by shape against a CSN built on the meta
device, from a given config or from the depth, block type and class count read off the
checkpoint itself.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from vov3d.models.csn import CSN, STAGE_DEPTHS
from vov3d.utils.checkpoint_io import state_dict_from

# BN epsilon each source was trained with; CSN.BN_EPS must match to reproduce its outputs.
SOURCE_BN_EPS = {"pytorchvideo": 1e-5, "mmaction2": 1e-3, "vmz": 1e-3}

# Prefixes added by wrappers: DDP (`module.`), PySlowFast's PTVCSN (`model.`), mmaction2's
# recognizer (`backbone.`, `cls_head.`). Stripped in this order, each at most once.
_WRAPPER_PREFIXES = {
    "pytorchvideo": ("module.", "model."),
    "mmaction2": ("module.", "model.", "backbone.", "cls_head."),
    "vmz": ("module.", "model."),
}

_STEM_HEAD = {
    "pytorchvideo": {"blocks.0.conv": "s1.pathway0_stem.conv", "blocks.0.norm": "s1.pathway0_stem.bn",
                     "blocks.5.proj": "head.projection"},
    "mmaction2": {"conv1.conv": "s1.pathway0_stem.conv", "conv1.bn": "s1.pathway0_stem.bn",
                  "fc_cls": "head.projection"},
    "vmz": {"stem.0": "s1.pathway0_stem.conv", "stem.1": "s1.pathway0_stem.bn", "fc": "head.projection"},
}

# Source bottleneck path -> (source stage index of res2, block index, layer suffix).
_BLOCK_PATTERN = {
    "pytorchvideo": re.compile(r"blocks\.(\d+)\.res_blocks\.(\d+)\.(.+)"),
    "mmaction2": re.compile(r"layer(\d+)\.(\d+)\.(.+)"),
    "vmz": re.compile(r"layer(\d+)\.(\d+)\.(.+)"),
}
# In every source, stage index k holds vov3d's res(k+1).
_STAGE_OFFSET = 1

_SHORTCUT_A_C = {
    "pytorchvideo": {"branch1_conv": "branch1", "branch1_norm": "branch1_bn",
                     "branch2.conv_a": "branch2.a", "branch2.norm_a": "branch2.a_bn",
                     "branch2.conv_c": "branch2.c", "branch2.norm_c": "branch2.c_bn"},
    "mmaction2": {"downsample.conv": "branch1", "downsample.bn": "branch1_bn",
                  "conv1.conv": "branch2.a", "conv1.bn": "branch2.a_bn",
                  "conv3.conv": "branch2.c", "conv3.bn": "branch2.c_bn"},
    "vmz": {"downsample.0": "branch1", "downsample.1": "branch1_bn",
            "conv1.0": "branch2.a", "conv1.1": "branch2.a_bn",
            "conv3.0": "branch2.c", "conv3.1": "branch2.c_bn"},
}
# The depthwise conv (and ip-CSN's 1x1x1 conv before it) are named by position inside the
# sources' `conv2` Sequential, which is why the block type decides the table.
_DEPTHWISE = {
    ("pytorchvideo", "ir"): {"branch2.conv_b": "branch2.b", "branch2.norm_b": "branch2.b_bn"},
    ("mmaction2", "ir"): {"conv2.0.conv": "branch2.b", "conv2.0.bn": "branch2.b_bn"},
    ("mmaction2", "ip"): {"conv2.0.conv": "branch2.b_pw", "conv2.0.bn": "branch2.b_pw_bn",
                          "conv2.1.conv": "branch2.b", "conv2.1.bn": "branch2.b_bn"},
    ("vmz", "ir"): {"conv2.0": "branch2.b", "conv2.1": "branch2.b_bn"},
    ("vmz", "ip"): {"conv2.0.0": "branch2.b_pw", "conv2.0.1": "branch2.b_pw_bn",
                    "conv2.0.2": "branch2.b", "conv2.1": "branch2.b_bn"},
}
# A key of the ip-only 1x1x1 conv: its presence makes a checkpoint ip-CSN.
_IP_MARKER = {"mmaction2": re.compile(r"\.conv2\.1\.conv\."), "vmz": re.compile(r"\.conv2\.0\.0\.")}

SOURCES = tuple(SOURCE_BN_EPS)


@dataclass
class Conversion:
    """Result of `convert_csn_state_dict`: the renamed tensors and the source keys left over."""

    state_dict: Dict[str, torch.Tensor]
    block: str
    unmapped: List[str] = field(default_factory=list)


def _strip_wrappers(key: str, source: str) -> str:
    for prefix in _WRAPPER_PREFIXES[source]:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def detect_block(keys, source: str) -> str:
    """'ip' when the checkpoint has ip-CSN's extra 1x1x1 conv, else 'ir' (pytorchvideo: 'ir')."""
    marker = _IP_MARKER.get(source)
    if marker is not None and any(marker.search(k) for k in keys):
        return "ip"
    return "ir"


def rename_csn_key(key: str, source: str, block: str) -> Optional[str]:
    """vov3d name of a (wrapper-stripped) source key, or None when it is not part of a CSN."""
    module, dot, param = key.rpartition(".")
    if not dot:
        return None
    if module in _STEM_HEAD[source]:
        return f"{_STEM_HEAD[source][module]}.{param}"
    match = _BLOCK_PATTERN[source].fullmatch(module)
    if match is None:
        return None
    stage, index, layer = int(match.group(1)) + _STAGE_OFFSET, int(match.group(2)), match.group(3)
    if not 2 <= stage <= 5:
        return None
    target = _SHORTCUT_A_C[source].get(layer) or _DEPTHWISE[(source, block)].get(layer)
    if target is None:
        return None
    return f"s{stage}.pathway0_res{index}.{target}.{param}"


def convert_csn_state_dict(checkpoint: Dict, source: str, path: str = "<checkpoint>") -> Conversion:
    """Rename every key of a source state dict (or of the one a checkpoint holds, found as
    every vov3d load finds it); keys that map nowhere are listed in `unmapped`.

    BN layers saved without `num_batches_tracked` (older PyTorch, Caffe2 ports) get 0.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; expected one of {', '.join(SOURCES)}.")
    state = state_dict_from(checkpoint, path)
    stripped = {}
    for key, value in state.items():
        short = _strip_wrappers(key, source)
        if short in stripped:
            raise ValueError(f"keys {key!r} and another one both reduce to {short!r} once the "
                             "wrapper prefixes are removed.")
        stripped[short] = (key, value)
    block = detect_block(stripped, source)
    out, unmapped = {}, []
    for short, (key, value) in stripped.items():
        target = rename_csn_key(short, source, block)
        if target is None:
            unmapped.append(key)
        elif target in out:
            raise ValueError(f"two source keys map to {target!r} (the second is {key!r}).")
        else:
            out[target] = value
    for key in list(out):
        if key.endswith(".running_mean"):
            tracked = key[: -len("running_mean")] + "num_batches_tracked"
            out.setdefault(tracked, torch.tensor(0, dtype=torch.long))
    return Conversion(out, block, unmapped)


def infer_csn_layout(state: Dict[str, torch.Tensor]) -> Tuple[int, str, int]:
    """(CSN.DEPTH, CSN.BLOCK, MODEL.NUM_CLASSES) of a converted state dict."""
    blocks_per_stage = [0, 0, 0, 0]
    for key in state:
        match = re.match(r"s([2-5])\.pathway0_res(\d+)\.", key)
        if match:
            n = int(match.group(1)) - 2
            blocks_per_stage[n] = max(blocks_per_stage[n], int(match.group(2)) + 1)
    depths = {v: k for k, v in STAGE_DEPTHS.items()}
    depth = depths.get(tuple(blocks_per_stage))
    if depth is None:
        raise ValueError(f"bottlenecks per stage {tuple(blocks_per_stage)} match no CSN depth "
                         f"({', '.join(f'{d}: {s}' for d, s in STAGE_DEPTHS.items())}).")
    block = "ip" if any(".branch2.b_pw." in k for k in state) else "ir"
    head = state.get("head.projection.weight")
    num_classes = head.shape[0] if head is not None else 400
    return depth, block, num_classes


@dataclass
class ModelCheck:
    missing: List[str]
    unexpected: List[str]
    wrong_shape: List[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)


def check_against_model(state: Dict[str, torch.Tensor], cfg) -> ModelCheck:
    """Compare keys and shapes with a CSN built from `cfg` on the meta device (no memory)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CSN(cfg).state_dict().items()}
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(f"{k}: checkpoint {tuple(state[k].shape)}, model {expected[k]}"
                   for k in expected if k in state and tuple(state[k].shape) != expected[k])
    return ModelCheck(missing, unexpected, wrong)
