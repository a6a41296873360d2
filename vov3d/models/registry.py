"""The model registry, `build_model(cfg)` and each family's checkpoint filter."""
from typing import Callable, Dict

import torch
from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.models.batchnorm import freeze_batchnorm
from vov3d.utils.registry import Registry

MODEL_REGISTRY = Registry("model")
# filter(state, model, path) -> state: what a family knows about its checkpoints (renamed
# keys, files of another release), applied before a fine-tune or test load matches tensors.
_CHECKPOINT_FILTERS: Dict[type, Callable] = {}


def build_model(cfg: CfgNode) -> torch.nn.Module:
    """Construct `MODEL.MODEL_NAME` from the config; on GPU runs (NUM_GPUS > 0) move it to
    the current CUDA device, which the engine has checked and selected before.

    Wrapping in DistributedDataParallel is the engine's job, so the model returned
    here is always the bare module whose state dict matches the checkpoints.
    """
    try:
        model_class = MODEL_REGISTRY.get(cfg.MODEL.MODEL_NAME)
    except KeyError as e:
        raise ConfigError(f"MODEL.MODEL_NAME: {e.args[0]}") from None
    model = model_class(cfg)
    if cfg.MODEL.FROZEN_BN:
        freeze_batchnorm(model, affine=cfg.BN.FROZEN_AFFINE)
    if cfg.NUM_GPUS > 0:
        model = model.cuda(torch.cuda.current_device())
    return model


def register_checkpoint_filter(model_cls: type) -> Callable:
    """Use as `@register_checkpoint_filter(VoV3D)` on `filter(state, model, path) -> state`;
    it serves the class and its subclasses, and may raise CheckpointError to refuse a file."""
    def add(fn: Callable) -> Callable:
        if model_cls in _CHECKPOINT_FILTERS:
            raise KeyError(f"{model_cls.__name__} has a checkpoint filter already.")
        _CHECKPOINT_FILTERS[model_cls] = fn
        return fn
    return add


def checkpoint_filter(model: torch.nn.Module) -> Callable:
    """The filter registered for the model's class (or nearest base class); identity if none."""
    for cls in type(model).__mro__:
        if cls in _CHECKPOINT_FILTERS:
            return _CHECKPOINT_FILTERS[cls]
    return lambda state, model, path: state
