"""Loader construction: batch sizes, shuffling, worker/epoch/sample seeding, the shard
sampler and the resumable training sampler."""
import random

import numpy as np
import pytest
import torch

from torch.utils.data.distributed import DistributedSampler

from tests.datasets.conftest import make_cfg
from vov3d.datasets.loader import ShardSampler, TrainSampler, construct_loader, set_epoch


@pytest.fixture(scope="module")
def same_video_root(tmp_path_factory, kinetics_root):
    """Eight entries of one video: any difference between items is augmentation."""
    root = tmp_path_factory.mktemp("same")
    for split in ("train", "val", "test"):
        (root / f"{split}.csv").write_text(f"{kinetics_root / 'long.mp4'} 0\n" * 8)
    return root


def epoch_batches(loader, epoch, stream="loader"):
    set_epoch(loader, loader.dataset.cfg.RNG_SEED, epoch, stream)
    return [(index.tolist(), inputs[0]) for inputs, _, index, _ in loader]


def test_workers_differ_and_runs_reproduce(same_video_root):
    cfg = make_cfg(same_video_root, "DATA_LOADER.NUM_WORKERS", "2", "TRAIN.BATCH_SIZE", "4")
    loader = construct_loader(cfg, "train")
    assert loader.batch_size == 4 and loader.drop_last and not loader.pin_memory
    first = epoch_batches(loader, 0)
    assert len(first) == 2
    assert not torch.equal(first[0][1], first[1][1])  # batch 0 from worker 0, batch 1 from worker 1
    again = epoch_batches(construct_loader(cfg, "train"), 0)
    assert all(a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    later = epoch_batches(loader, 1)
    assert not torch.equal(first[0][1], later[0][1])


def test_in_process_loading_is_seeded_per_epoch(same_video_root):
    cfg = make_cfg(same_video_root, "TRAIN.BATCH_SIZE", "8")
    one, two = (epoch_batches(construct_loader(cfg, "train"), 3) for _ in range(2))
    assert one[0][0] == two[0][0] and torch.equal(one[0][1], two[0][1])
    assert sorted(one[0][0]) == list(range(8)) and one[0][0] != list(range(8))  # shuffled


def test_each_stream_and_epoch_has_its_own_order_whatever_ran_before(same_video_root):
    cfg = make_cfg(same_video_root, "TRAIN.BATCH_SIZE", "8")
    fresh = epoch_batches(construct_loader(cfg, "train"), 2, "precise_bn")
    used = construct_loader(cfg, "train")
    epoch_batches(used, 0)  # a train pass and other draws of this process before precise BN
    random.random(), np.random.rand()
    again = epoch_batches(used, 2, "precise_bn")
    assert fresh[0][0] == again[0][0] and torch.equal(fresh[0][1], again[0][1])
    train_order = epoch_batches(construct_loader(cfg, "train"), 2)
    assert train_order[0][0] != fresh[0][0] and not torch.equal(train_order[0][1], fresh[0][1])


def test_eval_loaders_keep_order_and_batch_videos(kinetics_root):
    cfg = make_cfg(kinetics_root, "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.BATCH_SIZE", "12",
                   "TRAIN.BATCH_SIZE", "2")
    val = construct_loader(cfg, "val")
    assert [index.tolist() for _, _, index, _ in val] == [[0, 1], [2]]
    test = construct_loader(cfg, "test")
    batches = list(test)
    assert test.batch_size == 2  # 12 views per process / 6 views per video
    assert batches[0][0][0].shape == (2, 6, 3, 8, 32, 32)
    assert batches[1][2].tolist() == [2] and batches[1][3]["failed"].tolist() == [0]
    assert construct_loader(make_cfg(kinetics_root, "TEST.BATCH_SIZE", "4"), "test").batch_size == 1


def test_train_split_smaller_than_batch_is_an_error(kinetics_root):
    with pytest.raises(ValueError, match="fewer than the per-process batch 4"):
        construct_loader(make_cfg(kinetics_root, "TRAIN.BATCH_SIZE", "4"), "train")


def test_shard_sampler_covers_every_index_once():
    data = list(range(11))
    shards = [list(ShardSampler(data, rank, 4)) for rank in range(4)]
    assert sorted(sum(shards, [])) == data and shards[1] == [1, 5, 9]
    assert [len(ShardSampler(data, rank, 4)) for rank in range(4)] == [3, 3, 3, 2]


# ------------------------------------------------------------------------------------
# The training sampler: one global order, resumable at any prefix
# ------------------------------------------------------------------------------------
def _ranks(size, world, seed=5, start=0):
    samplers = [TrainSampler(size, rank, world, seed) for rank in range(world)]
    for sampler in samplers:
        sampler.start_pass(seed, start)
    return [list(s) for s in samplers]


@pytest.mark.parametrize("size,world", [(11, 1), (11, 3), (16, 4), (2, 3)])
def test_train_sampler_deals_as_distributed_sampler_and_resumes_exactly(size, world):
    whole = _ranks(size, world)
    for rank in range(world):
        reference = DistributedSampler(list(range(size)), num_replicas=world, rank=rank, shuffle=True, seed=5)
        assert whole[rank] == list(reference)  # the order DDP users know, for the same seed
        assert len(TrainSampler(size, rank, world, 5)) == len(whole[rank])
    for done in range(1, len(whole[0]) + 1):  # after `done` samples per rank, i.e. done * world in all
        resumed = _ranks(size, world, start=done * world)
        assert resumed == [ranks[done:] for ranks in whole]
        assert [len(TrainSampler(size, r, world, 5)) for r in range(world)] == [len(whole[0])] * world  # fresh pass


def test_after_a_world_size_change_the_rest_of_the_epoch_is_dealt_out_again():
    order = TrainSampler(20, 0, 2, 9).global_order()
    consumed = 6  # three iterations of one sample per rank on 2 ranks
    resumed = _ranks(20, 3, seed=9, start=consumed)
    assert len({len(r) for r in resumed}) == 1  # every rank the same number of batches
    dealt = [i for batch in zip(*resumed) for i in batch]
    assert dealt[:14] == order[consumed:] and len(dealt) == 15  # padded with the head of the rest
    sampler = TrainSampler(20, 2, 3, 9)
    sampler.start_pass(9, consumed)
    assert len(sampler) == len(resumed[2]) == 5
    with pytest.raises(ValueError, match="start must be >= 0"):
        sampler.start_pass(9, -1)
    with pytest.raises(ValueError, match=r"rank 3 is outside \[0, 2\]"):
        TrainSampler(20, 3, 3, 9)


def test_a_pass_resumed_mid_epoch_gives_the_remaining_batches_whatever_the_workers(same_video_root):
    cfg = make_cfg(same_video_root, "DATA_LOADER.NUM_WORKERS", "2", "TRAIN.BATCH_SIZE", "2")
    whole = epoch_batches(construct_loader(cfg, "train"), 4)
    loader = construct_loader(cfg, "train")
    set_epoch(loader, cfg.RNG_SEED, 4, start=2)  # one batch of 2 done; the workers now serve other batches
    rest = [(index.tolist(), inputs[0]) for inputs, _, index, _ in loader]
    assert len(whole) == 4 and len(rest) == 3
    assert all(a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in zip(whole[1:], rest))
    with pytest.raises(ValueError, match="cannot start a pass at sample 2"):
        set_epoch(construct_loader(cfg, "val"), cfg.RNG_SEED, 4, start=2)
