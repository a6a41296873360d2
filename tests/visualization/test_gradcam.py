"""Grad-CAM: it finds the region a model's score depends on, works on every model family in
clip mode, and refuses layer names that name no module."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from tests.models.model_helpers import small_cfg
from vov3d.config import ConfigError
from vov3d.models import build_model
from vov3d.visualization.gradcam import GradCAM, overlay
from vov3d.visualization.layers import check_layer_names, parse_layer_entry

T, H, W = 4, 12, 16


class Masked(nn.Module):
    def __init__(self, masks):
        super().__init__()
        self.register_buffer("masks", masks)

    def forward(self, x):
        return x * self.masks


class RegionNet(nn.Module):
    """Two classes read from a 2-channel feature map pooled 2x in time and space [2, 6, 8]
    whose channel 0 sees only the top-left corner in the first half of the clip (frames 0-1,
    rows 0-5, columns 0-5 of the input) and channel 1 only a bottom-right patch in the second
    half (frames 2-3, rows 8-11, columns 10-15); class c is the sum of channel c. A uniform
    clip scores class 0 higher (9 cells to 6)."""

    def __init__(self):
        super().__init__()
        masks = torch.zeros(1, 2, T // 2, H // 2, W // 2)
        masks[0, 0, 0, 0:3, 0:3] = 1
        masks[0, 1, 1, 4:6, 5:8] = 1
        conv = nn.Conv3d(3, 2, kernel_size=2, stride=2, bias=False)
        nn.init.constant_(conv.weight, 1.0 / 24)  # the mean of each 2x2x2 cube
        self.features = nn.Sequential(conv, Masked(masks))

    def forward(self, inputs):
        x = inputs[0] if isinstance(inputs, list) else inputs
        logits = self.features(x).sum(dim=(2, 3, 4))
        return logits if self.training else logits.softmax(dim=1)


def _argmax_position(cam):
    return np.unravel_index(int(cam.argmax()), cam.shape)


def test_the_map_peaks_where_the_explained_class_looks():
    model = RegionNet()
    clip = torch.ones(1, 3, T, H, W)
    maps, preds = GradCAM(model, "features")(clip)
    assert int(preds.argmax()) == 0 and maps.shape == (1, T, H, W)
    cam = maps[0]
    t, y, x = _argmax_position(cam)
    assert t < 2 and y < 6 and x < 6
    assert float(cam.max()) == pytest.approx(1.0, abs=1e-3) and float(cam.min()) == 0.0
    assert float(cam[:, 8:, 10:].max()) < 0.5  # class 1's region does not explain class 0
    assert model.training  # the caller's mode is restored

    maps, _ = GradCAM(model, "features")(clip, labels=torch.tensor([1]))  # USE_TRUE_LABEL
    t, y, x = _argmax_position(maps[0])
    assert t >= 2 and y >= 8 and x >= 10
    assert float(maps[0][:, :6, :6].max()) < 0.5


@pytest.mark.parametrize("config,crop", [
    ("configs/Kinetics/vov3d/vov3d_M.yaml", 32), ("configs/Kinetics/x3d/X3D_S.yaml", 32),
    ("configs/Kinetics/csn/ircsn_r50_32x2.yaml", 64), ("configs/SSv2/sevnet/sevnet_G8_F16.yaml", 64),
    ("configs/Kinetics/cox3d/cox3d_S.yaml", 32)], ids=["VoV3D", "X3D", "CSN", "SEVNet", "CoX3D"])
def test_every_family_gives_a_map_of_its_clip_on_the_last_stage(config, crop):
    torch.manual_seed(0)
    model = build_model(small_cfg(config, 4, crop, crop, "MODEL.NUM_CLASSES", 3))
    clip = torch.randn(1, 3, 4, crop, crop)
    before = clip.clone()
    maps, preds = GradCAM(model)(clip)
    assert maps.shape == (1, 4, crop, crop) and torch.equal(clip, before)
    assert float(maps.min()) == 0.0 and float(maps.max()) == pytest.approx(1.0, abs=1e-2)
    assert torch.allclose(preds.sum(dim=1), torch.ones(1))  # the eval-mode (softmax) output
    assert all(p.grad is None for p in model.parameters())


def test_overlay_blends_the_colormap_over_the_frames():
    from matplotlib import colormaps

    frames = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    frames[1] = 200
    cam = torch.ones(2, 3, 4)
    out = overlay(frames, cam, "viridis", alpha=0.5)
    top = np.array(colormaps["viridis"](1.0)[:3]) * 255
    assert np.abs(out[0, 0, 0] - 0.5 * top).max() <= 0.5
    assert np.abs(out[1, 0, 0] - (0.5 * top + 100)).max() <= 0.5


def test_unknown_layers_are_refused_with_nearby_names():
    cfg = small_cfg("configs/Kinetics/x3d/X3D_S.yaml", 4, 32, 32)
    cfg.defrost()
    cfg.TENSORBOARD.MODEL_VIS.ENABLE = True
    cfg.TENSORBOARD.MODEL_VIS.LAYER_LIST = ["s5/pathway0_res0", "s5/pathway0_res99 0,1"]
    with pytest.raises(ConfigError) as err:
        check_layer_names(cfg)
    message = str(err.value)
    assert message.startswith("TENSORBOARD.MODEL_VIS.LAYER_LIST entry 's5/pathway0_res99' names no module of X3D; "
                              "nearby valid names: s5/pathway0_res6, s5/pathway0_res5, s5/pathway0_res4")
    assert "the top-level modules are s1, s2, s3, s4, s5, head" in message
    cfg.TENSORBOARD.MODEL_VIS.LAYER_LIST = ["s5.pathway0_res0 0,1;2"]
    cfg.TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST = ["s6"]
    with pytest.raises(ConfigError, match=r"GRAD_CAM.LAYER_LIST entry 's6' names no module of X3D; nearby valid "
                                          r"names: s5, s4, s3, s2, s1 \(the top-level"):
        check_layer_names(cfg)
    cfg.TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST = []  # the last stage
    check_layer_names(cfg)
    assert parse_layer_entry("s2/pathway0_res0 0,1;2", "K") == ("s2.pathway0_res0", ([0, 1], [2]))
    with pytest.raises(ConfigError, match=r"the index '0,x' must be integers"):
        parse_layer_entry("s2 0,x", "TENSORBOARD.MODEL_VIS.LAYER_LIST")
    with pytest.raises(ConfigError, match="names no module of"):
        GradCAM(build_model(small_cfg("configs/Kinetics/x3d/X3D_S.yaml", 4, 32, 32)), "s5/nothing")
