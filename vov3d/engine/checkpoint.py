"""Checkpoint files: atomic saving, discovery, safe reading and the three ways of loading.

* `resume`   (auto-resume): exact model + optimizer (+ AMP scaler), returns the epoch.
* `finetune` (TRAIN.CHECKPOINT_FILE_PATH): shape-tolerant; skipped/missing keys are listed;
  the epoch and optimizer are reset for initialisation files unless asked otherwise.
* `test`     (TEST.CHECKPOINT_FILE_PATH, or the newest training checkpoint): strict.

Files are read with `torch.load(weights_only=True)`; full unpickling (arbitrary code) is
only allowed with TRAIN/TEST.CHECKPOINT_UNSAFE_LOAD for trusted files.
"""
import logging
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import yaml
from yacs.config import CfgNode

from vov3d.utils.errors import UserError
from vov3d.utils.files import write_atomic

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^checkpoint_epoch_(\d{5})\.pyth$")
# Temporary files of `save_checkpoint` (a job killed mid-save leaves one behind).
_TEMP_RE = re.compile(r"^\.checkpoint_epoch_\d{5}\.pyth\..*\.tmp$")
# Variant overrides printed when a first-release VoV3D-M file meets a current model or back.
VOV3D_M_V1_OVERRIDES = "VOV3D.STAGE_DEPTHS [1,1,2,2] VOV3D.NUM_CONV 4 VOV3D.INNER_CH 48"
VOV3D_M_V2_OVERRIDES = "VOV3D.DEPTH 31 VOV3D.STAGE_DEPTHS [] VOV3D.NUM_CONV 5 VOV3D.INNER_CH 40"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used as asked; the message says why and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs full unpickling, which is only allowed for trusted files."""


# ------------------------------------------------------------------------------------
# Names and discovery
# ------------------------------------------------------------------------------------
def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def checkpoint_path(output_dir: str, epoch: int) -> str:
    """File of the 0-based `epoch` just finished: checkpoint_epoch_{epoch+1:05d}.pyth."""
    return os.path.join(checkpoint_dir(output_dir), f"checkpoint_epoch_{epoch + 1:05d}.pyth")


def list_checkpoints(output_dir: str) -> List[str]:
    """Complete epoch checkpoints, oldest first (temporary files never match the name)."""
    folder = checkpoint_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    names = sorted(n for n in os.listdir(folder) if _NAME_RE.match(n))
    return [os.path.join(folder, n) for n in names]


def leftover_temp_files(output_dir: str) -> List[str]:
    """Temporary files of saves that were interrupted (never loaded, never deleted here)."""
    folder = checkpoint_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if _TEMP_RE.match(n)]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel (checkpoints never store `module.`)."""
    return model.module if hasattr(model, "module") and isinstance(
        model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else model


# ------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------
def save_checkpoint(output_dir: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    epoch: int, cfg: CfgNode, scaler=None, keep_last: int = 0,
                    class_names: Optional[Sequence[str]] = None) -> str:
    """Write the checkpoint of the 0-based `epoch` atomically; call on global rank 0 only.

    The file appears under its final name only once completely written and synced, so a
    job killed during the save leaves the previous checkpoint as the newest one.
    """
    path = checkpoint_path(output_dir, epoch)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    state = {
        "epoch": epoch,
        "model_state": OrderedDict((k, v.detach().cpu()) for k, v in unwrap_model(model).state_dict().items()),
        "optimizer_state": optimizer.state_dict(),
        "cfg": cfg.dump(),
    }
    if scaler is not None and scaler.is_enabled():
        state["scaler_state"] = scaler.state_dict()
    if class_names is not None:
        state["class_names"] = list(class_names)
    write_atomic(path, lambda f: torch.save(state, f), sync=True)
    logger.info("Saved checkpoint %s (epoch %d).", path, epoch + 1)
    if keep_last > 0:
        prune_checkpoints(path, keep_last)
    return path


def prune_checkpoints(saved: str, keep_last: int) -> List[str]:
    """Delete all but the `keep_last` newest checkpoints up to and including `saved`.

    Files named after a later epoch than `saved` are neither deleted nor counted: after a
    fall-back past a broken newer file (or a run with a lowered MAX_EPOCH) they are not
    the run's newest good state, and counting them could delete the file just written.
    """
    older = [p for p in list_checkpoints(os.path.dirname(os.path.dirname(saved)))
             if os.path.basename(p) < os.path.basename(saved)]
    removed = older[:max(len(older) - (keep_last - 1), 0)]
    for old in removed:
        os.remove(old)
        logger.info("Removed old checkpoint %s (TRAIN.CHECKPOINT_KEEP_LAST %d).", old, keep_last)
    return removed


# ------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------
def read_checkpoint(path: str, *, unsafe: bool = False, unsafe_flag: str = "TRAIN.CHECKPOINT_UNSAFE_LOAD",
                    checkpoint_type: str = "pytorch", source: str = "checkpoint") -> Dict:
    """Load a file onto the CPU; refuse anything that needs arbitrary unpickling.

    `source` names where the path came from (e.g. "TEST.CHECKPOINT_FILE_PATH") so every
    error says which setting to fix. Missing, empty, truncated or corrupt files raise
    CheckpointError; only a well-formed file holding non-tensor objects raises
    UnsafeCheckpointError.
    """
    what = f"{source} '{path}'"
    type_key = unsafe_flag.split(".")[0] + ".CHECKPOINT_TYPE"
    if checkpoint_type == "caffe2":
        raise CheckpointError(f"{type_key} caffe2 is not supported ({what}): convert the caffe2 "
                              "pickle to a PyTorch state dict and use CHECKPOINT_TYPE pytorch.")
    if os.path.isdir(path):
        inside = list_checkpoints(os.path.dirname(path.rstrip(os.sep))) if os.path.basename(
            path.rstrip(os.sep)) == "checkpoints" else list_checkpoints(path)
        hint = f" The newest checkpoint inside is '{inside[-1]}'." if inside else ""
        raise CheckpointError(f"{what} is a directory; expected a checkpoint file.{hint}")
    if not os.path.exists(path):
        raise CheckpointError(f"{what} not found.")
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} is not a regular file.")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{what} is empty (0 bytes): an interrupted copy or save.")
    _verify_zip(path, what)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as e:
        # weights_only rejects both foreign classes and plain garbage with this type; only
        # the former ("Unsupported global") is a readable file that needs trust.
        if unsafe or "Unsupported global" not in str(e):
            raise CheckpointError(f"{what} is truncated or corrupt (not a readable PyTorch file: "
                                  f"{_first_line(e)}).") from e
        raise UnsafeCheckpointError(
            f"{what} contains objects other than tensors and plain containers, so it was "
            f"not loaded (torch.load weights_only=True; loading it would run code stored in the file). "
            f"If you trust the file, set {unsafe_flag} True. Details: {_first_line(e)}") from e
    except Exception as e:  # noqa: BLE001 - garbage bytes surface as KeyError, ValueError, ...
        raise CheckpointError(f"{what} is truncated or corrupt ({type(e).__name__}: {_first_line(e)}).") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} holds a {type(obj).__name__}, expected a dict "
                              "(a state dict or a {'model_state': ...} checkpoint).")
    return obj


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e)
    # torch's weights-only errors open with a long generic paragraph; the cause follows this.
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = (lines[0] if lines else "").split(" This is an internal miniz error")[0]
    return line[:limit]


