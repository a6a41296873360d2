"""One function gives every per-epoch seed; the values are those earlier runs used."""
import random

import numpy as np
import pytest
import torch

from vov3d.utils.seeding import STREAMS, epoch_seed, iteration_seed, order_seed, sample_seed, seed_all


def test_loader_seeds_hash_three_words_and_the_others_four():
    # The words earlier versions hashed: resumed runs of older checkpoints keep their streams.
    def legacy(*words):
        return int(np.random.SeedSequence(list(words)).generate_state(1)[0])

    assert epoch_seed(7, 3, 1, "loader") == legacy(7, 3, 1)
    assert epoch_seed(7, 3, 1, "process") == legacy(7, 3, 1, 1)
    assert epoch_seed(7, 3, 1, "precise_bn") == legacy(7, 3, 1, 2)


def test_every_word_changes_the_seed():
    seeds = {epoch_seed(s, e, r, stream) for s in (0, 1) for e in (0, 1) for r in (0, 1) for stream in STREAMS}
    assert len(seeds) == 2 * 2 * 2 * len(STREAMS)
    assert all(0 <= s < 2 ** 32 for s in seeds)


def test_unknown_stream_is_named():
    with pytest.raises(ValueError, match="unknown random stream 'dropout'; expected one of loader, process"):
        epoch_seed(0, 0, 0, "dropout")


def test_seed_all_reproduces_torch_numpy_and_python():
    def draws():
        return torch.rand(2).tolist(), np.random.rand(), random.random()

    seed_all(2 ** 32 + 5)  # numpy takes the seed modulo 2 ** 32
    first = draws()
    seed_all(2 ** 32 + 5)
    assert draws() == first
    seed_all(6)
    assert draws() != first


def test_step_seeds_differ_from_every_epoch_seed_and_from_each_other():
    epoch_seeds = {epoch_seed(0, e, r, stream) for e in range(3) for r in range(3) for stream in STREAMS}
    iteration_seeds = {iteration_seed(0, e, r, i, stream) for e in range(3) for r in range(3) for i in range(4)
                       for stream in ("process", "mixup")}
    sample_seeds = {sample_seed(0, e, stream, i) for e in range(3) for stream in ("loader", "precise_bn", "val")
                    for i in range(4)}
    order_seeds = {order_seed(0, e, stream) for e in range(3) for stream in ("loader", "precise_bn")}
    assert len(iteration_seeds) == 72 and len(sample_seeds) == 36 and len(order_seeds) == 6
    assert not (epoch_seeds & iteration_seeds or epoch_seeds & sample_seeds or iteration_seeds & sample_seeds
                or order_seeds & (epoch_seeds | iteration_seeds | sample_seeds))
    # A sample's seed is the same on every rank; an iteration's is not.
    assert iteration_seed(0, 1, 0, 2) != iteration_seed(0, 1, 1, 2)
    assert sample_seed(7, 2, "loader", 5) == sample_seed(7, 2, "loader", 5) != sample_seed(8, 2, "loader", 5)
    with pytest.raises(ValueError, match="unknown random stream 'dropout'"):
        sample_seed(0, 0, "dropout", 0)
