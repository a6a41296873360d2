"""Where a training run stands, saved in every checkpoint so auto-resume continues exactly there.

The position counts what the loop consumed, not what the loader prefetched:

* `epoch`: the 0-based epoch the model is in (the next one to run after an epoch checkpoint);
* `iteration`: optimiser steps of that epoch already made (TRAIN.GRAD_ACCUMULATION_STEPS
  loader batches each; a stop only happens between steps, when no gradient is pending);
* `samples`: the samples all ranks consumed in them, i.e. the prefix of the epoch's global
  order (datasets.loader.TrainSampler) a resumed pass skips;
* `world_size`: the processes that consumed them; with another world size (an elastic
  restart) the iteration is re-derived from `samples`;
* `meter`: the epoch meter's running totals, so the epoch's record covers all its iterations.

The samples are counted step by step, never computed from the iteration: a trainer whose
batch size varies per step (multigrid) adds each step's global size and resumes right.
"""
import logging
from typing import Any, Dict

logger = logging.getLogger(__name__)


class TrainingPosition:
    def __init__(self) -> None:
        self.start_epoch(0, 1)

    def start_epoch(self, epoch: int, world_size: int) -> None:
        """The start of `epoch`, to be trained by `world_size` processes."""
        self.epoch, self.iteration, self.samples, self.meter = epoch, 0, 0, {}
        self.world_size = world_size

    def advance(self, global_batch: int) -> None:
        """One more optimiser step, of `global_batch` samples over all ranks."""
        self.iteration += 1
        self.samples += global_batch

    def resumes_in(self, epoch: int) -> bool:
        """Whether `epoch` was stopped part-way and continues from here."""
        return self.epoch == epoch and self.iteration > 0

    def resume(self, epoch: int, world_size: int, global_batch: int, iters: int) -> int:
        """The iterations of `epoch`, the first one a run trains, that a stopped run already
        did there: 0 unless the checkpoint stopped part-way through it. With another world
        size the consumed samples still are a prefix of the epoch's order; the iteration is
        re-derived from them (`global_batch`: samples per step now)."""
        if not self.resumes_in(epoch):
            return 0
        if self.world_size != world_size:
            iteration = self.samples // global_batch
            logger.warning("The checkpoint stopped epoch %d after %d iterations of %d processes; this run has %d: "
                           "it goes on after sample %d of the epoch's order, as iteration %d.", epoch + 1,
                           self.iteration, self.world_size, world_size, self.samples, iteration)
            self.iteration, self.world_size = iteration, world_size
        logger.info("Continuing epoch %d of a run stopped after iteration %d/%d.", epoch + 1, self.iteration, iters)
        return self.iteration

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "iteration": self.iteration, "samples": self.samples,
                "world_size": self.world_size, "meter": dict(self.meter)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key in ("epoch", "iteration", "samples", "world_size"):
            value = state[key]
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"'{key}' is {value!r}, expected an integer >= 0")
        if not isinstance(state.get("meter", {}), dict):
            raise ValueError(f"'meter' is {type(state['meter']).__name__}, expected a dict")
        self.epoch, self.iteration, self.samples = state["epoch"], state["iteration"], state["samples"]
        self.world_size, self.meter = state["world_size"], dict(state.get("meter", {}))
