"""Validation and derived values, run once on the fully merged config."""
import logging
from typing import Any, Iterable

from yacs.config import CfgNode

from vov3d.config.merge import ConfigError

logger = logging.getLogger(__name__)

_LR_POLICIES = ("cosine", "steps_with_relative_lrs")
_OPTIMIZERS = ("sgd", "adam", "adamw")
_NORM_TYPES = ("batchnorm", "sync_batchnorm")
_ENSEMBLE = ("sum", "max")
_BACKENDS = ("pyav", "torchvision")
_SEGMENT_TEST = ("spread", "midpoint", "random")
_LOSSES = ("cross_entropy", "soft_cross_entropy", "bce", "bce_logit")

# Keys that PySlowFast / VoV3D configs set but that no vov3d model or loop reads (the
# references ignored most of them too). A value other than the default is accepted, so
# those configs load, and named in a warning, so nobody believes it changed anything.
COMPATIBILITY_ONLY_KEYS = (
    "SOLVER.GAMMA", "SOLVER.STEP_SIZE", "SOLVER.WARMUP_FACTOR",
    "VOV3D.DIM_C5", "VOV3D.BN_LIN5",
    "RESNET.WIDTH_PER_GROUP", "RESNET.NUM_BLOCK_TEMP_KERNEL", "RESNET.SPATIAL_STRIDES", "RESNET.DEPTH",
    "NONLOCAL.GROUP", "NONLOCAL.INSTANTIATION", "NONLOCAL.POOL",
    "SLOWFAST.BETA_INV", "SLOWFAST.ALPHA", "SLOWFAST.FUSION_CONV_CHANNEL_RATIO", "SLOWFAST.FUSION_KERNEL_SZ",
    "MULTIGRID.EPOCH_FACTOR", "MULTIGRID.SHORT_CYCLE_FACTORS", "MULTIGRID.LONG_CYCLE_FACTORS",
    "MULTIGRID.BN_BASE_SIZE", "MULTIGRID.EVAL_FREQ", "MULTIGRID.LONG_CYCLE_SAMPLING_RATE",
    "BENCHMARK.NUM_EPOCHS", "BENCHMARK.LOG_PERIOD", "BENCHMARK.SHUFFLE",
    "TENSORBOARD.PREDICTIONS_PATH", "TENSORBOARD.CLASS_NAMES_PATH", "TENSORBOARD.CATEGORIES_PATH",
    "DETECTION.ALIGNED", "DETECTION.SPATIAL_SCALE_FACTOR", "DETECTION.ROI_XFORM_RESOLUTION",
)
# Switches for features vov3d does not have: refused rather than ignored.
UNSUPPORTED_SWITCHES = (
    ("DATA.MULTI_LABEL", "multi-label datasets are not supported"),
    ("TENSORBOARD.CONFUSION_MATRIX.ENABLE", "confusion-matrix plots are not implemented"),
    ("TENSORBOARD.HISTOGRAM.ENABLE", "per-class histograms are not implemented"),
    ("TENSORBOARD.MODEL_VIS.ENABLE", "model visualisation is not implemented"),
    ("TENSORBOARD.WRONG_PRED_VIS.ENABLE", "wrong-prediction visualisation is not implemented"),
)


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"invalid value for '{key}': {value!r}; expected {expected}.")


def _one_of(cfg: CfgNode, key: str, allowed: Iterable[str]) -> None:
    value = _get(cfg, key)
    _require(value in allowed, key, value, "one of " + ", ".join(map(repr, allowed)))


