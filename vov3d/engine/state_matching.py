"""Fitting a checkpoint's state dict to a model: key renaming, 2-D -> 3-D inflation, and the
tensor-by-tensor match (loaded, skipped for shape, missing, unexpected) every load mode reports."""
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)


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


def ignorable(key: str) -> bool:
    # Files written before PyTorch 0.4.1 have no BN step counters; they carry no weights.
    return key.endswith("num_batches_tracked")


def head(items: Sequence[str], n: int = 10) -> str:
    """The first `n` items, comma-separated, with how many more there are."""
    return ", ".join(items[:n]) + (f" ... ({len(items) - n} more)" if len(items) > n else "")


@dataclass
class LoadReport:
    path: str
    loaded: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # key, ckpt, model shape
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"Loaded '{self.path}': {len(self.loaded)} tensors loaded, {len(self.skipped)} skipped "
                f"for shape mismatch, {len(self.missing)} missing, {len(self.unexpected)} unexpected.")

    def problems(self) -> List[str]:
        """One 'key (why)' entry per tensor that does not fit, mismatches first."""
        return ([f"{k} (checkpoint {list(a)}, model {list(b)})" for k, a, b in self.skipped]
                + [f"{k} (missing from the checkpoint)" for k in self.missing]
                + [f"{k} (not in the model)" for k in self.unexpected if not ignorable(k)])

    def log(self) -> None:
        logger.info(self.summary())
        for key, got, want in self.skipped:
            logger.warning("  skipped %s: checkpoint %s, model %s", key, list(got), list(want))
        for key in self.missing:
            logger.warning("  missing (keeps its initialisation): %s", key)
        for key in self.unexpected:
            logger.warning("  unexpected (ignored): %s", key)


def match_state(ckpt: Dict[str, torch.Tensor], model: torch.nn.Module, path: str) -> Tuple[Dict, LoadReport]:
    """The checkpoint tensors that fit the model by name and shape, and a report of the rest."""
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
    report.missing = [k for k in model_state if k not in ckpt and not ignorable(k)]
    return usable, report


def load_tensors(model: torch.nn.Module, usable: Dict[str, torch.Tensor]) -> None:
    """Copy the matched tensors in; the rest of the model keeps its values."""
    model.load_state_dict(usable, strict=False)
