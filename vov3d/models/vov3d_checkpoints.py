"""VoV3D checkpoints of the first release and of the current one, told apart by their keys.

The first VoV3D-M release had a 24-channel stem, four D(2+1)D units per T-OSA module and one
s3 block; the current VoV3D-M has a 20-channel stem, five units and two s3 blocks. Loading
one into the other would skip most of the backbone, so the loader refuses it and names the
overrides that build the matching model.
"""
import re
from typing import Dict, Optional, Tuple

import torch

from vov3d.models.registry import register_checkpoint_filter
from vov3d.models.vov3d import VoV3D
from vov3d.utils.checkpoint_io import CheckpointError

VOV3D_M_V1_OVERRIDES = "VOV3D.STAGE_DEPTHS [1,1,2,2] VOV3D.NUM_CONV 4 VOV3D.INNER_CH 48"
VOV3D_M_V2_OVERRIDES = "VOV3D.DEPTH 31 VOV3D.STAGE_DEPTHS [] VOV3D.NUM_CONV 5 VOV3D.INNER_CH 40"
_FIRST, _CURRENT = (24, False, 1), (20, True, 2)


def vov3d_signature(state: Dict[str, torch.Tensor]) -> Optional[Tuple[int, bool, int]]:
    """(stem width, has a 5th D(2+1)D unit, number of s3 blocks), or None for non-VoV3D dicts."""
    stem = state.get("s1.pathway0_stem.conv_xy.weight")
    if stem is None or not any(".branch2.layers." in k for k in state):
        return None
    has_unit4 = any(".branch2.layers.4." in k for k in state)
    s3_blocks = {m.group(1) for k in state for m in [re.match(r"s3\.pathway0_res(\d+)\.", k)] if m}
    return int(stem.shape[0]), has_unit4, len(s3_blocks)


def describe_vov3d(signature: Optional[Tuple[int, bool, int]]) -> str:
    if signature is None:
        return "not a VoV3D model"
    if signature == _FIRST:
        return "first-release VoV3D-M (stem 24, 4 units per T-OSA, 1 s3 block)"
    if signature == _CURRENT:
        return "current VoV3D-M (stem 20, 5 units per T-OSA, 2 s3 blocks)"
    width, unit4, s3 = signature
    return f"VoV3D (stem {width}, {5 if unit4 else 4}+ units per T-OSA, {s3} s3 blocks)"


def check_vov3d_variant(ckpt_state: Dict, model_state: Dict, path: str) -> None:
    """Refuse a first-release VoV3D-M file in a current model (or the reverse), naming the fix."""
    ckpt_sig, model_sig = vov3d_signature(ckpt_state), vov3d_signature(model_state)
    if ckpt_sig is None or model_sig is None or ckpt_sig == model_sig:
        return
    if ckpt_sig == _FIRST:
        fix = f"build the first-release model with the overrides: {VOV3D_M_V1_OVERRIDES}"
    elif ckpt_sig == _CURRENT:
        fix = f"build the current VoV3D-M: {VOV3D_M_V2_OVERRIDES}"
    else:
        fix = "use the config the checkpoint was trained with"
    raise CheckpointError(f"'{path}' is a {describe_vov3d(ckpt_sig)} checkpoint but the model is a "
                          f"{describe_vov3d(model_sig)}; loading it would skip most of the backbone. "
                          f"To use it, {fix}.")


@register_checkpoint_filter(VoV3D)
def filter_vov3d_checkpoint(state: Dict[str, torch.Tensor], model: torch.nn.Module, path: str) -> Dict:
    """VoV3D's checkpoint filter: the release check; the keys need no renaming."""
    check_vov3d_variant(state, model.state_dict(), path)
    return state
