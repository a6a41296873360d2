"""VoV3D checkpoints of the first and the current release, told apart, and refused through the
registry's checkpoint filter before a load would skip most of the backbone."""
import pytest
import torch

from tests.conftest import reference_listing
from tests.models.model_helpers import build_on_meta, project_cfg
from vov3d.engine.checkpoint_loading import load_for_test
from vov3d.models.registry import checkpoint_filter
from vov3d.models.vov3d import VoV3D
from vov3d.models.vov3d_checkpoints import (check_vov3d_variant, filter_vov3d_checkpoint, vov3d_signature)
from vov3d.utils.checkpoint_io import CheckpointError


def _synthetic_state(name):
    listing = reference_listing(name)["state_dict"]
    return {k: torch.zeros(shape, dtype=getattr(torch, dtype)) for k, shape, dtype in listing}


def test_vov3d_first_release_vs_current_detection():
    v1, v2 = _synthetic_state("vov3d_M_v1_k400"), _synthetic_state("vov3d_M_k400")
    assert vov3d_signature(v1) == (24, False, 1)
    assert vov3d_signature(v2) == (20, True, 2)
    assert vov3d_signature(_synthetic_state("x3d_M_k400")) is None
    with pytest.raises(CheckpointError) as err:
        check_vov3d_variant(v1, v2, "vov3d_M_k400_v1.pth")
    assert "first-release VoV3D-M" in str(err.value)
    assert "VOV3D.STAGE_DEPTHS [1,1,2,2] VOV3D.NUM_CONV 4 VOV3D.INNER_CH 48" in str(err.value)
    with pytest.raises(CheckpointError, match="current VoV3D-M.*VOV3D.NUM_CONV 5 VOV3D.INNER_CH 40"):
        check_vov3d_variant(v2, v1, "new.pth")
    check_vov3d_variant(v2, v2, "same.pth")  # same release: nothing to say


def test_a_test_load_of_a_first_release_file_is_refused_through_the_registry(tmp_path):
    model = build_on_meta(project_cfg("configs/Kinetics/vov3d/vov3d_M.yaml"))
    assert isinstance(model, VoV3D) and checkpoint_filter(model) is filter_vov3d_checkpoint
    path = str(tmp_path / "vov3d_M_v1.pyth")
    torch.save({"model_state": _synthetic_state("vov3d_M_v1_k400")}, path)
    cfg = project_cfg("configs/Kinetics/vov3d/vov3d_M.yaml")
    with pytest.raises(CheckpointError, match=rf"^'{path}' is a first-release VoV3D-M .* but the model is a "
                                              r"current VoV3D-M .*; loading it would skip most of the backbone"):
        load_for_test(path, model, cfg)
    same = _synthetic_state("vov3d_M_k400")
    assert filter_vov3d_checkpoint(same, model, "same.pth") is same
