"""The three ways a checkpoint is loaded into a model:

* `load_for_resume`   (auto-resume): exact model + optimizer (+ AMP scaler and the named extra
  checkpointables); returns the stored epoch. Refuses, loading nothing, when anything differs.
* `load_for_finetune` (TRAIN.CHECKPOINT_FILE_PATH): shape-tolerant; skipped/missing keys are
  listed; the epoch and optimizer are reset for initialisation files unless asked otherwise.
* `load_for_test`     (TEST.CHECKPOINT_FILE_PATH, or the newest training checkpoint): strict;
  the weight average ("ema_state") with MODEL.EMA.ENABLE and MODEL.EMA.EVAL.

Fine-tune and test loads pass the file through the model family's checkpoint filter first.
"""
import logging
from typing import Any, Dict, Optional, Sequence

import torch
from yacs.config import CfgNode

from vov3d.engine.ema import EMA_STATE
from vov3d.engine.runtime import unwrap_model
from vov3d.engine.checkpoint_checks import check_class_names, optimizer_mismatch, stored_cfg_differences
from vov3d.engine.state_matching import (LoadReport, clear_name_patterns, head, ignorable, inflate_2d,
                                         load_tensors, match_state)
from vov3d.models.registry import checkpoint_filter
from vov3d.utils.checkpoint_io import CheckpointError, read_checkpoint, state_dict_from, stored_epoch

logger = logging.getLogger(__name__)

_NEW_DIR = "Use a new OUTPUT_DIR for this run, or move those checkpoints away."


def _read(path: str, cfg: CfgNode, section: str, source: str) -> Dict:
    """Read with the TRAIN or TEST section's settings (whether the file is trusted); config
    validation has already refused CHECKPOINT_TYPE caffe2."""
    return read_checkpoint(path, unsafe=cfg[section].CHECKPOINT_UNSAFE_LOAD,
                           unsafe_setting=f"{section}.CHECKPOINT_UNSAFE_LOAD", source=source)


# ------------------------------------------------------------------------------------
# Resume
# ------------------------------------------------------------------------------------
def load_for_resume(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler=None, obj: Optional[Dict] = None, unsafe: bool = False,
                    class_names: Optional[Sequence[str]] = None, cfg: Optional[CfgNode] = None,
                    extras: Optional[Dict[str, Any]] = None) -> int:
    """Restore a run exactly; returns the 0-based epoch stored in the file.

    Auto-resume is not fine-tuning: the stored config's identity keys (with `cfg`) must
    agree, every tensor must match by name and shape, and the optimizer must fit, or
    nothing is loaded and one error says what differs. Nothing is logged per tensor on a
    refusal: the error lists the first differences. `extras` (name -> object with
    load_state_dict) are restored from the entries of the same name.
    """
    obj = obj if obj is not None else read_checkpoint(path, unsafe=unsafe)
    model = unwrap_model(model)
    usable, report = _resumable_tensors(path, obj, model, cfg)
    # After the identity and shape checks: a class count that changed with the experiment is
    # blamed on the reused OUTPUT_DIR above, not on the label lists.
    check_class_names(obj, class_names, path, "the training lists")
    epoch = stored_epoch(obj)
    if epoch is None or "optimizer_state" not in obj:
        raise CheckpointError(f"cannot resume from '{path}': it has no 'epoch'/'optimizer_state' "
                              "(a weights-only file; use TRAIN.CHECKPOINT_FILE_PATH to initialise from it).")
    # Checked before anything is loaded, so a mismatch leaves model and optimizer untouched.
    problem = optimizer_mismatch(optimizer, obj["optimizer_state"])
    if problem:
        raise CheckpointError(f"cannot resume from '{path}': its optimizer state does not fit this "
                              f"optimizer ({problem}). The parameter groups changed (e.g. MODEL.FROZEN_BN, "
                              "SOLVER.ZERO_WD_1D_PARAM or SOLVER.OPTIMIZING_METHOD differ from the run that "
                              "wrote it). Use a new OUTPUT_DIR, with TRAIN.CHECKPOINT_FILE_PATH "
                              f"'{path}' to initialise from the file.")
    _load_extras(path, obj, extras or {}, warn_missing=True)
    load_tensors(model, usable)
    optimizer.load_state_dict(obj["optimizer_state"])
    report.log()
    if scaler is not None and scaler.is_enabled():
        if "scaler_state" in obj:
            scaler.load_state_dict(obj["scaler_state"])
        else:
            logger.warning("'%s' has no AMP scaler state; the loss scale starts afresh.", path)
    return epoch


