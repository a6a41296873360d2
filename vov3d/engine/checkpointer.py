"""The Checkpointer: what a run saves each checkpoint epoch (or when it is stopped mid-epoch),
and which file training or testing starts from.

It owns the output directory, the model, the optimizer, the AMP scaler and a table of extra
"checkpointables": any object with state_dict() / load_state_dict(), registered by name,
is saved under that name and restored on resume (e.g. weight EMA, a loader position).
Global rank 0 alone looks at OUTPUT_DIR and decides; its verdict (or error) reaches every
rank, so no rank waits in a collective for a peer that already failed.
"""
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from yacs.config import CfgNode

from vov3d.engine import distributed as du
from vov3d.engine.checkpoint_loading import load_for_finetune, load_for_resume, load_for_test
from vov3d.engine.runtime import unwrap_model
from vov3d.utils import comm
from vov3d.utils.checkpoint_io import (CheckpointError, checkpoint_dir, checkpoint_path, is_mid_epoch,
                                       list_checkpoints, newest_readable, progress, prune_checkpoints,
                                       read_checkpoint, remove_stale_temp_files, write_checkpoint)

logger = logging.getLogger(__name__)

# Entries of a checkpoint file that the Checkpointer writes itself (PySlowFast's names).
RESERVED_NAMES = frozenset({"epoch", "model_state", "optimizer_state", "scaler_state", "cfg", "class_names"})


class NoCheckpointError(CheckpointError):
    """Testing was asked for, but there are no weights to test."""


@dataclass(frozen=True)
class Loaded:
    """What `resume_or_load` loaded.

    `path` is None for random initialisation. `source` says where the path came from:
    "auto-resume", "checkpoint" (the newest in OUTPUT_DIR, for testing) or the setting's name.
    `epoch` is the last finished 0-based epoch of the loaded state as this run counts it:
    training continues after it (-1 = from the start, also for an initialisation file
    whose epoch is reset); testing reports it (None when unknown). `class_names` are the
    ones a tested checkpoint stores (None when it stores none).
    """
    path: Optional[str]
    source: str
    epoch: Optional[int]
    class_names: Optional[Tuple[str, ...]] = None


def prepare_checkpoint_dir(cfg: CfgNode) -> None:
    """Before a training run builds anything: remove temporary files of interrupted saves, and
    refuse to train with TRAIN.AUTO_RESUME False over another run's epoch checkpoints.

    The rule: a run that does not resume needs OUTPUT_DIR/checkpoints without epoch
    checkpoints. Otherwise it would overwrite them one by one, and the test after it would
    score the newest file, which may be the other run's.
    """
    error = None
    if comm.is_root_proc():
        try:
            remove_stale_temp_files(cfg.OUTPUT_DIR)
        except OSError as e:
            logger.warning("Could not remove a temporary checkpoint file in %s: %s", checkpoint_dir(cfg.OUTPUT_DIR), e)
        present = [] if cfg.TRAIN.AUTO_RESUME else list_checkpoints(cfg.OUTPUT_DIR)
        if present:
            error = CheckpointError(
                f"OUTPUT_DIR {cfg.OUTPUT_DIR} already holds {len(present)} epoch checkpoint(s) (newest "
                f"'{present[-1]}') and TRAIN.AUTO_RESUME is False: a new run would overwrite them, and its "
                "test could score one of them. Set TRAIN.AUTO_RESUME True to continue that run, or use a "
                "new OUTPUT_DIR for this one.")
    error = du.broadcast_object(error)
    if error is not None:
        raise error


