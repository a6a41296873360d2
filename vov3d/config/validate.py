"""Validation and derived values, run once on the fully merged config.

One checker per group of keys, run in the order of CHECKERS, then the derived values.
Keys of the references that vov3d does not keep never reach here (legacy.py).
"""
import logging
from typing import Any, Iterable

from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.utils.augment_policy import PolicyError, RandAugmentPolicy

logger = logging.getLogger(__name__)

# vov3d models have one pathway; "slowfast" (two) is not among them.
MODEL_ARCHS = ("c2d", "i3d", "slow", "x3d", "vov3d", "csn", "sevnet", "cox3d")
_LR_POLICIES = ("cosine", "steps_with_relative_lrs")
_OPTIMIZERS = ("sgd", "adam", "adamw")
_NORM_TYPES = ("batchnorm", "sync_batchnorm")
_ENSEMBLE = ("sum", "max")
_BACKENDS = ("pyav", "torchvision")
_SEGMENT_TEST = ("spread", "midpoint", "random")
_LOSSES = ("cross_entropy", "soft_cross_entropy", "bce", "bce_logit")

_INTERPOLATIONS = ("bilinear", "bicubic", "random")
_ERASING_MODES = ("const", "rand", "pixel")


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"invalid value for '{key}': {value!r}; expected {expected}.")


def _one_of(cfg: CfgNode, key: str, allowed: Iterable[str]) -> None:
    value = _get(cfg, key)
    _require(value in allowed, key, value, "one of " + ", ".join(map(repr, allowed)))


def _at_least(cfg: CfgNode, key: str, minimum: int) -> None:
    value = _get(cfg, key)
    _require(value >= minimum, key, value, f">= {minimum}")


def _get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _check_processes(cfg: CfgNode) -> None:
    _require(cfg.NUM_GPUS >= 0, "NUM_GPUS", cfg.NUM_GPUS, "0 (CPU) or more")
    _at_least(cfg, "NUM_SHARDS", 1)
    _require(0 <= cfg.SHARD_ID < cfg.NUM_SHARDS, "SHARD_ID", cfg.SHARD_ID,
             f"0 <= SHARD_ID < NUM_SHARDS ({cfg.NUM_SHARDS})")
    _at_least(cfg, "LOG_PERIOD", 1)
    for key in ("DIST_TIMEOUT", "DIST_INIT_TIMEOUT"):
        _require(cfg[key] > 0, key, cfg[key], "> 0 seconds")


def _check_checkpoint_type(cfg: CfgNode, split: str) -> None:
    key = f"{split}.CHECKPOINT_TYPE"
    if cfg[split].CHECKPOINT_TYPE == "caffe2":
        path = cfg[split].CHECKPOINT_FILE_PATH
        what = f" ({split}.CHECKPOINT_FILE_PATH '{path}')" if path else ""
        raise ConfigError(f"{key} caffe2 is not supported{what}: convert the caffe2 pickle to a "
                          "PyTorch state dict and use CHECKPOINT_TYPE pytorch.")
    _one_of(cfg, key, ("pytorch",))


def _check_batch(cfg: CfgNode, split: str) -> None:
    batch = cfg[split].BATCH_SIZE
    _require(batch >= 1, f"{split}.BATCH_SIZE", batch, ">= 1")
    if cfg.NUM_GPUS > 0:
        _require(batch % cfg.NUM_GPUS == 0, f"{split}.BATCH_SIZE", batch,
                 f"a multiple of NUM_GPUS ({cfg.NUM_GPUS}): it is the batch of one machine")


def _check_train(cfg: CfgNode) -> None:
    _check_checkpoint_type(cfg, "TRAIN")
    _check_batch(cfg, "TRAIN")
    _at_least(cfg, "TRAIN.EVAL_PERIOD", 1)
    _at_least(cfg, "TRAIN.CHECKPOINT_PERIOD", 1)
    steps = cfg.TRAIN.GRAD_ACCUMULATION_STEPS
    _require(isinstance(steps, int) and steps >= 1, "TRAIN.GRAD_ACCUMULATION_STEPS", steps,
             "an integer >= 1 (micro-batches per optimiser step)")
    multigrid = cfg.MULTIGRID.LONG_CYCLE or cfg.MULTIGRID.SHORT_CYCLE
    _require(steps == 1 or not multigrid, "TRAIN.GRAD_ACCUMULATION_STEPS", steps,
             "1 with multigrid training (its batch size changes from iteration to iteration, so a "
             "fixed number of micro-batches per step would not give a fixed effective batch)")


