"""Train the tiny model through `launch_job` and save each rank's final weights.

    dist_driver.py OUT INIT_METHOD [KEY VALUE ...]   (one process, under torchrun, or one per shard)
Each rank writes OUT/rank<r>.pt with its weights and its view of the process layout.
"""
import sys

import torch

from tests.engine.tiny_parts import make_fake_trainer_class, tiny_cfg, tiny_model_registered
from vov3d.engine.runtime import unwrap_model
from vov3d.engine import distributed as du
from vov3d.engine.launch import launch_job
from vov3d.engine.runtime import setup_process


def job(cfg):
    setup_process(cfg)
    with tiny_model_registered():  # in every rank: spawned ranks do not share a registry
        trainer = make_fake_trainer_class()(cfg)
        trainer.fit()
    mean = du.all_reduce_mean([torch.tensor(float(du.get_rank()))])[0]
    torch.save({"state": unwrap_model(trainer.model).state_dict(), "rank": du.get_rank(),
                "world": du.get_world_size(), "local_rank": du.get_local_rank(),
                "gathered": du.all_gather_object(du.get_rank() * 10), "mean_rank": float(mean),
                "ddp": hasattr(trainer.model, "module")},
               f"{cfg.OUTPUT_DIR}/rank{du.get_rank()}.pt")


if __name__ == "__main__":
    out, init_method, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    cfg = tiny_cfg(out, "MODEL.FROZEN_BN", "True", "TRAIN.BATCH_SIZE", "16", "SOLVER.MAX_EPOCH", "3",
                   "TRAIN.CHECKPOINT_PERIOD", "3", "DIST_TIMEOUT", "60", *overrides)
    cfg.freeze()
    with tiny_model_registered():  # the launcher checks MODEL.MODEL_NAME before any work
        launch_job(cfg, init_method, job)