class Checkpointer:
    def __init__(self, cfg: CfgNode, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                 scaler=None, class_names: Optional[Sequence[str]] = None):
        """`class_names`: the current lists' names in label order (stored on save, compared on load)."""
        self.cfg = cfg
        self.output_dir = cfg.OUTPUT_DIR
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.class_names = class_names
        self.checkpointables: Dict[str, Any] = {}

    def register(self, name: str, obj: Any) -> None:
        """Save `obj.state_dict()` under `name` in every checkpoint, and restore it with
        `obj.load_state_dict(...)` on resume (and on a fine-tune that restores the optimizer).

        A checkpoint without the entry resumes with a warning and `obj` as it is.
        """
        if name in RESERVED_NAMES or name in self.checkpointables:
            raise ValueError(f"checkpointable name {name!r} is taken; reserved: {sorted(RESERVED_NAMES)}, "
                             f"registered: {sorted(self.checkpointables)}.")
        if not all(callable(getattr(obj, m, None)) for m in ("state_dict", "load_state_dict")):
            raise TypeError(f"checkpointable {name!r} ({type(obj).__name__}) needs state_dict() and "
                            "load_state_dict().")
        self.checkpointables[name] = obj

    # -- saving ----------------------------------------------------------------------
    def save(self, epoch: int, iteration: Optional[int] = None) -> Optional[str]:
        """Write the checkpoint of the finished 0-based `epoch` (global rank 0) and prune
        older ones; with `iteration`, a mid-epoch checkpoint of a run stopped after that
        many iterations of `epoch` (its stored "epoch" is then the last finished one,
        epoch - 1, as auto-resume expects; the extra checkpointables say where to go on).

        Called on every rank; a failure (e.g. a full disk) stops every rank with the same error.
        Returns the path on rank 0, None elsewhere.
        """
        path = error = None
        if comm.is_root_proc():
            try:
                path = self._write(epoch, iteration)
            except CheckpointError as e:
                error = e
        error = du.broadcast_object(error)
        if error is not None:
            raise error
        return path

    def _write(self, epoch: int, iteration: Optional[int]) -> str:
        state = {
            "epoch": epoch if iteration is None else epoch - 1,
            "model_state": OrderedDict((k, v.detach().cpu()) for k, v in unwrap_model(self.model).state_dict().items()),
            "optimizer_state": self.optimizer.state_dict(),
            "cfg": self.cfg.dump(),
        }
        if self.scaler is not None and self.scaler.is_enabled():
            state["scaler_state"] = self.scaler.state_dict()
        if self.class_names is not None:
            state["class_names"] = list(self.class_names)
        for name, obj in self.checkpointables.items():
            state[name] = obj.state_dict()
        path = checkpoint_path(self.output_dir, epoch, iteration)
        size = write_checkpoint(path, state)
        where = f"epoch {epoch + 1}" + ("" if iteration is None else f", after iteration {iteration}")
        logger.info("Saved checkpoint %s (%s, %d bytes).", path, where, size)
        prune_checkpoints(path, self.cfg.TRAIN.CHECKPOINT_KEEP_LAST)
        return path

    # -- loading ---------------------------------------------------------------------
    def resume_or_load(self, phase: str) -> Loaded:
        """Load the weights `phase` starts from, on every rank the file rank 0 chose.

        "train": auto-resume (the newest readable checkpoint in OUTPUT_DIR, exactly) >
        TRAIN.CHECKPOINT_FILE_PATH (shape-tolerant initialisation) > random initialisation.
        "test": TEST.CHECKPOINT_FILE_PATH > the newest readable checkpoint > TRAIN.CHECKPOINT_FILE_PATH,
        all strict; random weights only with TEST.ALLOW_RANDOM_INIT.
        """
        if phase == "train":
            return self._load_for_training(*self._decide(self._choose_for_training))
        if phase == "test":
            return self._load_for_testing(*self._decide(self._choose_for_testing))
        raise ValueError(f"phase must be 'train' or 'test', got {phase!r}.")

    @staticmethod
    def _decide(choose: Callable) -> Tuple[Optional[str], str, Optional[Dict]]:
        """(path, source, contents if already read) as chosen on rank 0; contents elsewhere None."""
        path, source, obj, error = None, "", None, None
        if comm.is_root_proc():
            try:
                path, source, obj = choose()
            except CheckpointError as e:
                error = e
        path, source, error = du.broadcast_object((path, source, error))
        if error is not None:
            raise error
        return path, source, obj

    def _choose_for_training(self) -> Tuple[Optional[str], str, Optional[Dict]]:
        cfg = self.cfg
        if cfg.TRAIN.AUTO_RESUME:
            path, obj = newest_readable(self.output_dir, unsafe=cfg.TRAIN.CHECKPOINT_UNSAFE_LOAD,
                                        unsafe_setting="TRAIN.CHECKPOINT_UNSAFE_LOAD")
            if path is not None:
                return path, "auto-resume", obj
            present = list_checkpoints(self.output_dir)
            if present:
                # When every file fails the cause is rarely the files themselves (e.g. written
                # by a newer PyTorch); starting afresh would overwrite them one by one.
                raise CheckpointError(
                    f"auto-resume found {len(present)} checkpoint(s) in {checkpoint_dir(self.output_dir)} but "
                    f"none can be read (newest: '{present[-1]}'; the reasons are logged above). Starting afresh "
                    "would overwrite them: move them away or use a new OUTPUT_DIR to start from scratch.")
        if cfg.TRAIN.CHECKPOINT_FILE_PATH:
            return cfg.TRAIN.CHECKPOINT_FILE_PATH, "TRAIN.CHECKPOINT_FILE_PATH", None
        return None, "", None

    def _load_for_training(self, path: Optional[str], source: str, obj: Optional[Dict]) -> Loaded:
        cfg = self.cfg
        if source == "auto-resume":
            if obj is None:
                obj = read_checkpoint(path, unsafe=cfg.TRAIN.CHECKPOINT_UNSAFE_LOAD)
            # Refuses a checkpoint of another experiment (stored MODEL_NAME / NUM_CLASSES differ)
            # before comparing tensors: the cause is a reused OUTPUT_DIR, not the file.
            epoch = load_for_resume(path, self.model, self.optimizer, self.scaler, obj=obj, cfg=cfg,
                                    class_names=self.class_names, extras=self.checkpointables)
            if cfg.TRAIN.CHECKPOINT_FILE_PATH:
                logger.info("TRAIN.CHECKPOINT_FILE_PATH %s is not used: auto-resume takes precedence.",
                            cfg.TRAIN.CHECKPOINT_FILE_PATH)
            logger.info("Weights source: auto-resume from %s (finished epoch %d).", path, epoch + 1)
        elif path is not None:
            epoch = load_for_finetune(path, self.model, cfg, self.optimizer, self.scaler,
                                      class_names=self.class_names, extras=self.checkpointables)
            logger.info("Weights source: initialised from TRAIN.CHECKPOINT_FILE_PATH %s.", path)
        else:
            epoch = -1
            logger.info("Weights source: random initialisation (no checkpoint to resume, "
                        "TRAIN.CHECKPOINT_FILE_PATH empty).")
        return Loaded(path, source, epoch)

    def _choose_for_testing(self) -> Tuple[Optional[str], str, Optional[Dict]]:
        cfg = self.cfg
        if cfg.TEST.CHECKPOINT_FILE_PATH:
            return cfg.TEST.CHECKPOINT_FILE_PATH, "TEST.CHECKPOINT_FILE_PATH", None
        path, obj = newest_readable(self.output_dir, unsafe=cfg.TEST.CHECKPOINT_UNSAFE_LOAD,
                                    unsafe_setting="TEST.CHECKPOINT_UNSAFE_LOAD")
        if path is not None:
            return path, "checkpoint", obj
        if cfg.TRAIN.CHECKPOINT_FILE_PATH:
            logger.warning("No checkpoint in %s and TEST.CHECKPOINT_FILE_PATH is empty: testing the "
                           "initialisation file TRAIN.CHECKPOINT_FILE_PATH %s.", checkpoint_dir(self.output_dir),
                           cfg.TRAIN.CHECKPOINT_FILE_PATH)
            return cfg.TRAIN.CHECKPOINT_FILE_PATH, "TRAIN.CHECKPOINT_FILE_PATH", None
        return None, "", None

    def _load_for_testing(self, path: Optional[str], source: str, obj: Optional[Dict]) -> Loaded:
        cfg = self.cfg
        if path is None:
            if not cfg.TEST.ALLOW_RANDOM_INIT:
                broken = list_checkpoints(self.output_dir)
                held = (f"holds {len(broken)} checkpoint(s), none readable (see the errors above)" if broken
                        else "holds no checkpoint")
                raise NoCheckpointError(
                    f"no checkpoint to test: TEST.CHECKPOINT_FILE_PATH is empty, "
                    f"{checkpoint_dir(self.output_dir)} {held} and TRAIN.CHECKPOINT_FILE_PATH is "
                    "empty. Set TEST.CHECKPOINT_FILE_PATH, or TEST.ALLOW_RANDOM_INIT True to test random weights.")
            logger.warning("!!! Testing a RANDOMLY INITIALISED model (TEST.ALLOW_RANDOM_INIT True). !!!")
            return Loaded(None, "", None)
        if obj is None:
            obj = read_checkpoint(path, unsafe=cfg.TEST.CHECKPOINT_UNSAFE_LOAD,
                                  unsafe_setting="TEST.CHECKPOINT_UNSAFE_LOAD", source=source)
        epoch = load_for_test(path, self.model, cfg, source=source, obj=obj, class_names=self.class_names)
        logger.info("Testing weights from %s%s.", path, f" (epoch {epoch + 1})" if epoch is not None else "")
        if source == "checkpoint" and is_mid_epoch(path):
            logger.warning("!!! %s is a mid-epoch checkpoint: training was stopped inside epoch %d and has not "
                           "finished. Testing it as the run's newest state. !!!", path, progress(path)[0] + 1)
        stored = obj.get("class_names")
        return Loaded(path, source, epoch, tuple(map(str, stored)) if isinstance(stored, (list, tuple)) else None)
