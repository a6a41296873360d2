"""Every seed of a training epoch is a hash of (RNG_SEED, epoch, rank, stream), and of the
iteration or the sample for the seeds of one step.

A resumed run then repeats the uninterrupted one bit for bit: nothing depends on how many
epochs, iterations or samples this process has already run, so a run can stop and resume
in the middle of an epoch too. The streams are independent of each other:

* "loader": a training loader's shuffle order and worker seeds (PyTorch gives worker w the
  seed `base + w`, base drawn from the loader's generator), and Python's and numpy's
  generators when the loader runs in this process;
* "precise_bn": the same for the loader that recomputes the BN statistics;
* "val": the same for the validation loader (random clips unless DATA.DETERMINISTIC_VAL);
* "process": this process's own torch / numpy / Python generators (dropout, ...);
* "mixup": the generator that draws the mixup / cutmix parameters of training batches
  (its own, so switching mixing on or off changes no other random draw).

Within an epoch, `iteration_seed` re-seeds this process's generators (dropout, drop-connect,
anything drawn between batches) and the mixing parameters at every training iteration
(optimiser step), and `sample_seed` the
Python and numpy generators that make one training sample (temporal window, scale, crop,
flip), wherever it is made: which DataLoader worker loads an item, and what that worker
loaded before, no longer matter. A sample's seed does not depend on the rank either: the
same video of the same epoch gets the same augmentation whatever the number of processes.

The "loader" stream hashes three words and the others four, so that the seeds of runs
made before the other streams existed stay the same; the per-step seeds hash five words
(iterations) or a tag no rank can take (samples, and the order of a pass, which every
rank shares), so no two kinds of seed collide.
"""
import random

import numpy as np
import torch

_STREAM_WORDS = {"loader": (), "process": (1,), "precise_bn": (2,), "mixup": (3,), "val": (4,), "erasing": (5,)}
STREAMS = tuple(_STREAM_WORDS)
# Third word of a sample seed, where the other seeds hold a rank: ranks never reach it.
_SAMPLE_TAG = 2 ** 31
_ORDER_WORD = 16


def _hash(words) -> int:
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


def _stream_words(stream: str):
    if stream not in _STREAM_WORDS:
        raise ValueError(f"unknown random stream {stream!r}; expected one of {', '.join(STREAMS)}.")
    return _STREAM_WORDS[stream]


def epoch_seed(rng_seed: int, epoch: int, rank: int, stream: str) -> int:
    """The seed of one random stream of one epoch on one rank (an unsigned 32-bit integer)."""
    return _hash([rng_seed, epoch, rank, *_stream_words(stream)])


def iteration_seed(rng_seed: int, epoch: int, rank: int, iteration: int, stream: str = "process") -> int:
    """The seed of one stream ("process" or "mixup") of one rank at the start of one training
    iteration (an optimiser step, 0-based from the start of the epoch)."""
    return _hash([rng_seed, epoch, rank, *_stream_words(stream), iteration])


def sample_seed(rng_seed: int, epoch: int, stream: str, index: int) -> int:
    """The seed of the Python and numpy generators while dataset item `index` is made for
    a pass of `stream` ("loader", "precise_bn" or "val") over `epoch`; the same on every rank."""
    return _hash([rng_seed, epoch, _SAMPLE_TAG + sum(_stream_words(stream)), index])


def order_seed(rng_seed: int, epoch: int, stream: str) -> int:
    """The seed of the order in which a pass of `stream` visits the dataset in `epoch`:
    the same on every rank, which then take their shares of that one order."""
    return _hash([rng_seed, epoch, _SAMPLE_TAG + _ORDER_WORD + sum(_stream_words(stream))])


def seed_python_and_numpy(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


def seed_all(seed: int) -> None:
    """Seed torch (every device too), numpy and Python's `random` in this process."""
    torch.manual_seed(seed)
    seed_python_and_numpy(seed)