def _verify_zip(path: str, what: str) -> None:
    """CRC-check a zip-format file: torch.load does not, and loads damaged tensors silently."""
    try:
        if not zipfile.is_zipfile(path):
            return  # legacy (pre-1.6) format or garbage: torch.load decides
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{what} is truncated or corrupt ({type(e).__name__}: {_first_line(e)}).") from e
    if bad is not None:
        raise CheckpointError(f"{what} is corrupt: its entry '{bad}' fails the CRC check.")


def model_state_from(obj: Dict, path: str = "<checkpoint>") -> "OrderedDict[str, torch.Tensor]":
    """The state dict inside a PySlowFast (`model_state`), `state_dict`/`model`-wrapped or plain
    file, without a DataParallel `module.` prefix."""
    for key in ("model_state", "state_dict", "model"):
        if key in obj and isinstance(obj[key], dict):
            state = obj[key]
            break
    else:
        state = obj
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad or not state:
        raise CheckpointError(f"'{path}' has no state dict: expected tensors under 'model_state', "
                              f"'state_dict' or at the top level; found keys {sorted(obj)[:8]}.")
    if all(k.startswith("module.") for k in state):
        state = OrderedDict((k[len("module."):], v) for k, v in state.items())
    return OrderedDict(state)


def stored_epoch(obj: Dict) -> Optional[int]:
    epoch = obj.get("epoch")
    return int(epoch) if isinstance(epoch, (int, float)) or (
        isinstance(epoch, torch.Tensor) and epoch.numel() == 1) else None


