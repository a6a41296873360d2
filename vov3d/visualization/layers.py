"""Layers named in TENSORBOARD.MODEL_VIS: `LAYER_LIST` entries are a module path, in
PySlowFast's form `s5/pathway0_res2` or with dots, optionally followed by a numpy-like index
of the tensor to show (`s2/pathway0_res0 0,1;2`: items 0 and 1 of the first dimension after
the batch, item 2 of the next). Every name is checked against the model built on the meta
device before any work."""
import difflib
from typing import Dict, List, Sequence, Tuple

import torch

from vov3d.config.errors import ConfigError

DEFAULT_GRAD_CAM_LAYER = "s5"


def module_path(name: str) -> str:
    return name.strip().replace("/", ".")


def find_layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    modules = dict(model.named_modules())
    path = module_path(name)
    if not path or path not in modules:
        raise ConfigError(unknown_layer_message(name, list(modules), type(model).__name__))
    return modules[path]


def unknown_layer_message(name: str, paths: Sequence[str], model_name: str, key: str = "layer") -> str:
    shown = [p.replace(".", "/") for p in paths if p]
    close = difflib.get_close_matches(module_path(name).replace(".", "/"), shown, n=5, cutoff=0.5)
    top = [p for p in shown if "/" not in p]
    return (f"{key} entry {name!r} names no module of {model_name}; nearby valid names: "
            f"{', '.join(close or top[:8])} (the top-level modules are {', '.join(top)}).")


def parse_layer_entry(entry: str, key: str) -> Tuple[str, Tuple[List[int], ...]]:
    """'name' or 'name 1,2;3' -> (module path, index per dimension after the batch)."""
    parts = entry.split()
    if not parts or len(parts) > 2:
        raise ConfigError(f"{key} entry {entry!r}: expected '<layer>' or '<layer> <index>', e.g. "
                          "'s5/pathway0_res0' or 's2/pathway0_res0 0,1;2'.")
    if len(parts) == 1:
        return module_path(parts[0]), ()
    try:
        index = tuple([int(i) for i in dim.split(",")] for dim in parts[1].split(";"))
    except ValueError:
        raise ConfigError(f"{key} entry {entry!r}: the index {parts[1]!r} must be integers separated by ',' "
                          "(items of one dimension) and ';' (dimensions), e.g. '0,1;2'.") from None
    return module_path(parts[0]), index


def model_vis_layers(cfg) -> Dict[str, Tuple[List[int], ...]]:
    """TENSORBOARD.MODEL_VIS.LAYER_LIST as {module path: index}."""
    key = "TENSORBOARD.MODEL_VIS.LAYER_LIST"
    return dict(parse_layer_entry(entry, key) for entry in cfg.TENSORBOARD.MODEL_VIS.LAYER_LIST)


def grad_cam_layer(cfg) -> str:
    """The Grad-CAM layer: GRAD_CAM.LAYER_LIST's one entry (vov3d models have one pathway),
    the last stage when empty."""
    layers = cfg.TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST
    return module_path(layers[0]) if layers else DEFAULT_GRAD_CAM_LAYER


def check_layer_names(cfg) -> None:
    """Refuse MODEL_VIS layer names that name no module of MODEL.MODEL_NAME (the model is
    built on the meta device: no memory, no weights)."""
    from vov3d.models import MODEL_REGISTRY

    vis = cfg.TENSORBOARD.MODEL_VIS
    wanted = [("TENSORBOARD.MODEL_VIS.LAYER_LIST", path) for path in model_vis_layers(cfg)]
    if vis.GRAD_CAM.ENABLE:
        wanted.append(("TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST", grad_cam_layer(cfg)))
    if not wanted:
        return
    with torch.device("meta"):
        model = MODEL_REGISTRY.get(cfg.MODEL.MODEL_NAME)(cfg)
    paths = [name for name, _ in model.named_modules()]
    for key, path in wanted:
        if path not in paths or not path:
            raise ConfigError(unknown_layer_message(path.replace(".", "/"), paths, cfg.MODEL.MODEL_NAME, key))
