"""The model registry and `build_model(cfg)`."""
import torch
from yacs.config import CfgNode

from vov3d.config.merge import ConfigError
from vov3d.models.batchnorm import freeze_batchnorm
from vov3d.utils.registry import Registry

MODEL_REGISTRY = Registry("model")


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
