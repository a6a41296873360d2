"""Training items with AUG.ENABLE: NUM_SAMPLE augmented copies of one decode, flattened
into the batch by the loader; the multigrid short cycle's crop per item; the config's
checks of the AUG keys."""
import pytest
import torch

from tests.datasets.conftest import make_cfg
from vov3d.config import ConfigError
from vov3d.datasets.clip_dataset import collate_samples
from vov3d.datasets.kinetics import Kinetics
from vov3d.datasets.loader import construct_loader, set_epoch


def _counting_decodes(dataset, monkeypatch):
    calls = []
    read = dataset._read_clips

    def counted(index, clips):
        calls.append((index, list(clips)))
        return read(index, clips)
    monkeypatch.setattr(dataset, "_read_clips", counted)
    return calls


def test_num_sample_two_decodes_once_and_augments_twice(kinetics_root, monkeypatch):
    cfg = make_cfg(kinetics_root, "AUG.ENABLE", "True", "AUG.NUM_SAMPLE", "2", "AUG.AA_TYPE", "rand-m9-n3-mstd0.5")
    dataset = Kinetics(cfg, "train")
    calls = _counting_decodes(dataset, monkeypatch)
    dataset.seed_samples(0, 0, "loader")
    clips, labels, indices, meta = dataset[0]
    assert len(calls) == 1 and clips[0].shape == (2, 3, 8, 32, 32) and clips[0].dtype == torch.uint8
    assert labels.tolist() == [0, 0] and indices.tolist() == [0, 0] and meta == {"num_failures": 0}
    assert not torch.equal(clips[0][0], clips[0][1])  # two draws of crop, flip and RandAugment
    again = dataset[0]
    assert torch.equal(again[0][0], clips[0])  # the item's seed fixes both copies


def test_the_loader_puts_the_copies_of_a_video_side_by_side(kinetics_root):
    cfg = make_cfg(kinetics_root, "AUG.ENABLE", "True", "AUG.NUM_SAMPLE", "3", "TRAIN.BATCH_SIZE", "2")
    loader = construct_loader(cfg, "train")
    set_epoch(loader, 0, 0)
    inputs, labels, indices, meta = next(iter(loader))
    assert inputs[0].shape == (6, 3, 8, 32, 32)
    assert labels.tolist() == [labels[0]] * 3 + [labels[3]] * 3 and indices[:3].tolist() == [indices[0]] * 3
    assert meta["num_failures"].shape == (2,)  # one count per decoded video


def test_collate_samples_flattens_items():
    items = [([torch.full((2, 3, 1, 2, 2), i, dtype=torch.uint8)], torch.tensor([i, i]), torch.tensor([i, i]),
              {"num_failures": 0}) for i in range(3)]
    inputs, labels, indices, _ = collate_samples(items)
    assert inputs[0].shape == (6, 3, 1, 2, 2) and inputs[0][:, 0, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert labels.tolist() == [0, 0, 1, 1, 2, 2] == indices.tolist()


def test_without_aug_items_are_as_before_and_val_is_never_augmented(kinetics_root):
    plain = Kinetics(make_cfg(kinetics_root), "train")
    plain.seed_samples(0, 0, "loader")
    augmented = Kinetics(make_cfg(kinetics_root, "AUG.ENABLE", "True"), "val")
    assert plain.augment is None and augmented.augment is None and augmented.samples_per_item == 1
    clip, label, index, _ = plain[1]
    assert clip[0].shape == (3, 8, 32, 32) and label == 1 and index == 1


def test_short_cycle_steps_crop_smaller_and_keep_the_frame_share(kinetics_root):
    cfg = make_cfg(kinetics_root, "MULTIGRID.DEFAULT_S", "32", "DATA.TRAIN_JITTER_SCALES", "[48, 48]")
    dataset = Kinetics(cfg, "train")
    dataset.seed_samples(0, 0, "loader")
    shapes = [dataset[(0, step)][0][0].shape[-1] for step in (0, 1, 2)]
    assert shapes == [16, 23, 32]  # 0.5 and 0.707 of DEFAULT_S, then the full crop


@pytest.mark.parametrize("opts,message", [
    (["AUG.AA_TYPE", "rand-m9-q2"], "'AUG.AA_TYPE'.*'q2'"),
    (["AUG.NUM_SAMPLE", "0"], "'AUG.NUM_SAMPLE'"),
    (["AUG.INTERPOLATION", "lanczos"], "'AUG.INTERPOLATION'"),
    (["AUG.RE_PROB", "1.5"], "'AUG.RE_PROB'"),
    (["AUG.RE_MODE", "noise"], "'AUG.RE_MODE'"),
    (["AUG.RE_COUNT", "0"], "'AUG.RE_COUNT'"),
    (["AUG.RE_SPLIT", "True"], "'AUG.RE_SPLIT'.*NUM_SAMPLE > 1"),
    (["AUG.ENABLE", "True", "AUG.NUM_SAMPLE", "2", "MIXUP.ENABLE", "True"], "'AUG.NUM_SAMPLE'.*MIXUP.ENABLE"),
])
def test_bad_aug_values_are_refused_before_work(kinetics_root, opts, message):
    with pytest.raises(ConfigError, match=message):
        make_cfg(kinetics_root, *opts)
