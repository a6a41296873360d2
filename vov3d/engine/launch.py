"""Start a job function on every process of a (possibly multi-machine) run.

Three ways in:
* torchrun / SLURM-style `env://` (RANK, WORLD_SIZE, LOCAL_RANK set): run in this process
  with that rank, no spawning;
* NUM_GPUS > 1: spawn one process per GPU on this machine;
* otherwise one process per machine (NUM_GPUS 0 or 1). A process group is created
  whenever the job has more than one process in total, so NUM_GPUS 1 x NUM_SHARDS 2
  trains one model, not two independent ones (a reference defect).
"""
import logging
import os
import re
from typing import Callable, Optional, Tuple

import torch
from yacs.config import CfgNode

from vov3d.config.merge import ConfigError
from vov3d.engine import distributed as du
from vov3d.engine.logging import log_to_file
from vov3d.utils.processes import per_process_batch
from vov3d.utils.threads import budget_for

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in _ENV_KEYS)


def _backend(cfg: CfgNode) -> str:
    # assert_and_infer_cfg already says gloo for CPU configs; configs built by hand may not.
    return cfg.DIST_BACKEND if cfg.NUM_GPUS > 0 else "gloo"


def check_devices(cfg: CfgNode) -> None:
    """NUM_GPUS must exist on this machine; CUDA calls would fail later with a raw traceback."""
    if cfg.NUM_GPUS <= 0:
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"NUM_GPUS is {cfg.NUM_GPUS} but CUDA is not available on this machine "
                          "(torch.cuda.is_available() is False); use NUM_GPUS 0 for the CPU.")
    found = torch.cuda.device_count()
    if cfg.NUM_GPUS > found:
        raise ConfigError(f"NUM_GPUS is {cfg.NUM_GPUS} but this machine has {found} CUDA device(s); "
                          f"set NUM_GPUS to at most {found}, or use NUM_GPUS 0 for the CPU.")


def check_process_batches(cfg: CfgNode) -> None:
    """Each enabled phase's batch must split evenly over this machine's processes.

    The loaders check the same, but only after the model is built (in every rank).
    """
    if launched_by_torchrun() and cfg.NUM_GPUS > 0:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if local != cfg.NUM_GPUS:
            raise ConfigError(f"torchrun started {local} processes per machine but NUM_GPUS is "
                              f"{cfg.NUM_GPUS}; they must agree (one process per GPU).")
    for split in ("train", "test"):
        if cfg[split.upper()].ENABLE:
            try:
                per_process_batch(cfg, split)
            except ValueError as e:
                raise ConfigError(str(e)) from None


def check_thread_settings(cfg: CfgNode) -> None:
    """A malformed OMP_NUM_THREADS / MKL_NUM_THREADS stops the job before any work."""
    try:
        budget_for(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def prepare_output_dir(cfg: CfgNode) -> None:
    out = cfg.OUTPUT_DIR
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"OUTPUT_DIR '{out}' exists and is not a directory; choose another OUTPUT_DIR.")
    try:
        os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    except OSError as e:
        raise ConfigError(f"OUTPUT_DIR '{out}': cannot create {os.path.join(out, 'checkpoints')} "
                          f"({e.strerror or e}).") from None


# Errors about the user's data, files and settings: reported in one line, no traceback.
def user_error_types() -> Tuple[type, ...]:
    from vov3d.datasets.failures import DataLoadError
    from vov3d.datasets.lists import ListFormatError
    from vov3d.engine.checkpoint import CheckpointError
    from vov3d.engine.train import LossDivergedError

    return ConfigError, CheckpointError, ListFormatError, LossDivergedError, DataLoadError


def quoted_exception(text: str) -> Optional[Tuple[str, str]]:
    """(type name without its module, message) of the exception that ends a traceback quoted
    in `text`: a DataLoader worker or a spawned process re-raises a child's error with its
    formatted traceback as the message. None when `text` quotes no traceback."""
    start = text.rfind("Traceback (most recent call last):")
    if start < 0:
        return None
    lines = text[start:].splitlines()[1:]
    for i, line in enumerate(lines):
        if line and not line[0].isspace():
            match = re.match(r"(?:\w+\.)*(\w+)(?:: (.*))?\Z", "\n".join(lines[i:]).strip(), re.S)
            return (match.group(1), (match.group(2) or "").strip()) if match else None
    return None


def describe_user_error(exc: BaseException) -> Optional[str]:
    """'Name: message' for a user error (also one quoted from a worker or spawned process),
    None for anything else (a bug or an environment failure, which keeps its traceback)."""
    types = user_error_types()
    quoted = quoted_exception(str(exc))
    if quoted is not None and quoted[0] in {t.__name__ for t in types}:
        return f"{quoted[0]}: {quoted[1]}"
    if isinstance(exc, types):
        return f"{type(exc).__name__}: {exc}"
    return None


def log_failure(exc: BaseException) -> None:
    """Put why the job died into OUTPUT_DIR/stdout.log (once), when this process writes it."""
    if getattr(exc, "_vov3d_logged", False):
        return
    message = describe_user_error(exc) if isinstance(exc, Exception) else None
    if message is not None:
        written = log_to_file(logging.ERROR, "%s", message)
    elif isinstance(exc, KeyboardInterrupt):
        written = log_to_file(logging.ERROR, "Interrupted (KeyboardInterrupt).")
    else:
        written = log_to_file(logging.ERROR, "The job failed with %s:", type(exc).__name__,
                              exc_info=(type(exc), exc, exc.__traceback__))
    if written:
        try:
            exc._vov3d_logged = True
        except AttributeError:
            pass


def _run(local_rank: int, local_size: int, rank: int, world_size: int, init_method: str,
         func: Callable, cfg: CfgNode) -> None:
    if cfg.NUM_GPUS > 0:
        torch.cuda.set_device(local_rank)
    if world_size > 1 and not du.is_initialized():
        du.init_process_group(backend=_backend(cfg), init_method=init_method, world_size=world_size,
                              rank=rank, local_rank=local_rank, local_size=local_size,
                              timeout_s=cfg.DIST_TIMEOUT)
    try:
        func(cfg)
    except BaseException as e:
        # Here, not in run_net: spawned processes have the log file, their parent does not.
        log_failure(e)
        raise


def _spawned_worker(local_rank: int, func: Callable, cfg: CfgNode, init_method: str) -> None:
    procs = cfg.NUM_GPUS
    try:
        _run(local_rank, procs, cfg.SHARD_ID * procs + local_rank, procs * cfg.NUM_SHARDS,
             init_method, func, cfg)
    finally:
        du.destroy_process_group()


def launch_job(cfg: CfgNode, init_method: str, func: Callable[[CfgNode], None]) -> None:
    """Run `func(cfg)` on every process of the job described by cfg (or by torchrun).

    Devices, batch split, thread settings and OUTPUT_DIR are checked first, so a wrong setting costs no
    model build and leaves no OUTPUT_DIR behind.
    """
    check_devices(cfg)
    check_process_batches(cfg)
    check_thread_settings(cfg)
    prepare_output_dir(cfg)
    if launched_by_torchrun():
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
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
