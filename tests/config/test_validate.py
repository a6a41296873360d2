"""assert_and_infer_cfg: one checker per group of keys, then the derived values."""
import pytest

from tests.config.config_helpers import args_for, write
from vov3d.config import ConfigError, assert_and_infer_cfg, get_cfg, load_config, merge_overrides
from vov3d.config.validate import MODEL_ARCHS


def _validated(*overrides):
    cfg = get_cfg()
    merge_overrides(cfg, ["NUM_GPUS", "0"] + list(overrides))
    return assert_and_infer_cfg(cfg)


def test_the_defaults_are_valid():
    assert_and_infer_cfg(get_cfg())


@pytest.mark.parametrize("opts,key", [
    (["NUM_GPUS", "3"], "TRAIN.BATCH_SIZE"),
    (["TEST.NUM_SPATIAL_CROPS", "2"], "TEST.NUM_SPATIAL_CROPS"),
    (["SOLVER.LR_POLICY", "linear"], "SOLVER.LR_POLICY"),
    (["TEST.ENSEMBLE_METHOD", "mean"], "TEST.ENSEMBLE_METHOD"),
    (["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[5, 10]",
      "SOLVER.LRS", "[1, 0.1]"], "SOLVER.STEPS"),
    (["MULTIGRID.LONG_CYCLE", "True"], "MULTIGRID"),
    (["DATA.MULTI_LABEL", "True"], "DATA.MULTI_LABEL"),
    (["TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST", "['s4', 's5']"], "TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST"),
])
def test_invalid_merged_values_are_rejected(tmp_path, opts, key):
    path = write(tmp_path / "v.yaml", "NUM_GPUS: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(args_for(path, opts))
    assert key in str(err.value)


# One invalid value per checker, so each of them is known to run.
@pytest.mark.parametrize("opts,key", [
    (["LOG_PERIOD", "0"], "LOG_PERIOD"),
    (["TRAIN.EVAL_PERIOD", "0"], "TRAIN.EVAL_PERIOD"),
    (["TEST.NUM_ENSEMBLE_VIEWS", "0"], "TEST.NUM_ENSEMBLE_VIEWS"),
    (["DATA.STD", "[0.2, 0.0, 0.2]"], "DATA.STD"),
    (["DATA_LOADER.NUM_RETRIES", "0"], "DATA_LOADER.NUM_RETRIES"),
    (["MODEL.DROPOUT_RATE", "1.0"], "MODEL.DROPOUT_RATE"),
    (["BN.NUM_SYNC_DEVICES", "0"], "BN.NUM_SYNC_DEVICES"),
    (["SOLVER.MAX_EPOCH", "0"], "SOLVER.MAX_EPOCH"),
    (["TENSORBOARD.HISTOGRAM.FIGSIZE", "[8, 0]"], "TENSORBOARD.HISTOGRAM.FIGSIZE"),
    (["MODEL.EMA.DECAY", "1.0"], "MODEL.EMA.DECAY"),
    (["MIXUP.ALPHA", "-0.1"], "MIXUP.ALPHA"),
    (["DEMO.OUTPUT_FPS", "0"], "DEMO.OUTPUT_FPS"),
    (["DEMO.BUFFER_SIZE", "-1"], "DEMO.BUFFER_SIZE"),
    (["DEMO.NUM_CLIPS_SKIP", "-1"], "DEMO.NUM_CLIPS_SKIP"),
    (["DEMO.DISPLAY_WIDTH", "320"], "DEMO.DISPLAY_WIDTH/DISPLAY_HEIGHT"),
    (["DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DEMO.BUFFER_SIZE", "8"], "DEMO.BUFFER_SIZE"),
    (["TENSORBOARD.MODEL_VIS.TOPK_PREDS", "0"], "TENSORBOARD.MODEL_VIS.TOPK_PREDS"),
])
def test_each_group_has_its_checker(opts, key):
    with pytest.raises(ConfigError, match=f"invalid value for '{key}'"):
        _validated(*opts)


def test_demo_settings_that_work_together_are_accepted():
    cfg = _validated("DEMO.ENABLE", "True", "DEMO.NUM_CLIPS_SKIP", "-1", "DEMO.THREAD_ENABLE", "True",
                     "DEMO.DISPLAY_WIDTH", "320", "DEMO.DISPLAY_HEIGHT", "240", "DATA.NUM_FRAMES", "4",
                     "DATA.SAMPLING_RATE", "2", "DEMO.BUFFER_SIZE", "7", "DEMO.OUTPUT_FPS", "12.5")
    assert cfg.DEMO.ENABLE and cfg.DEMO.BUFFER_SIZE == 7


@pytest.mark.parametrize("key,value,expected", [
    ("TRAIN.GRAD_ACCUMULATION_STEPS", "0", "an integer >= 1"),
    ("MIXUP.ALPHA", "-0.5", ">= 0"),
    ("MIXUP.CUTMIX_ALPHA", "-1.0", ">= 0"),
    ("MIXUP.PROB", "1.5", "in [0, 1]"),
    ("MIXUP.PROB", "-0.1", "in [0, 1]"),
    ("MIXUP.SWITCH_PROB", "2.0", "in [0, 1]"),
    ("MIXUP.LABEL_SMOOTH_VALUE", "1.0", "in [0, 1)"),
    ("MODEL.EMA.DECAY", "0.0", "in (0, 1)"),
    ("MODEL.EMA.DECAY", "1.5", "in (0, 1)"),
])
def test_training_recipe_values_are_checked(key, value, expected):
    with pytest.raises(ConfigError) as err:
        _validated(key, value)
    assert f"invalid value for '{key}'" in str(err.value) and expected in str(err.value)


def test_the_recipes_boundary_values_are_accepted():
    cfg = _validated("MIXUP.ENABLE", "True", "MIXUP.ALPHA", "0.0", "MIXUP.CUTMIX_ALPHA", "0.0", "MIXUP.PROB", "0.0",
                     "MIXUP.SWITCH_PROB", "1.0", "MIXUP.LABEL_SMOOTH_VALUE", "0.0", "MODEL.EMA.DECAY", "0.5",
                     "TRAIN.GRAD_ACCUMULATION_STEPS", "1")
    assert cfg.MIXUP.ENABLE and cfg.MODEL.EMA.DECAY == 0.5


def test_accumulation_with_multigrid_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"'TRAIN.GRAD_ACCUMULATION_STEPS': 2; expected 1 with multigrid "
                                          r"training \(its batch size changes"):
        _validated("TRAIN.GRAD_ACCUMULATION_STEPS", "2", "MULTIGRID.SHORT_CYCLE", "True")


