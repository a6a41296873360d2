"""Tiny models of every family for export tests, with weights that make outputs sensitive."""
import torch

from tests.models.model_helpers import project_cfg, randomise_bn

# Per family: config, depth keys that make it shallow, the smallest crop it accepts.
FAMILIES = {
    "X3D": ("configs/Kinetics/x3d/X3D_S.yaml", ["X3D.DEPTH_FACTOR", "0.4"], 32),
    "CoX3D": ("configs/Kinetics/cox3d/cox3d_S.yaml", ["X3D.DEPTH_FACTOR", "0.4"], 32),
    "VoV3D": ("configs/Kinetics/vov3d/vov3d_M.yaml", ["VOV3D.STAGE_DEPTHS", "[1, 1, 1, 1]", "VOV3D.NUM_CONV", "2"], 32),
    "CSN": ("configs/Kinetics/csn/ircsn_r50_32x2.yaml", ["CSN.DEPTH", "50"], 32),
    "SEVNet": ("configs/Kinetics/sevnet/sevnet_G8.yaml", ["SEVNET.DEPTHS", "[1, 1, 1, 1]"], 64),
}
NUM_CLASSES = 5
NAMES = ["archery", "bowling", "cooking", "dancing", "eating"]


def family_cfg(family, *overrides, frames=4):
    path, shallow, crop = FAMILIES[family]
    return project_cfg(path, "DATA.NUM_FRAMES", frames, "DATA.TRAIN_CROP_SIZE", crop, "DATA.TEST_CROP_SIZE", crop,
                       "DATA.TRAIN_JITTER_SCALES", f"[{crop}, {crop}]", "MODEL.NUM_CLASSES", NUM_CLASSES,
                       *shallow, *overrides)


def sensitive(model, seed=0):
    """Random BN statistics and a classifier with O(1) logits: with the default init the
    probabilities are nearly uniform and would hide a wrong export."""
    torch.manual_seed(seed)
    with torch.no_grad():
        randomise_bn(model)
        projection = model.head.projection
        projection.weight.normal_(0, 3.0 / projection.weight.shape[1] ** 0.5)
    return model.eval()