def _in_range(cfg: CfgNode, key: str, low: float, high: float, closed_high: bool = True) -> None:
    value = _get(cfg, key)
    inside = low <= value <= high if closed_high else low <= value < high
    _require(inside, key, value, f"in [{low:g}, {high:g}{']' if closed_high else ')'}")


def _check_mixup(cfg: CfgNode) -> None:
    for key in ("MIXUP.ALPHA", "MIXUP.CUTMIX_ALPHA"):
        _require(_get(cfg, key) >= 0, key, _get(cfg, key), ">= 0 (0 switches it off)")
    _in_range(cfg, "MIXUP.PROB", 0.0, 1.0)
    _in_range(cfg, "MIXUP.SWITCH_PROB", 0.0, 1.0)
    _in_range(cfg, "MIXUP.LABEL_SMOOTH_VALUE", 0.0, 1.0, closed_high=False)


def _check_aug(cfg: CfgNode) -> None:
    aug = cfg.AUG
    _require(isinstance(aug.NUM_SAMPLE, int) and aug.NUM_SAMPLE >= 1, "AUG.NUM_SAMPLE", aug.NUM_SAMPLE,
             "an integer >= 1 (augmented copies per decoded clip)")
    try:
        RandAugmentPolicy.parse(aug.AA_TYPE)
    except PolicyError as error:
        raise ConfigError(f"invalid value for 'AUG.AA_TYPE': {error}.") from None
    _one_of(cfg, "AUG.INTERPOLATION", _INTERPOLATIONS)
    _require(aug.COLOR_JITTER >= 0, "AUG.COLOR_JITTER", aug.COLOR_JITTER, ">= 0")
    _in_range(cfg, "AUG.RE_PROB", 0.0, 1.0)
    _one_of(cfg, "AUG.RE_MODE", _ERASING_MODES)
    _at_least(cfg, "AUG.RE_COUNT", 1)
    _require(not aug.RE_SPLIT or aug.NUM_SAMPLE > 1, "AUG.RE_SPLIT", aug.RE_SPLIT,
             "False unless AUG.NUM_SAMPLE > 1 (it keeps the first of the copies of a clip unerased)")
    _require(not (aug.ENABLE and cfg.MIXUP.ENABLE and aug.NUM_SAMPLE > 1), "AUG.NUM_SAMPLE", aug.NUM_SAMPLE,
             "1 with MIXUP.ENABLE (mixup would blend copies of one video with each other, and PySlowFast "
             "defines no mixing of repeated samples)")
    if not aug.ENABLE and aug.NUM_SAMPLE > 1:
        logger.warning("AUG.NUM_SAMPLE %d: no effect while AUG.ENABLE is False (one clip per video).",
                       aug.NUM_SAMPLE)


