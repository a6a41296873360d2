"""Checkpoint files: names, discovery, atomic writing, pruning and safe reading.

A run keeps its checkpoints in OUTPUT_DIR/checkpoints: checkpoint_epoch_{epoch:05d}.pyth
after a finished (1-based) epoch, and checkpoint_epoch_{epoch:05d}_iter_{iter:06d}.pyth for
a run stopped `iter` iterations into that epoch (a mid-epoch checkpoint, written when the
job is asked to stop). Files are ordered by how far the run had got, not by name; a
mid-epoch file is removed as soon as a later checkpoint is written. Files are read with `torch.load(weights_only=True)` after a CRC check;
full unpickling (which runs code stored in the file) only for trusted files, when the
caller's setting allows it. Everything here works on files and plain dicts, so models,
tools and the engine share it.
"""
import errno
import io
import logging
import os
import pickle
import re
import shutil
import zipfile
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

from vov3d.utils.errors import UserError
from vov3d.utils.files import write_atomic

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^checkpoint_epoch_(\d{5})(?:_iter_(\d{6}))?\.pyth$")
# The temporary name write_atomic gives a checkpoint while it is written.
_TEMP_RE = re.compile(r"^\.checkpoint_epoch_\d{5}(?:_iter_\d{6})?\.pyth\..*\.tmp$")
# Errors that mean the device (or the user's share of it) is full.
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used or written as asked; the message says why and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs full unpickling, which is only allowed for trusted files."""


# ------------------------------------------------------------------------------------
# Names and discovery
# ------------------------------------------------------------------------------------
def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def checkpoint_path(output_dir: str, epoch: int, iteration: Optional[int] = None) -> str:
    """File of the 0-based `epoch` just finished: checkpoint_epoch_{epoch+1:05d}.pyth; with
    `iteration`, of a run stopped after that many iterations of the 0-based `epoch`:
    checkpoint_epoch_{epoch+1:05d}_iter_{iteration:06d}.pyth."""
    name = f"checkpoint_epoch_{epoch + 1:05d}" + ("" if iteration is None else f"_iter_{iteration:06d}")
    return os.path.join(checkpoint_dir(output_dir), name + ".pyth")


def progress(path: str) -> Tuple[int, int]:
    """How far the run of a checkpoint file had got, by its name: (finished epochs,
    iterations into the next one). Orders files from oldest to newest."""
    match = _NAME_RE.match(os.path.basename(path))
    if match is None:
        raise ValueError(f"'{path}' is not named like a checkpoint (checkpoint_epoch_NNNNN[_iter_NNNNNN].pyth).")
    epoch, iteration = int(match.group(1)), match.group(2)
    return (epoch, 0) if iteration is None else (epoch - 1, int(iteration))


def is_mid_epoch(path: str) -> bool:
    """Whether a checkpoint file holds a run stopped in the middle of an epoch."""
    match = _NAME_RE.match(os.path.basename(path))
    return bool(match and match.group(2) is not None)


def _names(output_dir: str, pattern: "re.Pattern") -> List[str]:
    folder = checkpoint_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if pattern.match(n)]


def list_checkpoints(output_dir: str) -> List[str]:
    """Complete checkpoints (epoch and mid-epoch), oldest first (temporary files never
    match the name)."""
    return sorted(_names(output_dir, _NAME_RE), key=lambda p: (progress(p), is_mid_epoch(p)))


def remove_stale_temp_files(output_dir: str) -> List[str]:
    """Delete the temporary files that interrupted saves left in OUTPUT_DIR/checkpoints.

    Only names of the checkpoint temp-file pattern are touched; call this before the run
    saves anything (a save in progress has such a file too).
    """
    removed = _names(output_dir, _TEMP_RE)
    for path in removed:
        size = os.path.getsize(path)
        os.remove(path)
        logger.info("Removed '%s' (%d bytes), the temporary file of an interrupted save.", path, size)
    return removed


# ------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------
def write_checkpoint(path: str, state: Dict) -> int:
    """Write `state` to `path` atomically and synced; returns the file size.

    The state is serialised in memory first, so the size is known and a full device
    surfaces as a plain OSError rather than deep inside torch's zip writer. On failure no
    file (neither `path` nor a temporary one) is left and older checkpoints are untouched.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        write_atomic(path, lambda f: f.write(data), sync=True)
    except OSError as e:
        if e.errno not in _FULL:
            raise
        raise CheckpointError(
            f"{_FULL[e.errno]} while writing checkpoint '{path}' ({len(data):,} bytes; "
            f"{_free_bytes(path)} free there). Nothing was written and the older checkpoints are "
            "intact: free some space (or lower TRAIN.CHECKPOINT_KEEP_LAST) and resume "
            "(TRAIN.AUTO_RESUME True).") from None
    return len(data)


def _free_bytes(path: str) -> str:
    try:
        return f"{shutil.disk_usage(os.path.dirname(path)).free:,} bytes"
    except OSError:
        return "unknown space"


