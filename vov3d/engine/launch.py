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
import pickle
import sys
import tempfile
from typing import Callable

import torch
from yacs.config import CfgNode

from vov3d.config.merge import ConfigError
from vov3d.engine import distributed as du
from vov3d.engine.logging import append_to_log_file, log_to_file
from vov3d.utils import comm
from vov3d.utils.errors import UserError, describe
from vov3d.utils.processes import per_process_batch

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


def prepare_output_dir(cfg: CfgNode) -> None:
    out = cfg.OUTPUT_DIR
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"OUTPUT_DIR '{out}' exists and is not a directory; choose another OUTPUT_DIR.")
    try:
        os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    except OSError as e:
        raise ConfigError(f"OUTPUT_DIR '{out}': cannot create {os.path.join(out, 'checkpoints')} "
                          f"({e.strerror or e}).") from None


def log_failure(exc: BaseException) -> None:
    """Put why the job died into OUTPUT_DIR/stdout.log, when this process writes it."""
    if isinstance(exc, UserError):
        log_to_file(logging.ERROR, "%s", describe(exc))
    elif isinstance(exc, KeyboardInterrupt):
        log_to_file(logging.ERROR, "Interrupted (KeyboardInterrupt).")
    else:
        log_to_file(logging.ERROR, "The job failed with %s:", type(exc).__name__,
                    exc_info=(type(exc), exc, exc.__traceback__))


def _run(local_rank: int, local_size: int, rank: int, world_size: int, init_method: str,
         func: Callable, cfg: CfgNode) -> None:
    if cfg.NUM_GPUS > 0:
        torch.cuda.set_device(local_rank)
    if world_size > 1 and not comm.is_initialized():
        du.init_process_group(backend=_backend(cfg), init_method=init_method, world_size=world_size,
                              rank=rank, local_rank=local_rank, local_size=local_size,
                              timeout_s=cfg.DIST_TIMEOUT)
    try:
        func(cfg)
    except BaseException as e:
        # Here, in the process that keeps the log file (a spawned one, possibly); nothing on
        # the way up logs it again.
        log_failure(e)
        raise


# The exit status of a spawned process that stopped on a user error. It wrote the error to
# OUTPUT_DIR/stdout.log if it keeps that file, and pickled it for the launcher to re-raise.
USER_ERROR_EXIT = 3


def _spawned_worker(local_rank: int, local_size: int, func: Callable, cfg: CfgNode, init_method: str,
                    reports: str) -> None:
    try:
        _run(local_rank, local_size, cfg.SHARD_ID * local_size + local_rank, local_size * cfg.NUM_SHARDS,
             init_method, func, cfg)
    except UserError as e:
        try:
            pickle.loads(pickle.dumps(e))
        except Exception:  # an error that cannot travel keeps torch's traceback report
            raise e from None
        with open(os.path.join(reports, f"{local_rank}.pkl"), "wb") as f:
            pickle.dump(e, f)
        sys.exit(USER_ERROR_EXIT)
    finally:
        du.destroy_process_group()


def spawn_processes(cfg: CfgNode, init_method: str, func: Callable[[CfgNode], None], nprocs: int) -> None:
    """Run `func(cfg)` in `nprocs` new processes of this machine (one per GPU).

    A process stopped by a user error has it re-raised here as itself, so the command line
    reports it in one line. Global rank 0 writes its own failure to OUTPUT_DIR/stdout.log;
    the failure of any other process is written there from here.
    """
    with tempfile.TemporaryDirectory(prefix="vov3d-spawn-") as reports:
        try:
            torch.multiprocessing.spawn(_spawned_worker, nprocs=nprocs, daemon=False,
                                        args=(nprocs, func, cfg, init_method, reports))
        except (torch.multiprocessing.ProcessExitedException, torch.multiprocessing.ProcessRaisedException) as e:
            error: BaseException = e
            report = os.path.join(reports, f"{e.error_index}.pkl")
            if getattr(e, "exit_code", None) == USER_ERROR_EXIT and os.path.isfile(report):
                with open(report, "rb") as f:
                    error = pickle.load(f)
            rank = cfg.SHARD_ID * nprocs + e.error_index
            if rank != 0:
                append_to_log_file(cfg.OUTPUT_DIR, logging.ERROR, "Rank %d (local process %d) failed: %s", rank,
                                   e.error_index, describe(error) if isinstance(error, UserError) else error)
            if error is e:
                raise
            raise error from None


def launch_job(cfg: CfgNode, init_method: str, func: Callable[[CfgNode], None]) -> None:
    """Run `func(cfg)` on every process of the job described by cfg (or by torchrun).

    Devices, batch split and OUTPUT_DIR are checked first, so a wrong setting costs no
    model build and leaves no OUTPUT_DIR behind.
    """
    try:
        check_devices(cfg)
        check_process_batches(cfg)
        prepare_output_dir(cfg)
    except UserError as e:
        log_failure(e)  # reaches stdout.log when an earlier phase of this process opened it
        raise
    if launched_by_torchrun():
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        # The group outlives this call: `run_net` launches train and then test in the same
        # torchrun processes, and re-creating an env:// rendezvous on the same port races.
        _run(local_rank, local_size, int(os.environ["RANK"]), world_size, "env://", func, cfg)
    elif cfg.NUM_GPUS > 1:
        spawn_processes(cfg, init_method, func, cfg.NUM_GPUS)
    else:
        world_size = cfg.NUM_SHARDS
        try:
            _run(0, 1, cfg.SHARD_ID, world_size, init_method, func, cfg)
        finally:
            if world_size > 1:
                du.destroy_process_group()
