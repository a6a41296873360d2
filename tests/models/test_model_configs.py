"""The X3D / VoV3D configs carry the reference repositories' hyper-parameters and build
their model."""
import glob
import os

import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.models.model_helpers import project_cfg
from vov3d.models import build_model

COMMON = {"DATA.INPUT_CHANNEL_NUM": [3], "DATA.TRAIN_CROP_SIZE": 224, "SOLVER.MOMENTUM": 0.9,
          "SOLVER.WEIGHT_DECAY": 5e-5, "SOLVER.OPTIMIZING_METHOD": "sgd", "MODEL.DROPOUT_RATE": 0.5,
          "MODEL.LOSS_FUNC": "cross_entropy", "RESNET.ZERO_INIT_FINAL_BN": True,
          "BN.USE_PRECISE_STATS": True, "BN.NUM_BATCHES_PRECISE": 200, "BN.WEIGHT_DECAY": 0.0,
          "RNG_SEED": 0, "NUM_GPUS": 8, "TRAIN.AUTO_RESUME": True, "SOLVER.NESTEROV": True,
          "MODEL.FC_INIT_STD": 0.01, "DATA.TRAIN_JITTER_SCALES": [256, 320]}
K400 = {"TRAIN.DATASET": "kinetics", "TEST.DATASET": "kinetics", "MODEL.NUM_CLASSES": 400,
        "DATA.NUM_FRAMES": 16, "DATA.SAMPLING_RATE": 5, "DATA.TEST_CROP_SIZE": 256,
        "SOLVER.LR_POLICY": "cosine", "SOLVER.WARMUP_EPOCHS": 35.0, "SOLVER.WARMUP_START_LR": 0.01,
        "TEST.NUM_ENSEMBLE_VIEWS": 10, "TEST.NUM_SPATIAL_CROPS": 3, "DATA.TARGET_FPS": 30}
X3D_M = {"MODEL.MODEL_NAME": "X3D", "MODEL.ARCH": "x3d", "X3D.DEPTH_FACTOR": 2.2,
         "X3D.WIDTH_FACTOR": 2.0, "X3D.BOTTLENECK_FACTOR": 2.25, "X3D.DIM_C5": 2048, "X3D.DIM_C1": 12,
         "RESNET.TRANS_FUNC": "x3d_transform"}
X3D_L = dict(X3D_M, **{"X3D.DEPTH_FACTOR": 5.0})
VOV_M = {"MODEL.MODEL_NAME": "VoV3D", "MODEL.ARCH": "vov3d", "VOV3D.DEPTH": 31, "VOV3D.NUM_CONV": 5,
         "VOV3D.INNER_CH": 40, "VOV3D.TRANS_FUNC": "t_osa_2plus1_transform", "VOV3D.STAGE_DEPTHS": []}
VOV_L = dict(VOV_M, **{"VOV3D.DEPTH": 70, "VOV3D.INNER_CH": 48})
SS_SCRATCH = {"MODEL.NUM_CLASSES": 174, "SOLVER.BASE_LR": 0.1, "SOLVER.LR_POLICY": "cosine",
              "SOLVER.MAX_EPOCH": 100, "SOLVER.WARMUP_EPOCHS": 1.0, "SOLVER.WARMUP_START_LR": 0.01,
              "TRAIN.BATCH_SIZE": 64, "TEST.NUM_ENSEMBLE_VIEWS": 2, "TEST.NUM_SPATIAL_CROPS": 3,
              "DATA.INV_UNIFORM_SAMPLE": True, "DATA.RANDOM_FLIP": False,
              "DATA.REVERSE_INPUT_CHANNEL": True}