def _get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def assert_and_infer_cfg(cfg: CfgNode) -> CfgNode:
    """Check the merged config and fill in derived values (in place; returns cfg)."""
    _require(cfg.NUM_GPUS >= 0, "NUM_GPUS", cfg.NUM_GPUS, "0 (CPU) or more")
    _require(cfg.NUM_SHARDS >= 1, "NUM_SHARDS", cfg.NUM_SHARDS, ">= 1")
    _require(0 <= cfg.SHARD_ID < cfg.NUM_SHARDS, "SHARD_ID", cfg.SHARD_ID,
             f"0 <= SHARD_ID < NUM_SHARDS ({cfg.NUM_SHARDS})")
    _require(cfg.LOG_PERIOD >= 1, "LOG_PERIOD", cfg.LOG_PERIOD, ">= 1")
    for key in ("DIST_TIMEOUT", "DIST_INIT_TIMEOUT"):
        _require(cfg[key] > 0, key, cfg[key], "> 0 seconds")
    if cfg.NUM_GPUS == 0:
        # launch_job joins CPU processes with gloo whatever this says; the dump in stdout.log
        # and in checkpoints should show what runs.
        cfg.DIST_BACKEND = "gloo"

    if cfg.BN.USE_PRECISE_STATS:
        # 0 batches would write all-zero statistics into every BN layer.
        _require(cfg.BN.NUM_BATCHES_PRECISE >= 1, "BN.NUM_BATCHES_PRECISE",
                 cfg.BN.NUM_BATCHES_PRECISE, ">= 1 (or BN.USE_PRECISE_STATS False)")
    _one_of(cfg, "BN.NORM_TYPE", _NORM_TYPES)
    _require(cfg.BN.NUM_SYNC_DEVICES >= 1, "BN.NUM_SYNC_DEVICES", cfg.BN.NUM_SYNC_DEVICES, ">= 1")
    _require(cfg.MODEL.FROZEN_BN or not cfg.BN.FROZEN_AFFINE, "BN.FROZEN_AFFINE", True,
             "False unless MODEL.FROZEN_BN is True (it freezes weight and bias on top of frozen statistics)")
    _require(not (cfg.MODEL.FROZEN_BN and cfg.BN.NORM_TYPE == "sync_batchnorm"), "BN.NORM_TYPE",
             cfg.BN.NORM_TYPE, "'batchnorm' when MODEL.FROZEN_BN is True (frozen statistics are not synced)")
    _require(cfg.BN.NUM_SPLITS == 1, "BN.NUM_SPLITS", cfg.BN.NUM_SPLITS,
             "1 (sub-batch BN is not supported)")
    for split in ("TRAIN", "TEST"):
        _one_of(cfg, f"{split}.CHECKPOINT_TYPE", ("pytorch", "caffe2"))
        batch = cfg[split].BATCH_SIZE
        _require(batch >= 1, f"{split}.BATCH_SIZE", batch, ">= 1")
        if cfg.NUM_GPUS > 0:
            _require(batch % cfg.NUM_GPUS == 0, f"{split}.BATCH_SIZE", batch,
                     f"a multiple of NUM_GPUS ({cfg.NUM_GPUS}): it is the batch of one machine")
    _require(cfg.TRAIN.EVAL_PERIOD >= 1, "TRAIN.EVAL_PERIOD", cfg.TRAIN.EVAL_PERIOD, ">= 1")
    _require(cfg.TRAIN.CHECKPOINT_PERIOD >= 1, "TRAIN.CHECKPOINT_PERIOD",
             cfg.TRAIN.CHECKPOINT_PERIOD, ">= 1")
    _require(cfg.RESNET.NUM_GROUPS > 0, "RESNET.NUM_GROUPS", cfg.RESNET.NUM_GROUPS, "> 0")
    _require(cfg.RESNET.WIDTH_PER_GROUP > 0, "RESNET.WIDTH_PER_GROUP", cfg.RESNET.WIDTH_PER_GROUP, "> 0")
    _require(cfg.RESNET.WIDTH_PER_GROUP % cfg.RESNET.NUM_GROUPS == 0, "RESNET.WIDTH_PER_GROUP",
             cfg.RESNET.WIDTH_PER_GROUP, f"a multiple of RESNET.NUM_GROUPS ({cfg.RESNET.NUM_GROUPS})")

    _require(cfg.TEST.NUM_ENSEMBLE_VIEWS >= 1, "TEST.NUM_ENSEMBLE_VIEWS",
             cfg.TEST.NUM_ENSEMBLE_VIEWS, ">= 1")
    _require(cfg.TEST.NUM_SPATIAL_CROPS in (1, 3), "TEST.NUM_SPATIAL_CROPS",
             cfg.TEST.NUM_SPATIAL_CROPS, "1 (centre crop) or 3 (left/centre/right)")
    if cfg.DATA.ENSEMBLE_METHOD:
        logger.warning("DATA.ENSEMBLE_METHOD is the legacy name of TEST.ENSEMBLE_METHOD; using %r.",
                       cfg.DATA.ENSEMBLE_METHOD)
        cfg.TEST.ENSEMBLE_METHOD = cfg.DATA.ENSEMBLE_METHOD
    _one_of(cfg, "TEST.ENSEMBLE_METHOD", _ENSEMBLE)

    _one_of(cfg, "DATA.DECODING_BACKEND", _BACKENDS)
    _one_of(cfg, "DATA.SEGMENT_TEST_SAMPLING", _SEGMENT_TEST)
    ext = cfg.DATA.SSV2_VIDEO_EXT
    _require(ext == "" or (ext.startswith(".") and len(ext) > 1), "DATA.SSV2_VIDEO_EXT", ext,
             "'' (extracted frame folders) or a file extension with its dot, e.g. '.webm'")
    _require(cfg.DATA.NUM_FRAMES >= 1, "DATA.NUM_FRAMES", cfg.DATA.NUM_FRAMES, ">= 1")
    _require(cfg.DATA.SAMPLING_RATE >= 1, "DATA.SAMPLING_RATE", cfg.DATA.SAMPLING_RATE, ">= 1")
    _require(len(cfg.DATA.MEAN) == 3 and len(cfg.DATA.STD) == 3, "DATA.MEAN/DATA.STD",
             (cfg.DATA.MEAN, cfg.DATA.STD), "three values each")
    _require(all(s > 0 for s in cfg.DATA.STD), "DATA.STD", cfg.DATA.STD, "positive values")
    scales = cfg.DATA.TRAIN_JITTER_SCALES
    _require(len(scales) == 2 and 0 < scales[0] <= scales[1], "DATA.TRAIN_JITTER_SCALES", scales,
             "[min, max] with 0 < min <= max")
    _require(cfg.DATA.TRAIN_CROP_SIZE <= scales[0], "DATA.TRAIN_CROP_SIZE", cfg.DATA.TRAIN_CROP_SIZE,
             f"<= DATA.TRAIN_JITTER_SCALES[0] ({scales[0]})")
    _require(cfg.DATA_LOADER.NUM_WORKERS >= 0, "DATA_LOADER.NUM_WORKERS",
             cfg.DATA_LOADER.NUM_WORKERS, ">= 0")
    _require(cfg.DATA_LOADER.NUM_RETRIES >= 1, "DATA_LOADER.NUM_RETRIES",
             cfg.DATA_LOADER.NUM_RETRIES, ">= 1")

    _one_of(cfg, "MODEL.HEAD_ACT", ("softmax", "sigmoid"))
    _one_of(cfg, "MODEL.LOSS_FUNC", _LOSSES)
    _require(cfg.MODEL.NUM_CLASSES >= 1, "MODEL.NUM_CLASSES", cfg.MODEL.NUM_CLASSES, ">= 1")
    _require(0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0, "MODEL.DROPOUT_RATE", cfg.MODEL.DROPOUT_RATE,
             "in [0, 1)")

    _one_of(cfg, "SOLVER.LR_POLICY", _LR_POLICIES)
    _one_of(cfg, "SOLVER.OPTIMIZING_METHOD", _OPTIMIZERS)
    _require(cfg.SOLVER.MAX_EPOCH >= 1, "SOLVER.MAX_EPOCH", cfg.SOLVER.MAX_EPOCH, ">= 1")
    _require(cfg.SOLVER.WARMUP_EPOCHS >= 0, "SOLVER.WARMUP_EPOCHS", cfg.SOLVER.WARMUP_EPOCHS, ">= 0")
    if cfg.SOLVER.LR_POLICY == "cosine":
        _require(cfg.SOLVER.COSINE_END_LR < cfg.SOLVER.BASE_LR, "SOLVER.COSINE_END_LR",
                 cfg.SOLVER.COSINE_END_LR, f"< SOLVER.BASE_LR ({cfg.SOLVER.BASE_LR})")
    else:
        steps, lrs = cfg.SOLVER.STEPS, cfg.SOLVER.LRS
        _require(len(steps) >= 1 and steps[0] == 0, "SOLVER.STEPS", steps, "a list starting with 0")
        _require(list(steps) == sorted(steps), "SOLVER.STEPS", steps, "increasing epochs")
        _require(len(lrs) >= len(steps), "SOLVER.LRS", lrs,
                 f"at least one relative LR per step ({len(steps)})")

    _require(not cfg.MULTIGRID.LONG_CYCLE and not cfg.MULTIGRID.SHORT_CYCLE, "MULTIGRID",
             "a cycle switched on", "LONG_CYCLE and SHORT_CYCLE False (multigrid is not implemented)")
    _require(not cfg.DETECTION.ENABLE, "DETECTION.ENABLE", True, "False (classification only)")
    _require(not cfg.DEMO.ENABLE, "DEMO.ENABLE", True, "False (use tools/stream_net.py)")

    for key, why in UNSUPPORTED_SWITCHES:
        _require(not _get(cfg, key), key, True, f"False ({why})")
    _warn_compatibility_only(cfg)
    _scale_learning_rates(cfg)
    return cfg


