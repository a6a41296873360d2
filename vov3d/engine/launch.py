"""Start a job function on every process of a (possibly multi-machine) run.

Three ways in:
* torchrun / SLURM-style `env://` (RANK, WORLD_SIZE, LOCAL_RANK set): run in this process
  with that rank, no spawning. The ranks meet near MASTER_ADDR:MASTER_PORT through vov3d's
  tcp:// rendezvous, which names missing ranks and gives up after DIST_INIT_TIMEOUT;
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
from typing import Callable, Optional, Tuple

import torch
from torch.multiprocessing.spawn import ProcessException
from yacs.config import CfgNode

from vov3d.engine import distributed as du
from vov3d.engine import preflight
from vov3d.engine.lost_ranks import RankLostError, lost_rank_error
from vov3d.engine.logging import append_to_log_file, log_to_file, write_startup_records
from vov3d.engine.preemption import ForwardSignals, TrainingStopped
from vov3d.utils import comm
from vov3d.utils.errors import UserError, describe


def _backend(cfg: CfgNode) -> str:
    # assert_and_infer_cfg already says gloo for CPU configs; configs built by hand may not.
    return cfg.DIST_BACKEND if cfg.NUM_GPUS > 0 else "gloo"


def _owns_log_file(cfg: CfgNode) -> bool:
    """Whether this launcher runs, or spawns, global rank 0 (which writes stdout.log)."""
    if preflight.launched_by_torchrun():
        return int(os.environ["RANK"]) == 0
    return cfg.SHARD_ID == 0


def log_failure(exc: BaseException) -> None:
    """Put why the job died into OUTPUT_DIR/stdout.log, when this process writes it."""
    if isinstance(exc, TrainingStopped):
        return  # not a failure; the trainer logged where it stopped and what it saved
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
                              timeout_s=cfg.DIST_TIMEOUT, init_timeout_s=cfg.DIST_INIT_TIMEOUT)
    try:
        func(cfg)
    except BaseException as e:
        lost = lost_rank_error(e, _resume_advice(cfg))
        # Logged here, in the process that may keep stdout.log; nothing on the way up logs it again.
        log_failure(lost or e)
        if lost is not None:
            raise lost from e
        raise


def _resume_advice(cfg: CfgNode) -> str:
    how = ("auto-resume" if cfg.TRAIN.AUTO_RESUME else
           "with TRAIN.AUTO_RESUME True, auto-resume")
    return (f"Its own output says why it stopped. Then run the same command again: {how} continues from "
            f"the last checkpoint in {os.path.join(cfg.OUTPUT_DIR, 'checkpoints')}.")


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


def _reported_cause(reports: str) -> Optional[Tuple[int, UserError]]:
    """(local rank, error) of the user error that stopped the job, if a process reported one.
    When one process stops, the others fail in their next collective; a lost peer is what
    they report, so any other error is the cause."""
    found = []
    for name in sorted(os.listdir(reports), key=lambda n: int(n.split(".")[0])):
        with open(os.path.join(reports, name), "rb") as f:
            found.append((int(name.split(".")[0]), pickle.load(f)))
    causes = [item for item in found if not isinstance(item[1], RankLostError)] or found
    return causes[0] if causes else None


def spawn_processes(cfg: CfgNode, init_method: str, func: Callable[[CfgNode], None], nprocs: int) -> None:
    """Run `func(cfg)` in `nprocs` new processes of this machine (one per GPU).

    A user error that stopped them is re-raised here as itself, so the command line reports
    it in one line. Global rank 0 writes its own failure to OUTPUT_DIR/stdout.log; the failure
    of any other process is written there from here.
    """
    with tempfile.TemporaryDirectory(prefix="vov3d-spawn-") as reports:
        try:
            context = torch.multiprocessing.start_processes(
                _spawned_worker, nprocs=nprocs, daemon=False, join=False, start_method="spawn",
                args=(nprocs, func, cfg, init_method, reports))
            with ForwardSignals(context.pids):
                while not context.join():
                    pass
        except ProcessException as e:
            local_rank, error = _reported_cause(reports) or (e.error_index, e)
            rank = cfg.SHARD_ID * nprocs + local_rank
            if isinstance(error, TrainingStopped):
                raise error from None
            if rank != 0:
                append_to_log_file(cfg.OUTPUT_DIR, logging.ERROR, "Rank %d (local process %d) failed: %s", rank,
                                   local_rank, describe(error) if isinstance(error, UserError) else error)
            if error is e:
                raise
            raise error from None


def _env_init_method() -> str:
    """Where the ranks of a torchrun / SLURM-style launch meet: vov3d's tcp:// rendezvous at
    MASTER_ADDR:MASTER_PORT, or at the next port when torchrun's agent serves a store on
    MASTER_PORT itself. That store outlives the worker groups it restarts, and a restarted
    group can read the addresses the previous one left there and fail to connect; rank 0's
    own store lives and dies with its group."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not (addr and port):
        return "env://"  # torch names what is missing
    port = int(port)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        port = port + 1 if port < 65535 else port - 1
    return f"tcp://[{addr}]:{port}" if ":" in addr else f"tcp://{addr}:{port}"


def launch_job(cfg: CfgNode, init_method: str, func: Callable[[CfgNode], None]) -> None:
    """Run `func(cfg)` on every process of the job described by cfg (or by torchrun), once
    the pre-flight checks passed (no model is built, no process started for a refused job).
    Then the records logged since start-up (config warnings) go to stdout.log, before any
    process starts."""
    try:
        preflight.check_job(cfg)
    except UserError as e:
        log_failure(e)  # reaches stdout.log when an earlier phase of this process opened it
        raise
    write_startup_records(cfg.OUTPUT_DIR if _owns_log_file(cfg) else None)
    if preflight.launched_by_torchrun():
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        # The group outlives this call: `run_net` launches train and then test in the same
        # torchrun processes, which need not meet again.
        _run(local_rank, local_size, int(os.environ["RANK"]), world_size, _env_init_method(), func, cfg)
    elif cfg.NUM_GPUS > 1:
        spawn_processes(cfg, init_method, func, cfg.NUM_GPUS)
    else:
        world_size = cfg.NUM_SHARDS
        try:
            _run(0, 1, cfg.SHARD_ID, world_size, init_method, func, cfg)
        finally:
            if world_size > 1:
                du.destroy_process_group()