def prune_checkpoints(saved: str, keep_last: int) -> List[str]:
    """After writing `saved`: delete the mid-epoch checkpoints older than it (the run has
    got past them) and, when `saved` ends an epoch and `keep_last` > 0, all but the
    `keep_last` newest epoch checkpoints up to and including it.

    Files of a later position than `saved` are neither deleted nor counted: after a
    fall-back past a broken newer file (or a run with a lowered MAX_EPOCH) they are not
    the run's newest good state, and counting them could delete the file just written.
    """
    key = (progress(saved), is_mid_epoch(saved))
    older = [p for p in list_checkpoints(os.path.dirname(os.path.dirname(saved)))
             if (progress(p), is_mid_epoch(p)) < key]
    removed = [p for p in older if is_mid_epoch(p)]
    epochs = [p for p in older if not is_mid_epoch(p)]
    if keep_last > 0 and not is_mid_epoch(saved):
        removed = [p for p in older if p in removed or p in epochs[:max(len(epochs) - (keep_last - 1), 0)]]
    for old in removed:
        os.remove(old)
        if is_mid_epoch(old):
            logger.info("Removed mid-epoch checkpoint %s: %s is newer.", old, os.path.basename(saved))
        else:
            logger.info("Removed old checkpoint %s (TRAIN.CHECKPOINT_KEEP_LAST %d).", old, keep_last)
    return removed


# ------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------
def read_checkpoint(path: str, *, unsafe: bool = False, unsafe_setting: str = "TRAIN.CHECKPOINT_UNSAFE_LOAD",
                    source: str = "checkpoint") -> Dict:
    """Load a file onto the CPU; refuse anything that needs arbitrary unpickling.

    `source` names where the path came from (e.g. "TEST.CHECKPOINT_FILE_PATH") and
    `unsafe_setting` the config key (or "--flag") that allows trusted files, so every error
    says what to change.
    Missing, empty, truncated or corrupt files raise CheckpointError; only a well-formed
    file that names other Python globals raises UnsafeCheckpointError.
    """
    what = f"{source} '{path}'"
    _check_is_file(path, what)
    _verify_zip(path, what)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as e:
        # weights_only rejects both foreign globals and plain garbage with this type; only
        # the former is a readable file that needs trust.
        name = None if unsafe else _blocked_global(str(e))
        if name is None:
            raise CheckpointError(f"{what} is truncated or corrupt (not a readable PyTorch file: "
                                  f"{_first_line(e)}).") from e
        raise UnsafeCheckpointError(_unsafe_message(what, name, str(e), unsafe_setting)) from None
    except Exception as e:  # noqa: BLE001 - garbage bytes surface as KeyError, ValueError, ...
        raise CheckpointError(f"{what} is truncated or corrupt ({type(e).__name__}: {_first_line(e)}).") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} holds a {type(obj).__name__}, expected a dict "
                              "(a state dict or a {'model_state': ...} checkpoint).")
    return obj


def _check_is_file(path: str, what: str) -> None:
    if os.path.isdir(path):
        bare = path.rstrip(os.sep)
        inside = list_checkpoints(os.path.dirname(bare) if os.path.basename(bare) == "checkpoints" else path)
        hint = f" The newest checkpoint inside is '{inside[-1]}'." if inside else ""
        raise CheckpointError(f"{what} is a directory; expected a checkpoint file.{hint}")
    if not os.path.exists(path):
        raise CheckpointError(f"{what} not found.")
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} is not a regular file.")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{what} is empty (0 bytes): an interrupted copy or save.")


def _blocked_global(text: str) -> Optional[str]:
    """The Python global a weights-only load refused ("GLOBAL posix.system"), if that was why."""
    match = re.search(r"\bGLOBAL ([\w.]+)", text)
    return match.group(1) if match else None


def _unsafe_message(what: str, name: str, text: str, setting: str) -> str:
    blocked = re.search(r"whose module (\S+) is blocked", text)
    warning = (f" PyTorch blocks the module '{blocked.group(1)}' outright: model weights never need it, "
               "so do not trust this file unless you know why it names it." if blocked else "")
    allow = f"rerun with {setting}" if setting.startswith("--") else f"set {setting} True"
    return (f"{what} is readable but unsafe: it names the Python global '{name}', not a tensor or "
            "plain container, so it was not loaded (torch.load weights_only=True; loading it would "
            f"run code stored in the file).{warning} If you trust the file, {allow}.")


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


def newest_readable(output_dir: str, unsafe: bool = False,
                    unsafe_setting: str = "TRAIN.CHECKPOINT_UNSAFE_LOAD") -> Tuple[Optional[str], Optional[Dict]]:
    """The newest checkpoint that loads, with its contents; (None, None) when none does.

    Newer files that are empty, truncated or corrupt are reported by name and left in place
    (nothing in them is usable, and the user may want to inspect them). A file that is
    readable but unsafe stops the search: it is the run's newest state.
    """
    broken = []
    for path in reversed(list_checkpoints(output_dir)):
        try:
            obj = read_checkpoint(path, unsafe=unsafe, unsafe_setting=unsafe_setting)
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


# ------------------------------------------------------------------------------------
# What a checkpoint holds
# ------------------------------------------------------------------------------------
def state_dict_from(obj: Dict, path: str = "<checkpoint>") -> "OrderedDict[str, torch.Tensor]":
    """The tensors inside a PySlowFast / pytorchvideo (`model_state`), mmaction2 / mmengine
    (`state_dict`), `model`-wrapped or plain (VMZ) checkpoint, without a DataParallel
    `module.` prefix."""
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
    """The 0-based epoch a checkpoint finished, or None when it does not say."""
    epoch = obj.get("epoch")
    return int(epoch) if isinstance(epoch, (int, float)) or (
        isinstance(epoch, torch.Tensor) and epoch.numel() == 1) else None