def _warn_compatibility_only(cfg: CfgNode) -> None:
    from vov3d.config.defaults import get_cfg

    defaults = get_cfg()
    changed = [k for k in COMPATIBILITY_ONLY_KEYS if _get(cfg, k) != _get(defaults, k)]
    if changed:
        logger.warning("These keys are accepted for compatibility with PySlowFast/VoV3D configs but "
                       "have no effect in vov3d: %s.", ", ".join(changed))


def _scale_learning_rates(cfg: CfgNode) -> None:
    """Shard scaling (the reference's config order made it inert) or reference-batch scaling."""
    _require(not (cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS and cfg.SOLVER.REFERENCE_BATCH_SIZE > 0),
             "SOLVER.REFERENCE_BATCH_SIZE", cfg.SOLVER.REFERENCE_BATCH_SIZE,
             "0 when SOLVER.BASE_LR_SCALE_NUM_SHARDS is True (both would scale by the shards)")
    factor = 1.0
    if cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS:
        factor = float(cfg.NUM_SHARDS)
    elif cfg.SOLVER.REFERENCE_BATCH_SIZE > 0:
        factor = cfg.TRAIN.BATCH_SIZE * cfg.NUM_SHARDS / cfg.SOLVER.REFERENCE_BATCH_SIZE
    if factor != 1.0:
        cfg.SOLVER.BASE_LR *= factor
        cfg.SOLVER.WARMUP_START_LR *= factor
        cfg.SOLVER.COSINE_END_LR *= factor
