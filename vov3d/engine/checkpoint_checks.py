"""Does a checkpoint belong with this run? Its stored config, class names and optimizer state
compared with the current ones, each difference said in words a user can act on."""
from typing import Dict, List, Optional, Sequence

import torch
import yaml
from yacs.config import CfgNode

from vov3d.utils.checkpoint_io import CheckpointError

# Keys that name what a run trains: a stored value that differs means another experiment.
IDENTITY_KEYS = (("MODEL", "MODEL_NAME"), ("MODEL", "NUM_CLASSES"))


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
