"""DataLoader construction: batch sizes per process, samplers, worker seeding and threads.

Augmentation randomness comes from Python `random` and numpy. A training item re-seeds
both from (RNG_SEED, epoch, stream, item index) before it is made (`seed_samples`), so its
clip does not depend on the worker that loads it, nor on what was loaded before; workers
also seed both (and torch) from (RNG_SEED, epoch, rank, stream, worker) for everything
else. `set_epoch(loader, RNG_SEED, epoch, stream, start)` must be called before every pass
of a training loader; `start` resumes the pass in the middle of the epoch.
"""
import logging
import math
import random
from typing import Iterator, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from yacs.config import CfgNode

from vov3d.datasets.clip_dataset import collate_samples
from vov3d.datasets.registry import build_dataset
from vov3d.datasets.short_cycle import ShortCycleBatchSampler, short_cycle_batch_sizes
from vov3d.config.merge import ConfigError
from vov3d.utils import comm
from vov3d.utils.processes import per_process_batch, processes_per_machine
from vov3d.utils.seeding import epoch_seed, order_seed, seed_python_and_numpy
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


class TrainSampler(Sampler):
    """The training order of one rank, dealt out as DistributedSampler does: one permutation
    of the dataset for all ranks (drawn from the pass's order seed), padded with its own
    head to a multiple of the world size, rank r taking every world-th sample from r on.

    Whatever the world size, what the ranks have consumed after k batches is a prefix of
    that global order, so `start_pass(seed, start)` can begin a pass `start` samples into
    it: with the same world size each rank continues exactly where it stopped; with another
    (an elastic restart) the rest of the epoch is dealt out afresh.
    """

    def __init__(self, size: int, rank: int, world_size: int, order_seed: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size - 1}].")
        self.size, self.rank, self.world_size = size, rank, world_size
        self.order_seed, self.start = order_seed, 0

    def start_pass(self, order_seed: int, start: int = 0) -> None:
        """The next pass draws its order from `order_seed` and skips the first `start`
        samples of it (counted over all ranks)."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}.")
        self.order_seed, self.start = order_seed, start

    def global_order(self) -> List[int]:
        """The whole pass's order over all ranks, padded to a multiple of the world size."""
        generator = torch.Generator()
        generator.manual_seed(self.order_seed)
        return _padded(torch.randperm(self.size, generator=generator).tolist(), self.world_size)

    def __iter__(self) -> Iterator[int]:
        # Padding the rest only does something after a world-size change; every rank then
        # still gets the same number of samples (a rank with fewer batches would hang DDP).
        rest = _padded(self.global_order()[self.start:], self.world_size)
        return iter(rest[self.rank::self.world_size])

    def __len__(self) -> int:
        total = math.ceil(self.size / self.world_size) * self.world_size
        return math.ceil(max(total - self.start, 0) / self.world_size)


def _padded(order: List[int], multiple: int) -> List[int]:
    """`order` repeated from its head up to the next multiple of `multiple` in length."""
    if not order:
        return order
    total = math.ceil(len(order) / multiple) * multiple
    return (order * math.ceil(total / len(order)))[:total]


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


def construct_loader(cfg: CfgNode, split: str, short_cycle: bool = False) -> DataLoader:
    """`short_cycle`: batches of the multigrid short cycle (a training loader only)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; expected train, val or test.")
    name = cfg.TEST.DATASET if split == "test" else cfg.TRAIN.DATASET
    dataset = build_dataset(name, cfg, split)
    if split == "test":
        batch_size = videos_per_test_batch(cfg, dataset.num_views)
    else:
        batch_size = per_process_batch(cfg, split)
    if split == "train":
        sampler = TrainSampler(len(dataset), comm.get_rank(), comm.get_world_size(),
                               order_seed(cfg.RNG_SEED, 0, "loader"))
    else:
        sampler = ShardSampler(dataset, comm.get_rank(), comm.get_world_size())
    if split == "train":
        per_rank = len(sampler)
        if per_rank < batch_size:
            raise ConfigError(f"the train split has {per_rank} videos per process, fewer than the "
                              f"per-process batch {batch_size} (TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} over "
                              f"{processes_per_machine(cfg)} process(es) per machine): no batch would be formed; "
                              "lower TRAIN.BATCH_SIZE.")
    batching = dict(batch_size=batch_size, sampler=sampler, drop_last=split == "train")
    if short_cycle:
        batching = dict(batch_sampler=_short_cycle_batches(cfg, sampler, batch_size))
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(cfg.RNG_SEED, 0, comm.get_rank(), "loader"))
    loader = DataLoader(
        dataset,
        **batching,
        collate_fn=collate_samples if getattr(dataset, "samples_per_item", 1) > 1 else None,
        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available(),
        worker_init_fn=init_worker,
        generator=generator,
        persistent_workers=False,  # fresh workers per epoch: bounded RAM, per-epoch seeds
    )
    return loader


def _short_cycle_batches(cfg: CfgNode, sampler: TrainSampler, batch_size: int) -> ShortCycleBatchSampler:
    sizes = short_cycle_batch_sizes(cfg, batch_size)
    if len(sampler) < max(sizes):
        raise ConfigError(f"the train split has {len(sampler)} videos per process, fewer than the largest "
                          f"multigrid short-cycle batch {max(sizes)} (batches {sizes} per process): lower "
                          "TRAIN.BATCH_SIZE or MULTIGRID.SHORT_CYCLE_FACTORS' ratio.")
    return ShortCycleBatchSampler(sampler, sizes)


def set_epoch(loader: DataLoader, rng_seed: int, epoch: int, stream: str = "loader", start: int = 0) -> None:
    """Before a pass of a training loader over `epoch`: its order, the seed of each item and
    the seeds of its workers (or, without workers, of this process's Python and numpy
    generators) become a function of (RNG_SEED, epoch, rank, stream) only. `start` (samples
    over all ranks, see TrainSampler) resumes the pass in the middle of the epoch."""
    sampler = getattr(loader.batch_sampler, "sampler", loader.sampler)  # a batch sampler's own
    if isinstance(sampler, TrainSampler):
        sampler.start_pass(order_seed(rng_seed, epoch, stream), start)
    elif start:
        raise ValueError(f"this loader's {type(loader.sampler).__name__} cannot start a pass at sample {start}.")
    elif hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "seed_samples"):
        loader.dataset.seed_samples(rng_seed, epoch, stream)
    seed = epoch_seed(rng_seed, epoch, comm.get_rank(), stream)
    if loader.generator is not None:
        loader.generator.manual_seed(seed)
    if loader.num_workers == 0:
        seed_python_and_numpy(seed)