def _check_multigrid(cfg: CfgNode) -> None:
    mg = cfg.MULTIGRID
    _require(mg.EPOCH_FACTOR > 0, "MULTIGRID.EPOCH_FACTOR", mg.EPOCH_FACTOR, "> 0")
    _at_least(cfg, "MULTIGRID.BN_BASE_SIZE", 1)
    _at_least(cfg, "MULTIGRID.EVAL_FREQ", 1)
    if not (mg.LONG_CYCLE or mg.SHORT_CYCLE):
        return
    frames, crop = cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE
    factors = mg.SHORT_CYCLE_FACTORS
    _require(len(factors) == 2 and all(0 < f and round(f * crop) >= 1 for f in factors),
             "MULTIGRID.SHORT_CYCLE_FACTORS", factors,
             f"two crop factors > 0 giving crops of at least 1 px of DATA.TRAIN_CROP_SIZE {crop}")
    for pair in mg.LONG_CYCLE_FACTORS:
        ok = len(pair) == 2 and pair[0] > 0 and pair[1] > 0
        _require(ok and round(frames * pair[0]) >= 1 and round(crop * pair[1]) >= 1,
                 "MULTIGRID.LONG_CYCLE_FACTORS", mg.LONG_CYCLE_FACTORS,
                 f"(frames, crop) factor pairs > 0 giving at least 1 frame of DATA.NUM_FRAMES {frames} and "
                 f"1 px of DATA.TRAIN_CROP_SIZE {crop}; {tuple(pair)} does not")
    _require(len(mg.LONG_CYCLE_FACTORS) >= 1, "MULTIGRID.LONG_CYCLE_FACTORS", mg.LONG_CYCLE_FACTORS,
             "at least one (frames, crop) factor pair")
    if mg.LONG_CYCLE:
        _require(cfg.SOLVER.LR_POLICY == "steps_with_relative_lrs", "MULTIGRID.LONG_CYCLE", True,
                 "False unless SOLVER.LR_POLICY is steps_with_relative_lrs (the long cycle rewrites "
                 "SOLVER.STEPS and LRS, scaling each stage's LR by its batch)")
        _require(len(cfg.SOLVER.STEPS) >= 2, "SOLVER.STEPS", cfg.SOLVER.STEPS,
                 "at least two entries with MULTIGRID.LONG_CYCLE (the cycles repeat within each step)")
        _require(cfg.SOLVER.MAX_EPOCH >= cfg.SOLVER.STEPS[-1], "SOLVER.MAX_EPOCH", cfg.SOLVER.MAX_EPOCH,
                 f">= the last SOLVER.STEPS entry ({cfg.SOLVER.STEPS[-1]}) with MULTIGRID.LONG_CYCLE")
    _require(cfg.BN.NORM_TYPE == "batchnorm", "BN.NORM_TYPE", cfg.BN.NORM_TYPE,
             "'batchnorm' with multigrid training (its BN groups are MULTIGRID.BN_BASE_SIZE clips)")


def _check_ema(cfg: CfgNode) -> None:
    decay = cfg.MODEL.EMA.DECAY
    _require(0.0 < decay < 1.0, "MODEL.EMA.DECAY", decay,
             "in (0, 1): the weight of the old average at each optimiser step, e.g. 0.9998")


def _check_test(cfg: CfgNode) -> None:
    _check_checkpoint_type(cfg, "TEST")
    _check_batch(cfg, "TEST")
    _at_least(cfg, "TEST.NUM_ENSEMBLE_VIEWS", 1)
    _require(cfg.TEST.NUM_SPATIAL_CROPS in (1, 3), "TEST.NUM_SPATIAL_CROPS",
             cfg.TEST.NUM_SPATIAL_CROPS, "1 (centre crop) or 3 (left/centre/right)")
    _one_of(cfg, "TEST.ENSEMBLE_METHOD", _ENSEMBLE)


def _check_data(cfg: CfgNode) -> None:
    data = cfg.DATA
    _one_of(cfg, "DATA.DECODING_BACKEND", _BACKENDS)
    _one_of(cfg, "DATA.SEGMENT_TEST_SAMPLING", _SEGMENT_TEST)
    ext = data.SSV2_VIDEO_EXT
    _require(ext == "" or (ext.startswith(".") and len(ext) > 1), "DATA.SSV2_VIDEO_EXT", ext,
             "'' (extracted frame folders) or a file extension with its dot, e.g. '.webm'")
    _at_least(cfg, "DATA.NUM_FRAMES", 1)
    _at_least(cfg, "DATA.SAMPLING_RATE", 1)
    _require(len(data.MEAN) == 3 and len(data.STD) == 3, "DATA.MEAN/DATA.STD",
             (data.MEAN, data.STD), "three values each")
    _require(all(s > 0 for s in data.STD), "DATA.STD", data.STD, "positive values")
    scales = data.TRAIN_JITTER_SCALES
    _require(len(scales) == 2 and 0 < scales[0] <= scales[1], "DATA.TRAIN_JITTER_SCALES", scales,
             "[min, max] with 0 < min <= max")
    _require(data.TRAIN_CROP_SIZE <= scales[0], "DATA.TRAIN_CROP_SIZE", data.TRAIN_CROP_SIZE,
             f"<= DATA.TRAIN_JITTER_SCALES[0] ({scales[0]})")


def _check_data_loader(cfg: CfgNode) -> None:
    _at_least(cfg, "DATA_LOADER.NUM_WORKERS", 0)
    _at_least(cfg, "DATA_LOADER.NUM_RETRIES", 1)