def clear_name_patterns(state: Dict[str, torch.Tensor], patterns: Sequence[str]) -> "OrderedDict":
    """Remove every occurrence of each substring from the keys (VoV3D semantics), logging renames."""
    out = OrderedDict()
    for key, value in state.items():
        new = key
        for pattern in patterns:
            new = new.replace(pattern, "")
        if new != key:
            logger.info("Renaming checkpoint key %s -> %s (CHECKPOINT_CLEAR_NAME_PATTERN).", key, new)
        out[new] = value
    return out


def inflate_2d(state: Dict[str, torch.Tensor], model_state: Dict[str, torch.Tensor]) -> "OrderedDict":
    """2-D conv weights [O, I, h, w] -> [O, I, t, h, w], repeated over time and divided by t."""
    out = OrderedDict(state)
    for key, value in state.items():
        target = model_state.get(key)
        if target is None or value.ndim != 4 or target.ndim != 5:
            continue
        if tuple(value.shape) == (target.shape[0], target.shape[1], target.shape[3], target.shape[4]):
            t = target.shape[2]
            out[key] = value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
            logger.info("Inflated %s %s -> %s.", key, tuple(value.shape), tuple(out[key].shape))
    return out


# ------------------------------------------------------------------------------------
# VoV3D release detection
# ------------------------------------------------------------------------------------
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
    width, unit4, s3 = signature
    if (width, unit4, s3) == (24, False, 1):
        return "first-release VoV3D-M (stem 24, 4 units per T-OSA, 1 s3 block)"
    if (width, unit4, s3) == (20, True, 2):
        return "current VoV3D-M (stem 20, 5 units per T-OSA, 2 s3 blocks)"
    return f"VoV3D (stem {width}, {5 if unit4 else 4}+ units per T-OSA, {s3} s3 blocks)"


def check_vov3d_variant(ckpt_state: Dict, model_state: Dict, path: str) -> None:
    """Refuse a first-release VoV3D-M file in a current model (or the reverse), naming the fix."""
    ckpt_sig, model_sig = vov3d_signature(ckpt_state), vov3d_signature(model_state)
    if ckpt_sig is None or model_sig is None or ckpt_sig == model_sig:
        return
    first, current = (24, False, 1), (20, True, 2)
    if ckpt_sig == first:
        fix = f"build the first-release model with the overrides: {VOV3D_M_V1_OVERRIDES}"
    elif ckpt_sig == current:
        fix = f"build the current VoV3D-M: {VOV3D_M_V2_OVERRIDES}"
    else:
        fix = "use the config the checkpoint was trained with"
    raise CheckpointError(f"'{path}' is a {describe_vov3d(ckpt_sig)} checkpoint but the model is a "
                          f"{describe_vov3d(model_sig)}; loading it would skip most of the backbone. "
                          f"To use it, {fix}.")


# ------------------------------------------------------------------------------------
# Matching a state dict to a model
# ------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    path: str
    loaded: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # key, ckpt, model shape
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    epoch: Optional[int] = None

    def summary(self) -> str:
        return (f"Loaded '{self.path}': {len(self.loaded)} tensors loaded, {len(self.skipped)} skipped "
                f"for shape mismatch, {len(self.missing)} missing, {len(self.unexpected)} unexpected.")

    def problems(self, unexpected: bool = True) -> List[str]:
        """One 'key (why)' entry per tensor that does not fit, mismatches first."""
        return ([f"{k} (checkpoint {list(a)}, model {list(b)})" for k, a, b in self.skipped]
                + [f"{k} (missing from the checkpoint)" for k in self.missing]
                + ([f"{k} (not in the model)" for k in self.unexpected if not _ignorable(k)]
                   if unexpected else []))

    def log(self) -> None:
        logger.info(self.summary())
        for key, got, want in self.skipped:
            logger.warning("  skipped %s: checkpoint %s, model %s", key, list(got), list(want))
        for key in self.missing:
            logger.warning("  missing (keeps its initialisation): %s", key)
        for key in self.unexpected:
            logger.warning("  unexpected (ignored): %s", key)