def test_reference_batch_scaling_counts_the_accumulated_micro_batches():
    # 64 clips x 4 micro-batches = the reference's 256: the reference LR is kept.
    cfg = _validated("SOLVER.REFERENCE_BATCH_SIZE", "256", "TRAIN.BATCH_SIZE", "64", "SOLVER.BASE_LR", "0.8",
                     "TRAIN.GRAD_ACCUMULATION_STEPS", "4")
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.8)


def test_cpu_batch_sizes_need_no_divisibility(tmp_path):
    path = write(tmp_path / "c.yaml", "NUM_GPUS: 0\nTRAIN:\n  BATCH_SIZE: 7\n")
    assert load_config(args_for(path)).TRAIN.BATCH_SIZE == 7


def test_validation_runs_after_merge_and_scales_lr_by_shards(tmp_path):
    path = write(tmp_path / "s.yaml", """
        NUM_GPUS: 0
        SOLVER:
          BASE_LR: 0.1
          WARMUP_START_LR: 0.01
          COSINE_END_LR: 0.001
          BASE_LR_SCALE_NUM_SHARDS: True
    """)
    cfg = load_config(args_for(path, num_shards=4, shard_id=3))
    assert cfg.NUM_SHARDS == 4 and cfg.SHARD_ID == 3
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.4)
    assert cfg.SOLVER.WARMUP_START_LR == pytest.approx(0.04)
    assert cfg.SOLVER.COSINE_END_LR == pytest.approx(0.004)


def test_reference_batch_scaling_and_its_conflict_with_shard_scaling():
    cfg = _validated("SOLVER.REFERENCE_BATCH_SIZE", "256", "TRAIN.BATCH_SIZE", "64", "SOLVER.BASE_LR", "0.8")
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="SOLVER.REFERENCE_BATCH_SIZE"):
        _validated("SOLVER.REFERENCE_BATCH_SIZE", "256", "SOLVER.BASE_LR_SCALE_NUM_SHARDS", "True")


