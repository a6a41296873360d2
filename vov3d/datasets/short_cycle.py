"""The multigrid short cycle's batch sampler: batch sizes change from iteration to iteration.

Iterations cycle through three crops: SHORT_CYCLE_FACTORS[0] x DEFAULT_S,
SHORT_CYCLE_FACTORS[1] x DEFAULT_S and DATA.TRAIN_CROP_SIZE; the batch of a smaller crop is
larger by the squared crop ratio (rounded), so every iteration holds about the same number
of pixels. Each index goes out as (video, step in the cycle), which tells the dataset the
crop (clip_dataset.short_cycle_crop).

Only whole batches are formed, and the length is the number of batches the pass really
yields (PySlowFast's estimate from the mean batch can count one more). A pass resumed
`start` samples into the epoch (TrainSampler) continues the cycle where it stopped.
"""
from typing import Iterator, List, Tuple

from torch.utils.data import Sampler
from yacs.config import CfgNode


def short_cycle_batch_sizes(cfg: CfgNode, batch_size: int) -> List[int]:
    """Per-process batch of the three steps of a cycle, for a stage batch of `batch_size`."""
    mg = cfg.MULTIGRID
    # At least the stage's batch: a stage crop smaller than a short-cycle crop (unusual factors)
    # would round PySlowFast's factor to 0, a batch that never fills.
    factors = [max(1, int(round((cfg.DATA.TRAIN_CROP_SIZE / (f * mg.DEFAULT_S)) ** 2)))
               for f in mg.SHORT_CYCLE_FACTORS]
    return [batch_size * factors[0], batch_size * factors[1], batch_size]


class ShortCycleBatchSampler(Sampler):
    def __init__(self, sampler, batch_sizes: List[int]):
        """`sampler`: a TrainSampler (its `start`, `world_size` and length place a resumed pass)."""
        if any(b < 1 for b in batch_sizes):
            raise ValueError(f"short-cycle batch sizes must be >= 1, got {batch_sizes}.")
        self.sampler, self.batch_sizes = sampler, list(batch_sizes)

    def _first_step(self) -> int:
        """The cycle step a pass starting `start` samples into the epoch continues with."""
        done = getattr(self.sampler, "start", 0) // getattr(self.sampler, "world_size", 1)
        step = consumed = 0
        while consumed < done:
            consumed += self.batch_sizes[step % 3]
            step += 1
        return step

    def _sizes(self, available: int) -> Iterator[Tuple[int, int]]:
        step = self._first_step()
        while self.batch_sizes[step % 3] <= available:
            yield step % 3, self.batch_sizes[step % 3]
            available -= self.batch_sizes[step % 3]
            step += 1

    def __iter__(self):
        indices = iter(self.sampler)
        for cycle_step, size in self._sizes(len(self.sampler)):
            yield [(next(indices), cycle_step) for _ in range(size)]

    def __len__(self) -> int:
        return sum(1 for _ in self._sizes(len(self.sampler)))