def _resumable_tensors(path: str, obj: Dict, model: torch.nn.Module, cfg: Optional[CfgNode]):
    """(usable tensors, report) of a file that holds this experiment's model, else one error."""
    differences = stored_cfg_differences(obj, cfg) if cfg is not None else []
    if differences:
        raise CheckpointError(f"cannot auto-resume from '{path}': OUTPUT_DIR {cfg.OUTPUT_DIR} holds the "
                              f"checkpoints of another experiment ({'; '.join(differences)}). {_NEW_DIR}")
    usable, report = match_state(state_dict_from(obj, path), model, path)
    details = report.problems()
    if details:
        unexpected = [k for k in report.unexpected if not ignorable(k)]
        raise CheckpointError(f"cannot resume from '{path}': it does not match the model "
                              f"({len(report.skipped)} shape mismatches, {len(report.missing)} missing, "
                              f"{len(unexpected)} unexpected tensors: {head(details)}). Was OUTPUT_DIR "
                              f"used by another experiment? {_NEW_DIR}")
    return usable, report


def _load_extras(path: str, obj: Dict, extras: Dict[str, Any], warn_missing: bool) -> None:
    """Restore each extra checkpointable from the file's entry of its name."""
    for name, target in extras.items():
        if name not in obj:
            if warn_missing:
                logger.warning("'%s' has no '%s' state; it starts afresh.", path, name)
            continue
        try:
            target.load_state_dict(obj[name])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"cannot load the '{name}' state of '{path}': {type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------------------
# Fine-tune
# ------------------------------------------------------------------------------------
def load_for_finetune(path: str, model: torch.nn.Module, cfg: CfgNode,
                      optimizer: Optional[torch.optim.Optimizer] = None, scaler=None,
                      source: str = "TRAIN.CHECKPOINT_FILE_PATH",
                      class_names: Optional[Sequence[str]] = None,
                      extras: Optional[Dict[str, Any]] = None) -> int:
    """Initialise from TRAIN.CHECKPOINT_FILE_PATH; returns the epoch to continue after (-1 = start).

    Shape-mismatched tensors (e.g. a new NUM_CLASSES head) keep their fresh initialisation
    and are listed. The epoch, optimizer and extras are restored only when
    TRAIN.CHECKPOINT_EPOCH_RESET is False and every tensor was loaded.
    """
    obj = _read(path, cfg, "TRAIN", source)
    model = unwrap_model(model)
    state = state_dict_from(obj, path)
    if cfg.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN:
        state = clear_name_patterns(state, cfg.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN)
    if cfg.TRAIN.CHECKPOINT_INFLATE:
        state = inflate_2d(state, model.state_dict())
    state = checkpoint_filter(model)(state, model, path)
    usable, report = match_state(state, model, path)
    report.log()
    _refuse_mostly_unloaded(report, model)
    if not report.skipped:
        # The classifier is reused as is: a different label order would silently mislabel.
        try:
            check_class_names(obj, class_names, path, "the training lists")
        except CheckpointError as e:
            logger.warning("!!! %s The classifier is loaded anyway (fine-tuning); ignore this if the "
                           "relabelling is intended. !!!", e)
    load_tensors(model, usable)

    epoch = stored_epoch(obj)
    reset = cfg.TRAIN.CHECKPOINT_EPOCH_RESET
    if epoch is None or reset is None or reset:
        if epoch is not None:
            logger.info("Starting from epoch 1: '%s' stored epoch %d, TRAIN.CHECKPOINT_EPOCH_RESET %s "
                        "resets it for an initialisation file.", path, epoch + 1, reset)
        return -1
    if report.skipped or report.missing:
        logger.warning("Not restoring the optimizer of '%s': %d tensors were not loaded.", path,
                       len(report.skipped) + len(report.missing))
    elif optimizer is not None and "optimizer_state" in obj:
        _restore_training_state(path, obj, optimizer, scaler, extras or {})
    if epoch + 1 >= cfg.SOLVER.MAX_EPOCH:
        logger.error("!!! '%s' stored epoch %d >= SOLVER.MAX_EPOCH %d: no training epoch will run. "
                     "Set TRAIN.CHECKPOINT_EPOCH_RESET True (or leave it None) to fine-tune from it. !!!",
                     path, epoch + 1, cfg.SOLVER.MAX_EPOCH)
    return epoch


