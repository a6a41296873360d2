"""Every seed of a training epoch comes from one function of (RNG_SEED, epoch, rank, stream).

A resumed run then repeats the uninterrupted one bit for bit: nothing depends on how many
epochs this process has already run. The streams are independent of each other:

* "loader": a training loader's shuffle order and worker seeds (PyTorch gives worker w the
  seed `base + w`, base drawn from the loader's generator), and Python's and numpy's
  generators when the loader runs in this process;
* "precise_bn": the same for the loader that recomputes the BN statistics;
* "process": this process's own torch / numpy / Python generators (dropout, ...);
* "mixup": the generator that draws the mixup / cutmix parameters of training batches
  (its own, so switching mixing on or off changes no other random draw).

The "loader" stream hashes three words and the others four, so that the seeds of runs
made before the other streams existed stay the same.
"""
import random

import numpy as np
import torch

_STREAM_WORDS = {"loader": (), "process": (1,), "precise_bn": (2,), "mixup": (3,)}
STREAMS = tuple(_STREAM_WORDS)


def epoch_seed(rng_seed: int, epoch: int, rank: int, stream: str) -> int:
    """The seed of one random stream of one epoch on one rank (an unsigned 32-bit integer)."""
    if stream not in _STREAM_WORDS:
        raise ValueError(f"unknown random stream {stream!r}; expected one of {', '.join(STREAMS)}.")
    words = [rng_seed, epoch, rank, *_STREAM_WORDS[stream]]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def seed_python_and_numpy(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


def seed_all(seed: int) -> None:
    """Seed torch (every device too), numpy and Python's `random` in this process."""
    torch.manual_seed(seed)
    seed_python_and_numpy(seed)
