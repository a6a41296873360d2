"""Train the tiny model through `launch_job` and save each rank's final weights.

    dist_driver.py OUT INIT_METHOD [--die RANK] [--freeze RANK] [--wait-log-period S]
                   [--roll-call S] [KEY VALUE ...]
(one process, under torchrun, or one per shard). Each rank writes OUT/rank<r>.pt with its
weights, its view of the process layout and how many backward passes all-reduced the
gradients ("syncs", DDP only). `--die RANK`: that rank's process ends abruptly (as if killed)
in its third training iteration; `--freeze RANK`: it stops there (SIGSTOP) and never answers
again. Under torchrun, both happen in its first attempt only.
"""
import os
import signal
import sys

import torch

from tests.engine.tiny_parts import make_fake_trainer_class, tiny_cfg, tiny_model_registered
from vov3d.engine import distributed as du
from vov3d.engine import lost_ranks, rendezvous
from vov3d.engine.launch import launch_job
from vov3d.engine.runtime import setup_process, unwrap_model
from vov3d.utils import comm

DIE_RANK = -1
FREEZE_RANK = -1


def _in_third_iteration(model, act):
    forward = model.forward

    def acting(x):
        if model.training and model.calls == 2 and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
            act()
        return forward(x)

    model.forward = acting


def _count_syncs(ddp_model):
    """Count the backward passes whose gradients DDP all-reduces (each reduces bucket 0 once)."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    syncs = [0]

    def counting(state, bucket):
        syncs[0] += bucket.index() == 0
        return allreduce_hook(state, bucket)

    ddp_model.register_comm_hook(None, counting)
    return syncs


def job(cfg):
    setup_process(cfg)
    with tiny_model_registered():  # in every rank: spawned ranks do not share a registry
        trainer = make_fake_trainer_class()(cfg)
        if comm.get_rank() == DIE_RANK:
            _in_third_iteration(unwrap_model(trainer.model), lambda: os._exit(9))
        if comm.get_rank() == FREEZE_RANK:
            _in_third_iteration(unwrap_model(trainer.model), lambda: os.kill(os.getpid(), signal.SIGSTOP))
        syncs = _count_syncs(trainer.model) if hasattr(trainer.model, "module") else [0]
        trainer.fit()
    mean = du.all_reduce_mean([torch.tensor(float(comm.get_rank()))])[0]
    torch.save({"state": unwrap_model(trainer.model).state_dict(), "rank": comm.get_rank(),
                "world": comm.get_world_size(), "local_rank": comm.get_local_rank(),
                "gathered": du.all_gather_object(comm.get_rank() * 10), "mean_rank": float(mean),
                "ddp": hasattr(trainer.model, "module"), "syncs": syncs[0]},
               f"{cfg.OUTPUT_DIR}/rank{comm.get_rank()}.pt")


if __name__ == "__main__":
    out, init_method, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    while rest and rest[0].startswith("--"):
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--die":
            DIE_RANK = int(value)
        elif flag == "--freeze":
            FREEZE_RANK = int(value)
        elif flag == "--wait-log-period":
            rendezvous.WAIT_LOG_PERIOD_S = float(value)
        elif flag == "--roll-call":
            lost_ranks.ROLL_CALL_S = float(value)
        else:
            raise SystemExit(f"unknown flag {flag}")
    cfg = tiny_cfg(out, "MODEL.FROZEN_BN", "True", "TRAIN.BATCH_SIZE", "16", "SOLVER.MAX_EPOCH", "3",
                   "TRAIN.CHECKPOINT_PERIOD", "3", "DIST_TIMEOUT", "60", "TEST.ENABLE", "False", *rest)
    cfg.freeze()
    with tiny_model_registered():  # the launcher checks MODEL.MODEL_NAME before any work
        launch_job(cfg, init_method, job)
