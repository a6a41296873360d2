"""How a machine's batch is split over its processes (shared by the loaders and the engine)."""
import os

from yacs.config import CfgNode


def processes_per_machine(cfg: CfgNode) -> int:
    """NUM_GPUS on GPU runs; on CPU the processes started on this machine: LOCAL_WORLD_SIZE
    (torchrun), else WORLD_SIZE (an env:// launch that does not say, taken as one machine,
    as the launcher does), else 1."""
    if cfg.NUM_GPUS > 0:
        return cfg.NUM_GPUS
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))


def per_process_batch(cfg: CfgNode, split: str) -> int:
    """TRAIN/TEST.BATCH_SIZE is the batch of one machine, split evenly over its processes."""
    key = "TEST" if split == "test" else "TRAIN"
    batch = cfg[key].BATCH_SIZE
    procs = processes_per_machine(cfg)
    if batch % procs:
        source = f"NUM_GPUS {procs}" if cfg.NUM_GPUS > 0 else f"LOCAL_WORLD_SIZE {procs}"
        raise ValueError(f"{key}.BATCH_SIZE {batch} is the batch of one machine and must be "
                         f"divisible by its {procs} processes ({source}); e.g. "
                         f"{key}.BATCH_SIZE {max(procs, batch - batch % procs)}.")
    return batch // procs
