"""Per-process set-up shared by training and testing: the initial seed, logging, devices,
the model as the loops see it (sync BN, DDP) and the TensorBoard writer."""
import logging
from typing import Optional

import torch
from yacs.config import CfgNode

from vov3d.engine import distributed as du
from vov3d.engine.logging import setup_logging
from vov3d.engine.preflight import tensorboard_dir
from vov3d.utils import comm
from vov3d.utils.seeding import seed_all
from vov3d.utils.threads import apply_budget, budget_for

logger = logging.getLogger(__name__)


def setup_process(cfg: CfgNode) -> None:
    """Same seed on every rank (identical initial weights), logging by process role, the
    process's thread budget."""
    seed_all(cfg.RNG_SEED)
    setup_logging(cfg.OUTPUT_DIR, is_master=comm.is_master_proc(), is_root=comm.is_root_proc())
    apply_budget(budget_for(cfg))


def device(cfg: CfgNode) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if cfg.NUM_GPUS > 0 else torch.device("cpu")


def to_device(obj, dev: torch.device):
    """Move tensors (inside lists/dicts) to `dev`; a no-op on CPU runs."""
    if dev.type == "cpu":
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(dev, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, dev) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, dev) for k, v in obj.items()}
    return obj


def log_model_info(model: torch.nn.Module, cfg: CfgNode) -> None:
    """Parameter count and conv+linear GFLOPs of one view at the train and test crops.

    fvcore's traced counts are skipped: they run a real forward pass at full size, while
    the conv+linear count runs on the meta device and costs nothing.
    """
    from vov3d.models.complexity import complexity_summary, format_complexity

    summary = complexity_summary(model, cfg, with_fvcore=False)
    logger.info("Model %s:\n%s", cfg.MODEL.MODEL_NAME, format_complexity(summary))


def _convert_sync_bn(model: torch.nn.Module, cfg: CfgNode) -> torch.nn.Module:
    """BatchNorm -> SyncBatchNorm over groups of BN.NUM_SYNC_DEVICES consecutive local ranks.

    The head stays plain BN, as in the reference (its conv_5_bn was built directly).
    State-dict keys are unchanged, so checkpoints stay interchangeable.
    """
    if cfg.BN.NORM_TYPE != "sync_batchnorm" or comm.get_world_size() == 1 or cfg.BN.NUM_SYNC_DEVICES == 1:
        if cfg.BN.NORM_TYPE == "sync_batchnorm":
            logger.info("BN.NORM_TYPE sync_batchnorm with %d process(es) and NUM_SYNC_DEVICES %d: "
                        "plain BN statistics per process.", comm.get_world_size(), cfg.BN.NUM_SYNC_DEVICES)
        return model
    if cfg.NUM_GPUS == 0:
        logger.warning("SyncBatchNorm needs CUDA; this CPU run keeps plain per-process BN.")
        return model
    group = du.sync_bn_group(cfg.BN.NUM_SYNC_DEVICES)
    for name, child in list(model.named_children()):
        if name != "head":
            setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child, group))
    logger.info("Synchronised BN statistics over groups of %d processes (head BN excluded).",
                cfg.BN.NUM_SYNC_DEVICES)
    return model


def prepare_model(cfg: CfgNode, train: bool) -> torch.nn.Module:
    """The model as the loops use it: built, sync-BN converted, DDP wrapped when distributed."""
    from vov3d.models import build_model

    model = build_model(cfg)
    if cfg.LOG_MODEL_INFO and comm.is_master_proc():
        log_model_info(model, cfg)
    if train:
        model = _convert_sync_bn(model, cfg)
    if train and comm.get_world_size() > 1:
        dev = torch.cuda.current_device() if cfg.NUM_GPUS > 0 else None
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev] if dev is not None else None, output_device=dev)
    return model


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside (Distributed)DataParallel, whose state dict checkpoints store."""
    return model.module if isinstance(
        model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else model


def tensorboard_writer(cfg: CfgNode):
    """SummaryWriter on global rank 0 when TENSORBOARD.ENABLE, else None."""
    if not (cfg.TENSORBOARD.ENABLE and comm.is_root_proc()):
        return None
    from torch.utils.tensorboard import SummaryWriter

    log_dir = tensorboard_dir(cfg)
    logger.info("TensorBoard logs in %s", log_dir)
    return SummaryWriter(log_dir=log_dir)


def add_scalars(writer: Optional[object], scalars: dict, step: int) -> None:
    if writer is not None:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=step)
