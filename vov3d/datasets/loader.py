"""DataLoader construction: batch sizes per process, samplers, worker seeding and threads.

Augmentation randomness comes from Python `random` and numpy inside the workers. Every
worker seeds both (and torch) from a seed derived from (RNG_SEED, epoch, rank, worker), so
workers differ from each other and from epoch to epoch, and a run (or a resumed run) is
reproducible. `shuffle_dataset(loader, epoch)` must be called before every training epoch.
"""
import logging
import random
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler
from yacs.config import CfgNode

from vov3d.datasets.registry import build_dataset
from vov3d.config.merge import ConfigError
from vov3d.utils.processes import per_process_batch, processes_per_machine
from vov3d.utils.threads import apply_worker_budget

logger = logging.getLogger(__name__)


class ShardSampler(Sampler):
    """indices[rank::world]: every index on exactly one rank, no padding, order kept, so
    evaluation counts every video once whatever the number of processes."""

    def __init__(self, dataset, rank: int, world_size: int):
        self.num_samples = len(dataset)
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))

    def set_epoch(self, epoch: int) -> None:  # evaluation order never changes
        pass


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def epoch_seed(base_seed: int, epoch: int, rank: int) -> int:
    """Seed of the loader's generator for one epoch on one rank."""
    return int(np.random.SeedSequence([base_seed, epoch, rank]).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """Worker init: torch already gave this worker `base_seed + worker_id`, where the base
    seed is drawn from the loader's generator (re-seeded per epoch): derive the others."""
    seed = torch.initial_seed() % 2 ** 32
    random.seed(seed)
    np.random.seed(seed)


def init_worker(worker_id: int) -> None:
    """Worker init: the worker's thread budget (one thread: the workers are the loading
    parallelism), then its seeds."""
    apply_worker_budget()
    seed_worker(worker_id)


def videos_per_test_batch(cfg: CfgNode, num_views: int) -> int:
    """Test items hold all K views of a video: as many videos as fit the per-process batch."""
    return max(1, per_process_batch(cfg, "test") // num_views)


def construct_loader(cfg: CfgNode, split: str) -> DataLoader:
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; expected train, val or test.")
    name = cfg.TEST.DATASET if split == "test" else cfg.TRAIN.DATASET
    dataset = build_dataset(name, cfg, split)
    if split == "test":
        batch_size = videos_per_test_batch(cfg, dataset.num_views)
    else:
        batch_size = per_process_batch(cfg, split)
    shuffle = split == "train"
    sampler = None
    if _distributed():
        if shuffle:
            sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.RNG_SEED)
        else:
            sampler = ShardSampler(dataset, dist.get_rank(), dist.get_world_size())
    if split == "train":
        per_rank = len(sampler) if sampler is not None else len(dataset)
        if per_rank < batch_size:
            raise ConfigError(f"the train split has {per_rank} videos per process, fewer than the "
                              f"per-process batch {batch_size} (TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} over "
                              f"{processes_per_machine(cfg)} process(es) per machine): no batch would be formed; "
                              "lower TRAIN.BATCH_SIZE.")
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(cfg.RNG_SEED, 0, _rank()))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available(),
        drop_last=split == "train",
        worker_init_fn=init_worker,
        generator=generator,
        persistent_workers=False,  # fresh workers per epoch: bounded RAM, per-epoch seeds
    )
    loader.base_seed = cfg.RNG_SEED
    return loader


def shuffle_dataset(loader: DataLoader, epoch: int) -> None:
    """Start of a training epoch: new shuffle order and new augmentation seeds, a function of
    (RNG_SEED, epoch, rank) only."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    seed = epoch_seed(getattr(loader, "base_seed", 0), epoch, _rank())
    loader.generator.manual_seed(seed)
    if loader.num_workers == 0:
        # Augmentation then runs in this process: give it the same per-epoch streams.
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