def _ignorable(key: str) -> bool:
    # Files written before PyTorch 0.4.1 have no BN step counters; they carry no weights.
    return key.endswith("num_batches_tracked")


def match_state(ckpt: Dict[str, torch.Tensor], model: torch.nn.Module, path: str) -> Tuple[Dict, LoadReport]:
    model_state = model.state_dict()
    report = LoadReport(path)
    usable = OrderedDict()
    for key, value in ckpt.items():
        if key not in model_state:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[key].shape):
            report.skipped.append((key, tuple(value.shape), tuple(model_state[key].shape)))
        else:
            usable[key] = value
            report.loaded.append(key)
    report.missing = [k for k in model_state if k not in ckpt and not _ignorable(k)]
    return usable, report


def _load_tensors(model: torch.nn.Module, usable: Dict[str, torch.Tensor]) -> None:
    model.load_state_dict(usable, strict=False)


# ------------------------------------------------------------------------------------
# The three loading modes
# ------------------------------------------------------------------------------------
def load_for_resume(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler=None, obj: Optional[Dict] = None, unsafe: bool = False,
                    class_names: Optional[Sequence[str]] = None, cfg: Optional[CfgNode] = None) -> int:
    """Restore a run exactly; returns the 0-based epoch stored in the file.

    Auto-resume is not fine-tuning: the stored config's identity keys (with `cfg`) must
    agree, every tensor must match by name and shape, and the optimizer must fit, or
    nothing is loaded and one error says what differs. Nothing is logged per tensor on a
    refusal: the error lists the first differences.
    """
    obj = obj if obj is not None else read_checkpoint(path, unsafe=unsafe)
    fix = ("Use a new OUTPUT_DIR for this run, or set TRAIN.AUTO_RESUME False to start it from scratch "
           "here (its checkpoints then replace these).")
    differences = stored_cfg_differences(obj, cfg) if cfg is not None else []
    if differences:
        raise CheckpointError(f"cannot auto-resume from '{path}': OUTPUT_DIR {cfg.OUTPUT_DIR} holds the "
                              f"checkpoints of another experiment ({'; '.join(differences)}). {fix}")
    model = unwrap_model(model)
    usable, report = match_state(model_state_from(obj, path), model, path)
    details = report.problems()
    if details:
        unexpected = [k for k in report.unexpected if not _ignorable(k)]
        raise CheckpointError(f"cannot resume from '{path}': it does not match the model "
                              f"({len(report.skipped)} shape mismatches, {len(report.missing)} missing, "
                              f"{len(unexpected)} unexpected tensors: {_head(details)}). Was OUTPUT_DIR "
                              f"used by another experiment? {fix}")
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
                              "wrote it). Use a new OUTPUT_DIR, or initialise from the file with "
                              "TRAIN.AUTO_RESUME False TRAIN.CHECKPOINT_FILE_PATH.")
    _load_tensors(model, usable)
    optimizer.load_state_dict(obj["optimizer_state"])
    report.log()
    if scaler is not None and scaler.is_enabled():
        if "scaler_state" in obj:
            scaler.load_state_dict(obj["scaler_state"])
        else:
            logger.warning("'%s' has no AMP scaler state; the loss scale starts afresh.", path)
    return epoch


def _head(items: Sequence[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items) - n} more)" if len(items) > n else "")