@pytest.mark.parametrize("ext,ok", [("webm", False), (".", False), ("mp4", False), (".webm", True), ("", True)])
def test_ssv2_video_extension_needs_its_dot(tmp_path, ext, ok):
    path = write(tmp_path / "s.yaml", "NUM_GPUS: 0\n")
    if ok:
        assert load_config(args_for(path, ["DATA.SSV2_VIDEO_EXT", ext])).DATA.SSV2_VIDEO_EXT == ext
        return
    with pytest.raises(ConfigError) as err:
        load_config(args_for(path, ["DATA.SSV2_VIDEO_EXT", ext]))
    assert "DATA.SSV2_VIDEO_EXT" in str(err.value) and "'.webm'" in str(err.value)


def test_cpu_configs_say_gloo_and_gpu_configs_keep_their_backend():
    cfg = get_cfg()
    merge_overrides(cfg, ["NUM_GPUS", "0"])
    assert assert_and_infer_cfg(cfg).DIST_BACKEND == "gloo"
    # Tools such as model_summary validate 8-GPU configs on machines without GPUs.
    cfg = get_cfg()
    merge_overrides(cfg, ["NUM_GPUS", "8", "TRAIN.BATCH_SIZE", "16", "TEST.BATCH_SIZE", "8"])
    assert assert_and_infer_cfg(cfg).DIST_BACKEND == "nccl"


def test_precise_bn_needs_at_least_one_batch():
    cfg = get_cfg()
    merge_overrides(cfg, ["BN.USE_PRECISE_STATS", "True", "BN.NUM_BATCHES_PRECISE", "0"])
    # 0 batches would write all-zero statistics into every BN layer.
    with pytest.raises(ConfigError, match=r"BN.NUM_BATCHES_PRECISE.*>= 1"):
        assert_and_infer_cfg(cfg)
    cfg = get_cfg()
    merge_overrides(cfg, ["BN.USE_PRECISE_STATS", "False", "BN.NUM_BATCHES_PRECISE", "0"])
    assert_and_infer_cfg(cfg)  # unused when precise BN is off


@pytest.mark.parametrize("split", ["TRAIN", "TEST"])
def test_caffe2_checkpoints_are_refused_by_validation(split):
    with pytest.raises(ConfigError) as err:
        _validated(f"{split}.CHECKPOINT_TYPE", "caffe2", f"{split}.CHECKPOINT_FILE_PATH", "/w/c2.pkl")
    assert str(err.value) == (
        f"{split}.CHECKPOINT_TYPE caffe2 is not supported ({split}.CHECKPOINT_FILE_PATH '/w/c2.pkl'): "
        "convert the caffe2 pickle to a PyTorch state dict and use CHECKPOINT_TYPE pytorch.")
    with pytest.raises(ConfigError, match=f"invalid value for '{split}.CHECKPOINT_TYPE'"):
        _validated(f"{split}.CHECKPOINT_TYPE", "torch")


def test_model_arch_is_one_of_the_single_pathway_architectures():
    for arch in MODEL_ARCHS:
        assert _validated("MODEL.ARCH", arch).MODEL.ARCH == arch
    with pytest.raises(ConfigError, match=r"invalid value for 'MODEL.ARCH': 'slowfast'; expected one of "
                                          r"'c2d', .*'cox3d'"):
        _validated("MODEL.ARCH", "slowfast")


@pytest.mark.parametrize("key", ["DIST_TIMEOUT", "DIST_INIT_TIMEOUT"])
def test_distributed_waits_must_be_positive(key):
    cfg = get_cfg()
    assert cfg.DIST_INIT_TIMEOUT == 300 and cfg.DIST_TIMEOUT == 1800  # minutes to join, half an hour per collective
    with pytest.raises(ConfigError, match=f"invalid value for '{key}': 0; expected > 0 seconds"):
        _validated(key, "0")


def test_visualisation_switches_without_tensorboard_are_named_in_a_warning(caplog):
    with caplog.at_level("WARNING"):
        _validated("TENSORBOARD.CONFUSION_MATRIX.ENABLE", "True", "TENSORBOARD.WRONG_PRED_VIS.ENABLE", "True")
    assert ("TENSORBOARD.CONFUSION_MATRIX.ENABLE, TENSORBOARD.WRONG_PRED_VIS.ENABLE: no effect while "
            "TENSORBOARD.ENABLE is False (nothing is written to TensorBoard).") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        _validated("TENSORBOARD.ENABLE", "True", "TENSORBOARD.MODEL_VIS.ENABLE", "True")
    assert "no effect" not in caplog.text