def _restore_training_state(path: str, obj: Dict, optimizer, scaler, extras: Dict[str, Any]) -> None:
    problem = optimizer_mismatch(optimizer, obj["optimizer_state"])
    if problem:
        logger.warning("Not restoring the optimizer of '%s': its state does not fit this optimizer (%s).",
                       path, problem)
        return
    _load_extras(path, obj, extras, warn_missing=False)
    optimizer.load_state_dict(obj["optimizer_state"])
    if scaler is not None and scaler.is_enabled() and "scaler_state" in obj:
        scaler.load_state_dict(obj["scaler_state"])


def _refuse_mostly_unloaded(report: LoadReport, model: torch.nn.Module) -> None:
    """A fine-tune may re-initialise the head; losing most of the backbone is a wrong file."""
    backbone = [k for k in model.state_dict() if not k.startswith("head.") and not ignorable(k)]
    lost = {k for k, _, _ in report.skipped} | set(report.missing)
    lost_backbone = [k for k in backbone if k in lost]
    if not report.loaded or (backbone and len(lost_backbone) * 2 > len(backbone)):
        raise CheckpointError(
            f"'{report.path}' does not fit this model: {len(lost_backbone)} of {len(backbone)} backbone "
            f"tensors would not be loaded (first: {lost_backbone[:5]}). Check MODEL.MODEL_NAME and the "
            "architecture keys against the config the checkpoint was trained with.")


# ------------------------------------------------------------------------------------
# Test
# ------------------------------------------------------------------------------------
def load_for_test(path: str, model: torch.nn.Module, cfg: CfgNode, source: str = "checkpoint",
                  obj: Optional[Dict] = None, class_names: Optional[Sequence[str]] = None) -> Optional[int]:
    """Strict: every model tensor must come from the file with the right shape, and the
    class names it was trained with (if stored) must be the test lists' (if known).

    `source` names the setting the path came from, for the error messages; `obj` is the
    already-read file, if any. Returns the stored epoch (None if the file has none).
    """
    if obj is None:
        obj = _read(path, cfg, "TEST", source)
    check_class_names(obj, class_names, path, "the test lists")
    model = unwrap_model(model)
    state = checkpoint_filter(model)(_weights_to_test(obj, cfg, path, source), model, path)
    usable, report = match_state(state, model, path)
    details = report.problems()
    if details:
        # A file with tensors this model lacks was trained with another architecture (e.g. a
        # deeper X3D): its shared tensors would load and the test would score a different network.
        raise CheckpointError(f"testing needs exactly this model's weights, but {len(details)} tensors of "
                              f"'{path}' do not fit: {head(details)}. Check MODEL.NUM_CLASSES and the "
                              "architecture keys against the training config.")
    report.log()
    load_tensors(model, usable)
    return stored_epoch(obj)


def _weights_to_test(obj: Dict, cfg: CfgNode, path: str, source: str):
    """The file's averaged weights with MODEL.EMA.ENABLE and MODEL.EMA.EVAL, else its weights."""
    if not (cfg.MODEL.EMA.ENABLE and cfg.MODEL.EMA.EVAL):
        return state_dict_from(obj, path)
    if not isinstance(obj.get(EMA_STATE), dict):
        raise CheckpointError(f"MODEL.EMA.ENABLE and MODEL.EMA.EVAL ask to test averaged weights, but '{path}' "
                              f"({source}) holds no '{EMA_STATE}' (it was trained without MODEL.EMA.ENABLE, "
                              "or is a weights-only file). Set MODEL.EMA.EVAL False to test its weights.")
    logger.info("Testing the averaged weights ('%s') of '%s'.", EMA_STATE, path)
    return state_dict_from(obj[EMA_STATE], path)