def optimizer_mismatch(optimizer: torch.optim.Optimizer, state) -> Optional[str]:
    """Why `state` (an optimizer state dict) cannot be loaded into `optimizer`, or None.

    torch checks group and parameter counts; per-parameter buffers with another shape would
    only fail at the first step, so those are compared here too.
    """
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not isinstance(groups, list) or not isinstance(state.get("state"), dict):
        return "it is not an optimizer state dict"
    mine = optimizer.param_groups
    if len(groups) != len(mine):
        return f"{len(groups)} parameter groups in the file, {len(mine)} in the optimizer"
    params = {}
    for i, (saved, group) in enumerate(zip(groups, mine)):
        name = group.get("name", str(i))
        if len(saved.get("params", ())) != len(group["params"]):
            return (f"parameter group {name!r} holds {len(saved.get('params', ()))} tensors in the file, "
                    f"{len(group['params'])} in the optimizer")
        # SGD groups carry "momentum", Adam(W) groups "betas": another method's state would
        # load without complaint and fail at the first step.
        for key in ("momentum", "betas"):
            if (key in saved) != (key in group):
                return (f"parameter group {name!r} was written by another optimizer (its '{key}' setting is "
                        f"{'present' if key in saved else 'absent'} in the file)")
        params.update(zip(saved["params"], group["params"]))
    for index, entry in state["state"].items():
        param = params.get(index)
        if param is None:
            return f"state for parameter {index}, which no group holds"
        for key, value in (entry.items() if isinstance(entry, dict) else ()):
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape != param.shape:
                return f"'{key}' of parameter {index} has shape {list(value.shape)}, the parameter {list(param.shape)}"
    return None


def load_for_finetune(path: str, model: torch.nn.Module, cfg: CfgNode,
                      optimizer: Optional[torch.optim.Optimizer] = None, scaler=None,
                      source: str = "TRAIN.CHECKPOINT_FILE_PATH",
                      class_names: Optional[Sequence[str]] = None) -> int:
    """Initialise from TRAIN.CHECKPOINT_FILE_PATH; returns the epoch to continue after (-1 = start).

    Shape-mismatched tensors (e.g. a new NUM_CLASSES head) keep their fresh initialisation
    and are listed. The epoch and optimizer are restored only when
    TRAIN.CHECKPOINT_EPOCH_RESET is False and every tensor was loaded.
    """
    obj = read_checkpoint(path, unsafe=cfg.TRAIN.CHECKPOINT_UNSAFE_LOAD, unsafe_flag="TRAIN.CHECKPOINT_UNSAFE_LOAD",
                          checkpoint_type=cfg.TRAIN.CHECKPOINT_TYPE, source=source)
    model = unwrap_model(model)
    state = model_state_from(obj, path)
    if cfg.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN:
        state = clear_name_patterns(state, cfg.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN)
    if cfg.TRAIN.CHECKPOINT_INFLATE:
        state = inflate_2d(state, model.state_dict())
    check_vov3d_variant(state, model.state_dict(), path)
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
    _load_tensors(model, usable)

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
        problem = optimizer_mismatch(optimizer, obj["optimizer_state"])
        if problem:
            logger.warning("Not restoring the optimizer of '%s': its state does not fit this optimizer (%s).",
                           path, problem)
        else:
            optimizer.load_state_dict(obj["optimizer_state"])
            if scaler is not None and scaler.is_enabled() and "scaler_state" in obj:
                scaler.load_state_dict(obj["scaler_state"])
    if epoch + 1 >= cfg.SOLVER.MAX_EPOCH:
        logger.error("!!! '%s' stored epoch %d >= SOLVER.MAX_EPOCH %d: no training epoch will run. "
                     "Set TRAIN.CHECKPOINT_EPOCH_RESET True (or leave it None) to fine-tune from it. !!!",
                     path, epoch + 1, cfg.SOLVER.MAX_EPOCH)
    return epoch


def _refuse_mostly_unloaded(report: LoadReport, model: torch.nn.Module) -> None:
    """A fine-tune may re-initialise the head; losing most of the backbone is a wrong file."""
    backbone = [k for k in model.state_dict() if not k.startswith("head.") and not _ignorable(k)]
    lost = {k for k, _, _ in report.skipped} | set(report.missing)
    lost_backbone = [k for k in backbone if k in lost]
    if not report.loaded or (backbone and len(lost_backbone) * 2 > len(backbone)):
        raise CheckpointError(
            f"'{report.path}' does not fit this model: {len(lost_backbone)} of {len(backbone)} backbone "
            f"tensors would not be loaded (first: {lost_backbone[:5]}). Check MODEL.MODEL_NAME and the "
            "architecture keys against the config the checkpoint was trained with.")


