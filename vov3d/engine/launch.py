"""Start a job function on every process of a (possibly multi-machine) run.

Three ways in:
* torchrun / SLURM-style `env://` (RANK, WORLD_SIZE, LOCAL_RANK set): run in this process
  with that rank, no spawning;
* NUM_GPUS > 1: spawn one process per GPU on this machine;
* otherwise one process per machine (NUM_GPUS 0 or 1). A process group is created
  whenever the job has more than one process in total, so NUM_GPUS 1 x NUM_SHARDS 2
  trains one model, not two independent ones (a reference defect).
"""
import os
from typing import Callable

import torch
from yacs.config import CfgNode

from vov3d.engine import distributed as du

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in _ENV_KEYS)


def _backend(cfg: CfgNode) -> str:
    return cfg.DIST_BACKEND if cfg.NUM_GPUS > 0 else "gloo"


def _run(local_rank: int, local_size: int, rank: int, world_size: int, init_method: str,
         func: Callable, cfg: CfgNode) -> None:
    if cfg.NUM_GPUS > 0:
        torch.cuda.set_device(local_rank)
    if world_size > 1 and not du.is_initialized():
        du.init_process_group(backend=_backend(cfg), init_method=init_method, world_size=world_size,
                              rank=rank, local_rank=local_rank, local_size=local_size,
                              timeout_s=cfg.DIST_TIMEOUT)
    func(cfg)


def _spawned_worker(local_rank: int, func: Callable, cfg: CfgNode, init_method: str) -> None:
    procs = cfg.NUM_GPUS
    try:
        _run(local_rank, procs, cfg.SHARD_ID * procs + local_rank, procs * cfg.NUM_SHARDS,
             init_method, func, cfg)
    finally:
        du.destroy_process_group()


def launch_job(cfg: CfgNode, init_method: str, func: Callable[[CfgNode], None]) -> None:
    """Run `func(cfg)` on every process of the job described by cfg (or by torchrun)."""
    os.makedirs(os.path.join(cfg.OUTPUT_DIR, "checkpoints"), exist_ok=True)
    if launched_by_torchrun():
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        if cfg.NUM_GPUS > 0 and local_size != cfg.NUM_GPUS:
            raise ValueError(f"torchrun started {local_size} processes per machine but NUM_GPUS is "
                             f"{cfg.NUM_GPUS}; they must agree (one process per GPU).")
        # The group outlives this call: `run_net` launches train and then test in the same
        # torchrun processes, and re-creating an env:// rendezvous on the same port races.
        _run(local_rank, local_size, int(os.environ["RANK"]), world_size, "env://", func, cfg)
    elif cfg.NUM_GPUS > 1:
        torch.multiprocessing.spawn(_spawned_worker, nprocs=cfg.NUM_GPUS,
                                    args=(func, cfg, init_method), daemon=False)
    else:
        world_size = cfg.NUM_SHARDS
        try:
            _run(0, 1, cfg.SHARD_ID, world_size, init_method, func, cfg)
        finally:
            if world_size > 1:
                du.destroy_process_group()