FINETUNE = dict(SS_SCRATCH, **{
    "SOLVER.BASE_LR": 0.05, "SOLVER.LR_POLICY": "steps_with_relative_lrs",
    "SOLVER.LRS": [1, 0.1, 0.01, 0.001, 0.0001, 0.00001], "SOLVER.STEPS": [0, 35, 45],
    "SOLVER.MAX_EPOCH": 50, "SOLVER.WARMUP_EPOCHS": 0.19, "SOLVER.WARMUP_START_LR": 0.0001,
    "BN.NORM_TYPE": "sync_batchnorm", "BN.NUM_SYNC_DEVICES": 4, "DATA.NUM_FRAMES": 32,
    "DATA.TEST_CROP_SIZE": 256})


def _ss(ds, **extra):
    return dict(SS_SCRATCH, **{"TRAIN.DATASET": ds, "TEST.DATASET": ds}, **extra)


EXPECTED = {
    "Kinetics/vov3d/vov3d_M.yaml": {**K400, **VOV_M, "TRAIN.BATCH_SIZE": 128, "TEST.BATCH_SIZE": 64,
                                    "SOLVER.BASE_LR": 0.1, "SOLVER.MAX_EPOCH": 256,
                                    "TRAIN.CHECKPOINT_PERIOD": 1, "TRAIN.EVAL_PERIOD": 10,
                                    "DATA_LOADER.NUM_WORKERS": 8, "DATA.RANDOM_FLIP": True},
    "Kinetics/vov3d/vov3d_L.yaml": {**K400, **VOV_L, "TRAIN.BATCH_SIZE": 128, "SOLVER.BASE_LR": 0.1,
                                    "SOLVER.MAX_EPOCH": 256, "TRAIN.CHECKPOINT_PERIOD": 1},
    "Kinetics/vov3d/vov3d_M_v1.yaml": {**K400, **VOV_M, "VOV3D.STAGE_DEPTHS": [1, 1, 2, 2],
                                       "VOV3D.NUM_CONV": 4, "VOV3D.INNER_CH": 48,
                                       "SOLVER.MAX_EPOCH": 256},
    "Kinetics/x3d/X3D_M_256e.yaml": {**K400, **X3D_M, "TRAIN.BATCH_SIZE": 128, "TEST.BATCH_SIZE": 64,
                                     "SOLVER.BASE_LR": 0.1, "SOLVER.MAX_EPOCH": 256,
                                     "TRAIN.CHECKPOINT_PERIOD": 10, "DATA.DECODING_BACKEND": "torchvision"},
    "Kinetics/x3d/X3D_L_256scale_256e.yaml": {**K400, **X3D_L, "TRAIN.BATCH_SIZE": 64,
                                              "TEST.BATCH_SIZE": 64, "SOLVER.BASE_LR": 0.05,
                                              "SOLVER.MAX_EPOCH": 256, "TRAIN.CHECKPOINT_PERIOD": 10},
    "Kinetics/x3d/X3D_M.yaml": {**K400, **X3D_M, "SOLVER.MAX_EPOCH": 300, "SOLVER.BASE_LR": 0.1},
    "Kinetics/x3d/X3D_L.yaml": {**K400, **X3D_L, "DATA.TRAIN_CROP_SIZE": 312, "DATA.TEST_CROP_SIZE": 356,
                                "DATA.TRAIN_JITTER_SCALES": [356, 446], "SOLVER.BASE_LR": 0.05,
                                "TRAIN.BATCH_SIZE": 64, "TEST.BATCH_SIZE": 32},
}
for ds, d in (("ssv1", "SSv1"), ("ssv2", "SSv2")):
    v1 = ds == "ssv1"
    EXPECTED.update({
        f"{d}/vov3d/vov3d_M_F16.yaml": {**_ss(ds), **VOV_M, "DATA.NUM_FRAMES": 16, "TEST.BATCH_SIZE": 16,
                                        "TRAIN.CHECKPOINT_PERIOD": 20, "TRAIN.EVAL_PERIOD": 2,
                                        "DATA_LOADER.NUM_WORKERS": 4, "DATA.TEST_CROP_SIZE": 256},
        f"{d}/vov3d/vov3d_M_F32.yaml": {**_ss(ds), **VOV_M, "DATA.NUM_FRAMES": 32,
                                        "TEST.BATCH_SIZE": 64 if v1 else 16,
                                        "DATA_LOADER.NUM_WORKERS": 8 if v1 else 4},
        f"{d}/vov3d/vov3d_L_F16.yaml": {**_ss(ds), **VOV_L, "DATA.NUM_FRAMES": 16, "TEST.BATCH_SIZE": 64,
                                        "DATA_LOADER.NUM_WORKERS": 8},
        f"{d}/vov3d/vov3d_L_F32.yaml": {**_ss(ds), **VOV_L, "DATA.NUM_FRAMES": 32, "TEST.BATCH_SIZE": 64,
                                        "DATA_LOADER.NUM_WORKERS": 4 if v1 else 8},
        f"{d}/vov3d/finetune/vov3d_M_F32_finetune.yaml": {
            **FINETUNE, **VOV_M, "TRAIN.DATASET": ds, "TEST.BATCH_SIZE": 16,
            "TRAIN.CHECKPOINT_FILE_PATH": "output/pretrained/vov3d_M_k400.pth",
            "TRAIN.CHECKPOINT_PERIOD": 10 if v1 else 20},
        f"{d}/vov3d/finetune/vov3d_L_F32_finetune.yaml": {
            **FINETUNE, **VOV_L, "TRAIN.DATASET": ds, "TEST.BATCH_SIZE": 64,
            "TRAIN.CHECKPOINT_FILE_PATH": "output/pretrained/vov3d_L_k400.pth",
            "DATA_LOADER.NUM_WORKERS": 4 if v1 else 8, "TRAIN.CHECKPOINT_PERIOD": 10 if v1 else 20},
        f"{d}/x3d/x3d_M.yaml": {**_ss(ds), **X3D_M, "DATA.NUM_FRAMES": 16, "DATA.TEST_CROP_SIZE": 224,
                                "TEST.NUM_ENSEMBLE_VIEWS": 2 if v1 else 1,
                                "TEST.NUM_SPATIAL_CROPS": 3 if v1 else 1, "TRAIN.CHECKPOINT_PERIOD": 10},
        f"{d}/x3d/x3d_L.yaml": {**_ss(ds), **X3D_L, "DATA.NUM_FRAMES": 16, "DATA.TEST_CROP_SIZE": 224,
                                "DATA.INV_UNIFORM_SAMPLE": False, "DATA.RANDOM_FLIP": True,
                                "DATA.REVERSE_INPUT_CHANNEL": False, "TRAIN.CHECKPOINT_PERIOD": 2},
    })


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def test_every_reference_x3d_vov3d_config_exists():
    found = set()
    for family in ("x3d", "vov3d"):
        for path in glob.glob(os.path.join(REPO_ROOT, "configs", "*", family, "**", "*.yaml"),
                              recursive=True):
            found.add(os.path.relpath(path, os.path.join(REPO_ROOT, "configs")))
    assert set(EXPECTED) <= found


@pytest.mark.parametrize("relpath", sorted(EXPECTED))
def test_config_has_reference_hyper_parameters_and_builds(relpath):
    cfg = project_cfg(os.path.join("configs", relpath), "NUM_GPUS", 8)
    for key, value in {**COMMON, **EXPECTED[relpath]}.items():
        got = _get(cfg, key)
        if isinstance(value, float):
            assert got == pytest.approx(value), key
        else:
            assert (list(got) if isinstance(got, (list, tuple)) else got) == value, key
    # The reference's BASE_LR_SCALE_NUM_SHARDS was inert; PySlowFast's own X3D configs scale.
    pyslowfast = relpath in ("Kinetics/x3d/X3D_M.yaml", "Kinetics/x3d/X3D_L.yaml")
    assert cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS == pyslowfast
    cfg.defrost()
    cfg.NUM_GPUS = 0
    with torch.device("meta"):
        model = build_model(cfg)
    assert type(model).__name__ == cfg.MODEL.MODEL_NAME