def load_for_test(path: str, model: torch.nn.Module, cfg: CfgNode, source: str = "checkpoint",
                  obj: Optional[Dict] = None, class_names: Optional[Sequence[str]] = None) -> Optional[int]:
    """Strict: every model tensor must come from the file with the right shape, and the
    class names it was trained with (if stored) must be the test lists' (if known).

    `source` names the setting the path came from, for the error messages; `obj` is the
    already-read file, if any.
    """
    if obj is None:
        obj = read_checkpoint(path, unsafe=cfg.TEST.CHECKPOINT_UNSAFE_LOAD, unsafe_flag="TEST.CHECKPOINT_UNSAFE_LOAD",
                              checkpoint_type=cfg.TEST.CHECKPOINT_TYPE, source=source)
    check_class_names(obj, class_names, path, "the test lists")
    model = unwrap_model(model)
    state = model_state_from(obj, path)
    check_vov3d_variant(state, model.state_dict(), path)
    usable, report = match_state(state, model, path)
    details = report.problems(unexpected=False)
    if details:
        raise CheckpointError(f"testing needs every weight, but '{path}' does not provide "
                              f"{len(details)}: {_head(details)}. Check MODEL.NUM_CLASSES and the "
                              "architecture keys against the training config.")
    report.log()
    _load_tensors(model, usable)
    return stored_epoch(obj)


# ------------------------------------------------------------------------------------
# Stored config and class-name comparison
# ------------------------------------------------------------------------------------
def check_class_names(obj: Dict, class_names: Optional[Sequence[str]], path: str, lists: str) -> None:
    """Refuse a checkpoint whose stored class names (label order) differ from the dataset's;
    silent when either side does not know its names."""
    stored = obj.get("class_names")
    if stored is None or class_names is None or list(stored) == list(class_names):
        return
    if len(stored) != len(class_names):
        difference = f"{len(stored)} classes there, {len(class_names)} in {lists}"
    else:
        label = next(i for i, (a, b) in enumerate(zip(stored, class_names)) if a != b)
        difference = f"label {label} is {stored[label]!r} there but {class_names[label]!r} in {lists}"
    raise CheckpointError(f"'{path}' was trained with other class names or another label order: "
                          f"{difference}. Use lists numbered like the training run (its DATA.CLASS_NAMES_PATH "
                          "or label files).")


# Keys that name what a run trains: a stored value that differs means another experiment.
IDENTITY_KEYS = (("MODEL", "MODEL_NAME"), ("MODEL", "NUM_CLASSES"))


def stored_cfg_differences(obj: Dict, cfg: CfgNode, keys=IDENTITY_KEYS) -> List[str]:
    """'KEY: stored X, current Y' for the identity keys that differ from the stored config
    (model names compare case-insensitively, as the registry looks them up)."""
    text = obj.get("cfg")
    if not isinstance(text, str):
        return []
    try:
        stored = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return []
    if not isinstance(stored, dict):
        return []
    out = []
    for group, key in keys:
        section = stored.get(group)
        old, current = (section.get(key) if isinstance(section, dict) else None), cfg[group][key]
        same = (old.lower() == current.lower() if isinstance(old, str) and isinstance(current, str)
                else old == current)
        if old is not None and not same:
            out.append(f"{group}.{key}: stored {old!r}, current {current!r}")
    return out


# ------------------------------------------------------------------------------------
# Choosing what to load
# ------------------------------------------------------------------------------------
def newest_readable(output_dir: str, unsafe: bool = False) -> Tuple[Optional[str], Optional[Dict]]:
    """The newest checkpoint that loads, with its contents; (None, None) when none does.

    Newer files that are empty, truncated or corrupt are reported by name and left in place
    (nothing in them is usable, and the user may want to inspect them); temporary files of
    interrupted saves are never candidates.
    """
    for tmp in leftover_temp_files(output_dir):
        logger.warning("Ignoring '%s': the temporary file of an interrupted save (never loaded; "
                       "delete it to free the space).", tmp)
    broken = []
    for path in reversed(list_checkpoints(output_dir)):
        try:
            obj = read_checkpoint(path, unsafe=unsafe)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as e:
            logger.error("Skipping unusable checkpoint: %s It is left in place; trying the previous one.", e)
            broken.append(path)
            continue
        if broken:
            logger.warning("Using '%s', the newest readable checkpoint; %d newer file(s) could not be read: "
                           "%s.", path, len(broken), ", ".join(broken))
        return path, obj
    if broken:
        logger.error("None of the %d checkpoints in %s can be read.", len(broken), checkpoint_dir(output_dir))
    return None, None