def _check_model(cfg: CfgNode) -> None:
    _one_of(cfg, "MODEL.ARCH", MODEL_ARCHS)
    _one_of(cfg, "MODEL.HEAD_ACT", ("softmax", "sigmoid"))
    _one_of(cfg, "MODEL.LOSS_FUNC", _LOSSES)
    _at_least(cfg, "MODEL.NUM_CLASSES", 1)
    _require(0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0, "MODEL.DROPOUT_RATE", cfg.MODEL.DROPOUT_RATE,
             "in [0, 1)")
    _require(cfg.RESNET.NUM_GROUPS > 0, "RESNET.NUM_GROUPS", cfg.RESNET.NUM_GROUPS, "> 0")


def _check_bn(cfg: CfgNode) -> None:
    bn = cfg.BN
    if bn.USE_PRECISE_STATS:
        # 0 batches would write all-zero statistics into every BN layer.
        _require(bn.NUM_BATCHES_PRECISE >= 1, "BN.NUM_BATCHES_PRECISE",
                 bn.NUM_BATCHES_PRECISE, ">= 1 (or BN.USE_PRECISE_STATS False)")
    _one_of(cfg, "BN.NORM_TYPE", _NORM_TYPES)
    _at_least(cfg, "BN.NUM_SYNC_DEVICES", 1)
    _require(cfg.MODEL.FROZEN_BN or not bn.FROZEN_AFFINE, "BN.FROZEN_AFFINE", True,
             "False unless MODEL.FROZEN_BN is True (it freezes weight and bias on top of frozen statistics)")
    _require(not (cfg.MODEL.FROZEN_BN and bn.NORM_TYPE == "sync_batchnorm"), "BN.NORM_TYPE",
             bn.NORM_TYPE, "'batchnorm' when MODEL.FROZEN_BN is True (frozen statistics are not synced)")


def _check_solver(cfg: CfgNode) -> None:
    solver = cfg.SOLVER
    _one_of(cfg, "SOLVER.LR_POLICY", _LR_POLICIES)
    _one_of(cfg, "SOLVER.OPTIMIZING_METHOD", _OPTIMIZERS)
    _at_least(cfg, "SOLVER.MAX_EPOCH", 1)
    _require(solver.WARMUP_EPOCHS >= 0, "SOLVER.WARMUP_EPOCHS", solver.WARMUP_EPOCHS, ">= 0")
    if solver.LR_POLICY == "cosine":
        _require(solver.COSINE_END_LR < solver.BASE_LR, "SOLVER.COSINE_END_LR",
                 solver.COSINE_END_LR, f"< SOLVER.BASE_LR ({solver.BASE_LR})")
    else:
        steps, lrs = solver.STEPS, solver.LRS
        _require(len(steps) >= 1 and steps[0] == 0, "SOLVER.STEPS", steps, "a list starting with 0")
        _require(list(steps) == sorted(steps), "SOLVER.STEPS", steps, "increasing epochs")
        _require(len(lrs) >= len(steps), "SOLVER.LRS", lrs,
                 f"at least one relative LR per step ({len(steps)})")
    _require(not (solver.BASE_LR_SCALE_NUM_SHARDS and solver.REFERENCE_BATCH_SIZE > 0),
             "SOLVER.REFERENCE_BATCH_SIZE", solver.REFERENCE_BATCH_SIZE,
             "0 when SOLVER.BASE_LR_SCALE_NUM_SHARDS is True (both would scale by the shards)")


