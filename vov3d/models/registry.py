"""The model registry and `build_model(cfg)`."""
import torch
from yacs.config import CfgNode

from vov3d.models.batchnorm import freeze_batchnorm
from vov3d.utils.registry import Registry

MODEL_REGISTRY = Registry("model")


def build_model(cfg: CfgNode, gpu_id: int = None) -> torch.nn.Module:
    """Construct `MODEL.MODEL_NAME` from the config; on GPU runs move it to the device.

    Wrapping in DistributedDataParallel is the engine's job, so the model returned
    here is always the bare module whose state dict matches the checkpoints.
    """
    if cfg.NUM_GPUS > 0:
        if not torch.cuda.is_available():
            raise RuntimeError(f"NUM_GPUS is {cfg.NUM_GPUS} but CUDA is not available; "
                               "set NUM_GPUS 0 to run on the CPU.")
        if cfg.NUM_GPUS > torch.cuda.device_count():
            raise RuntimeError(f"NUM_GPUS is {cfg.NUM_GPUS} but only {torch.cuda.device_count()} "
                               "GPUs are visible.")
    model = MODEL_REGISTRY.get(cfg.MODEL.MODEL_NAME)(cfg)
    if cfg.MODEL.FROZEN_BN:
        freeze_batchnorm(model, affine=cfg.BN.FROZEN_AFFINE)
    if cfg.NUM_GPUS > 0:
        device = torch.cuda.current_device() if gpu_id is None else gpu_id
        model = model.cuda(device=device)
    return model
