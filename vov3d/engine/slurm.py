"""A run of `run_net`'s work as a SLURM job, through submitit (tools/submit_net.py submits it).

submitit starts one task per GPU (one per machine on the CPU) on every node and calls the
same `SlurmRun` in each. A task learns its place from SLURM (rank, world size, node; the
first node is the rendezvous host), sets the variables the launcher reads (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and SHARD_ID, then
runs run_net's phases: training, testing, the model-visualisation job. The config is the one loaded at submission, carried in
the job itself: a requeued job cannot run another experiment by accident.

Preemption and time limits: SLURM sends submitit's signal (USR2 unless
SUBMITIT_PREEMPT_SIGNAL says otherwise, 90 s before the time limit) to every task. While
training, it stops all ranks at the same iteration with a mid-epoch checkpoint; rank 0 then
hands over to submitit's own handler, which calls `checkpoint()` and requeues the job. The
requeued job runs this object again and auto-resume continues where it stopped. Outside
training, submitit's handler requeues at once (the job resumes from the newest checkpoint).
SIGTERM or SIGUSR1 alone (scancel, or a preemption SLURM requeues by itself) save the same
way and end the job without requeueing it.
"""
import functools
import logging
import os
import signal
import sys
import zlib

from yacs.config import CfgNode

from vov3d.engine.launch import launch_job
from vov3d.engine.preemption import STOP_SIGNALS, TrainingStopped
from vov3d.engine.preflight import visualization_job_enabled
from vov3d.engine.test import test
from vov3d.engine.train import train
from vov3d.engine.visualize import visualize

logger = logging.getLogger(__name__)


def rendezvous_port(job_id: str) -> int:
    """A port in [20000, 40000) that every task of a job (and its requeued runs) derive alike,
    and that other jobs sharing a node rarely share."""
    return 20000 + zlib.crc32(job_id.encode()) % 20000


class SlurmRun:
    """The callable submitit runs in every task of the job."""

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg

    def __call__(self) -> None:
        import submitit

        env = submitit.JobEnvironment()
        requeue_signal = getattr(signal, "SIG" + env.USR_SIG)
        cfg = self.task_config(env)
        stop_signals = tuple(dict.fromkeys(STOP_SIGNALS + (requeue_signal,)))
        try:
            if cfg.TRAIN.ENABLE:
                launch_job(cfg, "env://", functools.partial(train, stop_signals=stop_signals))
            if cfg.TEST.ENABLE:
                launch_job(cfg, "env://", test)
            if visualization_job_enabled(cfg):
                launch_job(cfg, "env://", visualize)
        except TrainingStopped as e:
            if requeue_signal not in e.signals:
                sys.exit(e.exit_code)
            handler = signal.getsignal(requeue_signal)  # submitit's again, now that training is over
            if callable(handler):
                handler(requeue_signal, None)  # rank 0: checkpoint(), requeue, exit
            sys.exit(0)  # the other ranks: their state is saved, the requeue is rank 0's

    def task_config(self, env) -> CfgNode:
        """This task's config, once the launcher's variables say where it stands in the job."""
        per_node = env.num_tasks // env.num_nodes
        os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks),
                          LOCAL_RANK=str(env.local_rank), LOCAL_WORLD_SIZE=str(per_node),
                          MASTER_ADDR=env.hostnames[0])
        os.environ.setdefault("MASTER_PORT", str(rendezvous_port(env.job_id)))
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.NUM_SHARDS, cfg.SHARD_ID = env.num_nodes, env.node
        cfg.freeze()
        logger.info("SLURM job %s: task %d of %d, node %d of %d (%s), rendezvous at %s:%s.", env.job_id,
                    env.global_rank, env.num_tasks, env.node, env.num_nodes, env.hostname,
                    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
        return cfg

    def checkpoint(self, *args, **kwargs):
        """submitit's requeue hook: run this same job again; auto-resume finds where it stopped."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)