def _check_demo(cfg: CfgNode) -> None:
    demo = cfg.DEMO
    _at_least(cfg, "DEMO.WEBCAM", -1)
    for key in ("DEMO.DISPLAY_WIDTH", "DEMO.DISPLAY_HEIGHT", "DEMO.BUFFER_SIZE"):
        _at_least(cfg, key, 0)
    _require((demo.DISPLAY_WIDTH > 0) == (demo.DISPLAY_HEIGHT > 0), "DEMO.DISPLAY_WIDTH/DISPLAY_HEIGHT",
             (demo.DISPLAY_WIDTH, demo.DISPLAY_HEIGHT), "both set (> 0) or both 0 (the input's size)")
    _require(demo.OUTPUT_FPS == -1 or demo.OUTPUT_FPS > 0, "DEMO.OUTPUT_FPS", demo.OUTPUT_FPS,
             "-1 (the input's frame rate) or > 0")
    _at_least(cfg, "DEMO.CLIP_VIS_SIZE", -1)
    _at_least(cfg, "DEMO.NUM_CLIPS_SKIP", -1)
    _require(demo.NUM_CLIPS_SKIP >= 0 or demo.THREAD_ENABLE, "DEMO.NUM_CLIPS_SKIP", demo.NUM_CLIPS_SKIP,
             ">= 0, or -1 with DEMO.THREAD_ENABLE True (the model runs beside the reading thread)")
    span = cfg.DATA.NUM_FRAMES * cfg.DATA.SAMPLING_RATE
    _require(demo.BUFFER_SIZE < span, "DEMO.BUFFER_SIZE", demo.BUFFER_SIZE,
             f"< DATA.NUM_FRAMES x DATA.SAMPLING_RATE ({span}): two windows overlap by less than one")


def _check_figsize(cfg: CfgNode, key: str) -> None:
    size = _get(cfg, key)
    _require(len(size) == 2 and all(v > 0 for v in size), key, size, "[width, height] in inches, both > 0")


def _check_tensorboard(cfg: CfgNode) -> None:
    """Shapes and counts here; file contents, colormap and layer names are checked before the
    job starts (engine/preflight.py), where the model and the class names are known."""
    tb = cfg.TENSORBOARD
    _check_figsize(cfg, "TENSORBOARD.CONFUSION_MATRIX.FIGSIZE")
    _check_figsize(cfg, "TENSORBOARD.HISTOGRAM.FIGSIZE")
    _at_least(cfg, "TENSORBOARD.HISTOGRAM.TOPK", 1)
    _at_least(cfg, "TENSORBOARD.MODEL_VIS.TOPK_PREDS", 1)
    _require(len(tb.MODEL_VIS.GRAD_CAM.LAYER_LIST) <= 1, "TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST",
             tb.MODEL_VIS.GRAD_CAM.LAYER_LIST, "at most one layer (one per pathway; vov3d models have one "
             "pathway), or [] for the last stage s5")
    switches = [key for key in ("CONFUSION_MATRIX", "HISTOGRAM", "MODEL_VIS", "WRONG_PRED_VIS") if tb[key].ENABLE]
    if switches and not tb.ENABLE:
        logger.warning("TENSORBOARD.%s.ENABLE: no effect while TENSORBOARD.ENABLE is False (nothing is "
                       "written to TensorBoard).", ".ENABLE, TENSORBOARD.".join(switches))


CHECKERS = (_check_processes, _check_train, _check_test, _check_data, _check_data_loader,
            _check_model, _check_ema, _check_mixup, _check_aug, _check_multigrid, _check_bn, _check_solver,
            _check_tensorboard, _check_demo)


def assert_and_infer_cfg(cfg: CfgNode) -> CfgNode:
    """Check the merged config and fill in derived values (in place; returns cfg)."""
    for check in CHECKERS:
        check(cfg)
    _infer_backend(cfg)
    _scale_learning_rates(cfg)
    return cfg


def _infer_backend(cfg: CfgNode) -> None:
    if cfg.NUM_GPUS == 0:
        # launch_job joins CPU processes with gloo whatever this says; the dump in stdout.log
        # and in checkpoints should show what runs.
        cfg.DIST_BACKEND = "gloo"


def _scale_learning_rates(cfg: CfgNode) -> None:
    """Shard scaling (the reference's config order made it inert) or reference-batch scaling
    by the effective batch of one optimiser step (accumulated micro-batches included)."""
    factor = 1.0
    if cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS:
        factor = float(cfg.NUM_SHARDS)
    elif cfg.SOLVER.REFERENCE_BATCH_SIZE > 0:
        effective = cfg.TRAIN.BATCH_SIZE * cfg.NUM_SHARDS * cfg.TRAIN.GRAD_ACCUMULATION_STEPS
        factor = effective / cfg.SOLVER.REFERENCE_BATCH_SIZE
    if factor != 1.0:
        cfg.SOLVER.BASE_LR *= factor
        cfg.SOLVER.WARMUP_START_LR *= factor
        cfg.SOLVER.COSINE_END_LR *= factor
