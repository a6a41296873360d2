"""Multigrid training: PySlowFast's schedules, its evaluation epochs, the short cycle's batch
sampler, the shapes the models take, and training runs (in memory) with both cycles."""
import json
import os

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tests.conftest import FIXTURES_DIR, metrics_records
from tests.engine.tiny_parts import NUM_CLASSES, fake_loader, make_fake_trainer_class, tiny_cfg
from vov3d.config import ConfigError, get_cfg
from vov3d.datasets.clip_dataset import short_cycle_crop
from vov3d.datasets.loader import TrainSampler
from vov3d.datasets.short_cycle import ShortCycleBatchSampler, short_cycle_batch_sizes
from vov3d.engine.multigrid import Multigrid
from vov3d.engine.runtime import setup_process
from vov3d.utils import checkpoint_io as cu
from vov3d.utils.processes import per_process_batch

with open(os.path.join(FIXTURES_DIR, "multigrid_schedules.json")) as f:
    SCHEDULES = {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def _reference_cfg(settings):
    cfg = get_cfg()
    cfg.SOLVER.LR_POLICY = "steps_with_relative_lrs"
    for key, value in settings.items():
        group, name = key.split(".")
        cfg[group][name] = value
    return cfg


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_epochs_shapes_and_lr_are_pyslowfasts(name):
    expected = SCHEDULES[name]
    cfg = _reference_cfg(expected["config"])
    multigrid = Multigrid(cfg)
    got = [[s.step_index, list(s.shape), s.end_epoch] for s in multigrid.schedule]
    assert got == expected["schedule"]
    assert list(cfg.SOLVER.STEPS) == expected["steps"] and cfg.SOLVER.MAX_EPOCH == expected["max_epoch"]
    assert cfg.SOLVER.LRS == pytest.approx(expected["lrs"])
    assert (cfg.MULTIGRID.DEFAULT_B, cfg.MULTIGRID.DEFAULT_T, cfg.MULTIGRID.DEFAULT_S) == (
        expected["config"]["TRAIN.BATCH_SIZE"], expected["config"]["DATA.NUM_FRAMES"],
        expected["config"]["DATA.TRAIN_CROP_SIZE"])
    # Each stage's loader config: the stage's batch, frames, crop and longest sampling rate.
    for stage in multigrid.schedule:
        stage_cfg = multigrid.epoch_cfg(stage.end_epoch - 1)
        b, t, s = stage.shape
        assert (stage_cfg.TRAIN.BATCH_SIZE, stage_cfg.DATA.NUM_FRAMES, stage_cfg.DATA.TRAIN_CROP_SIZE) == (
            b * cfg.MULTIGRID.DEFAULT_B, t, s)
        assert stage_cfg.MULTIGRID.LONG_CYCLE_SAMPLING_RATE == cfg.DATA.SAMPLING_RATE * (cfg.MULTIGRID.DEFAULT_T // t)
    assert "long cycle" in multigrid.describe() and f"{expected['max_epoch']}" in multigrid.describe()


def test_evaluation_and_checkpoint_epochs_follow_eval_freq():
    cfg = _reference_cfg(SCHEDULES["slowfast_8x8_r50_stepwise_multigrid"]["config"])
    multigrid = Multigrid(cfg)
    evals = [e for e in range(cfg.SOLVER.MAX_EPOCH) if multigrid.is_eval_epoch(e)]
    # First stage [0, 73): period 73 // 3 + 1 = 25, counted back from its last epoch 72.
    assert [e for e in evals if e < 73] == [22, 47, 72]
    assert [e for e in evals if 329 <= e] == [337, 347, 357]  # the fine-tuning stage, period 10
    assert all(multigrid.is_checkpoint_epoch(e) == multigrid.is_eval_epoch(e) for e in range(358))


def test_short_cycle_alone_stretches_the_schedule():
    cfg = _reference_cfg({"SOLVER.STEPS": [0, 40, 60], "SOLVER.MAX_EPOCH": 70, "MULTIGRID.SHORT_CYCLE": True,
                          "TRAIN.EVAL_PERIOD": 10})
    multigrid = Multigrid(cfg)
    assert multigrid.schedule is None and list(cfg.SOLVER.STEPS) == [0, 60, 90] and cfg.SOLVER.MAX_EPOCH == 105
    assert multigrid.shape_at(50) == (1, cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE)
    assert [e for e in range(105) if multigrid.is_eval_epoch(e)] == [9, 19, 29, 39, 49, 59, 69, 79, 89, 99, 104]


def test_short_cycle_batch_sizes_follow_the_crop_area():
    cfg = get_cfg()
    cfg.MULTIGRID.DEFAULT_S, cfg.DATA.TRAIN_CROP_SIZE = 224, 224
    assert short_cycle_batch_sizes(cfg, 8) == [32, 16, 8]
    cfg.DATA.TRAIN_CROP_SIZE = 158  # a long-cycle stage's crop
    assert short_cycle_batch_sizes(cfg, 8) == [16, 8, 8]
    assert [short_cycle_crop(cfg, step) for step in (0, 1, 2, None)] == [112, 158, 158, 158]


def test_short_cycle_batches_cover_whole_batches_and_resume_mid_epoch():
    sampler = TrainSampler(50, 0, 1, order_seed=3)
    batches = list(ShortCycleBatchSampler(sampler, [12, 6, 3]))
    assert [len(b) for b in batches] == [12, 6, 3, 12, 6, 3]  # 42 of 50: the next 12 would not fit
    assert len(ShortCycleBatchSampler(sampler, [12, 6, 3])) == 6
    assert [step for b in batches for _, step in b[:1]] == [0, 1, 2, 0, 1, 2]
    assert [i for b in batches for i, _ in b] == sampler.global_order()[:42]
    sampler.start_pass(3, start=21)  # stopped after the first cycle
    resumed = list(ShortCycleBatchSampler(sampler, [12, 6, 3]))
    assert resumed == batches[3:]


class ShapedClips(Dataset):
    """Clips whose label (index mod 4) brightens channel 0, 1, 2 or none, made at the requested shape:
    (frames, crop) of the loader's config, the crop of the short-cycle step. `first`: the
    index of the first clip (validation clips are others than the training clips)."""

    def __init__(self, cfg, n, first=0):
        self.cfg, self.n, self.first = cfg, n, first

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        index, step = item if isinstance(item, tuple) else (item, None)
        crop = short_cycle_crop(self.cfg, step)
        g = torch.Generator().manual_seed(self.first + index)
        clip = 20 * torch.randn(3, self.cfg.DATA.NUM_FRAMES, crop, crop, generator=g) + 100
        label = index % NUM_CLASSES
        if label < 3:
            clip[label] += 60
        return [clip.round().clamp(0, 255).to(torch.uint8)], index % NUM_CLASSES, index, {"num_failures": 0}


def _multigrid_trainer_class():
    base = make_fake_trainer_class()

    class MultigridTrainer(base):
        def train_loader_of(self, epoch):
            cfg = self.cfg if self.multigrid is None else self.multigrid.epoch_cfg(epoch)
            if self.multigrid is not None:
                self.loader_shape = self.multigrid.shape_at(epoch)
            sampler = TrainSampler(64, 0, 1, order_seed=0)
            dataset = ShapedClips(cfg, 64)
            batch = per_process_batch(cfg, "train")
            if cfg.MULTIGRID.SHORT_CYCLE:
                return DataLoader(dataset, batch_sampler=ShortCycleBatchSampler(
                    sampler, short_cycle_batch_sizes(cfg, batch)))
            return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True)

        def build_loaders(self):
            self.train_loader = self.train_loader_of(0)
            self.val_loader = DataLoader(ShapedClips(self.cfg, 64, first=1000), batch_size=16)
            self.precise_loader = fake_loader(16, 4, shuffle=True)

    return MultigridTrainer


MULTIGRID = ("MULTIGRID.LONG_CYCLE", "True", "MULTIGRID.SHORT_CYCLE", "True", "MULTIGRID.BN_BASE_SIZE", "2",
             "MULTIGRID.LONG_CYCLE_FACTORS", "[(0.5, 0.7071), (1, 1)]", "MULTIGRID.EPOCH_FACTOR", "1.0",
             "SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[0, 4]", "SOLVER.LRS", "[1, 0.1]",
             "SOLVER.MAX_EPOCH", "5", "SOLVER.BASE_LR", "0.05", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE",
             "8", "DATA.TEST_CROP_SIZE", "8", "TRAIN.BATCH_SIZE", "2")


def _fit(cfg, trainer_class):
    setup_process(cfg)
    trainer = trainer_class(cfg)
    trainer.fit()
    return trainer


def test_training_with_both_cycles_changes_shapes_and_learns_as_plain_training(tmp_path, caplog):
    trainer_class = _multigrid_trainer_class()
    plain_args = [a for pair in zip(MULTIGRID[::2], MULTIGRID[1::2]) if not pair[0].startswith("MULTIGRID")
                  for a in pair]
    _fit(tiny_cfg(tmp_path / "plain", *plain_args), trainer_class)  # the same base schedule, one shape
    seen = []
    cfg = tiny_cfg(tmp_path / "multigrid", *MULTIGRID)
    setup_process(cfg)
    trainer = trainer_class(cfg)
    model_forward = trainer.model.forward
    trainer.model.forward = lambda x: (seen.append(tuple(x[0].shape)), model_forward(x))[1]
    trainer.fit()
    schedule = [(s.step_index, s.shape, s.end_epoch) for s in trainer.multigrid.schedule]
    assert schedule == [(0, (4, 2, 6), 3), (0, (1, 4, 8), 4), (1, (1, 4, 8), 5)]
    train_shapes = [s for s in seen if s != (16, 3, 4, 8, 8)]  # validation: batches of 16 at the base shape
    # Stage (4 x batch 2, 2 frames, 6 px): short-cycle crops 4 (0.5 x 8) and 6 (0.707 x 8) with batches
    # 8 x 2 and 8, then the stage crop; the base stage (batch 2, 4 frames, 8 px): crops 4, 6, 8, batches 8, 4, 2.
    assert set(train_shapes) == {(16, 3, 2, 4, 4), (8, 3, 2, 6, 6), (8, 3, 4, 4, 4), (4, 3, 4, 6, 6),
                                 (2, 3, 4, 8, 8)}
    assert train_shapes[:3] == [(16, 3, 2, 4, 4), (8, 3, 2, 6, 6), (8, 3, 2, 6, 6)]
    assert isinstance(trainer.model.bn, torch.nn.BatchNorm3d) and type(trainer.model.bn).__name__ == "SubBatchNorm3d"
    final = [metrics_records(o, "val_epoch")[-1]["top1_err"] for o in (tmp_path / "plain", tmp_path / "multigrid")]
    assert final[0] <= 5.0 and final[1] <= 5.0  # both learn the rule (chance: 75 %) on 64 other clips
    log = open(tmp_path / "multigrid" / "stdout.log").read()
    assert "long cycle: step  epochs" in log and "sub-batches of MULTIGRID.BN_BASE_SIZE 2 clips" in log


def test_a_run_resumed_at_a_stage_boundary_repeats_the_uninterrupted_run(tmp_path):
    trainer_class = _multigrid_trainer_class()
    recipe = MULTIGRID + ("AUG.ENABLE", "True", "AUG.RE_PROB", "0.5", "MODEL.EMA.ENABLE", "True")
    _fit(tiny_cfg(tmp_path / "whole", *recipe), trainer_class)
    cfg = tiny_cfg(tmp_path / "resumed", *recipe)
    setup_process(cfg)
    trainer = trainer_class(cfg)
    first_stage_end = trainer.multigrid.schedule[0].end_epoch
    save = trainer.checkpointer.save

    class Killed(Exception):
        pass

    def save_then_stop(epoch, step=None):
        save(epoch, step)
        if epoch == first_stage_end - 1:
            raise Killed
    trainer.checkpointer.save = save_then_stop
    with pytest.raises(Killed):
        trainer.fit()
    assert _fit(tiny_cfg(tmp_path / "resumed", *recipe), trainer_class).start_epoch == first_stage_end
    whole, resumed = (torch.load(cu.list_checkpoints(str(tmp_path / n))[-1], weights_only=True)
                      for n in ("whole", "resumed"))
    for entry in ("model_state", "ema_state"):
        assert all(torch.equal(v, resumed[entry][k]) for k, v in whole[entry].items()), entry
    losses = [[r["loss"] for r in metrics_records(tmp_path / n, "train_iter")] for n in ("whole", "resumed")]
    assert losses[0] == losses[1]


def test_multigrid_config_errors_name_the_key():
    base = ["NUM_GPUS", "0", "MULTIGRID.LONG_CYCLE", "True"]
    from vov3d.config import assert_and_infer_cfg, merge_overrides

    def validated(*opts):
        cfg = get_cfg()
        merge_overrides(cfg, base + list(opts))
        return assert_and_infer_cfg(cfg)
    with pytest.raises(ConfigError, match="'MULTIGRID.LONG_CYCLE'.*steps_with_relative_lrs"):
        validated()
    steps = ["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[0, 10]", "SOLVER.LRS", "[1, 0.1]"]
    with pytest.raises(ConfigError, match="'MULTIGRID.LONG_CYCLE_FACTORS'"):
        validated(*steps, "MULTIGRID.LONG_CYCLE_FACTORS", "[(0.01, 1.0)]", "DATA.NUM_FRAMES", "16")
    with pytest.raises(ConfigError, match="'MULTIGRID.SHORT_CYCLE_FACTORS'"):
        validated(*steps, "MULTIGRID.SHORT_CYCLE_FACTORS", "[0.5]")
    with pytest.raises(ConfigError, match="'BN.NORM_TYPE'"):
        validated(*steps, "BN.NORM_TYPE", "sync_batchnorm")
    assert validated(*steps).MULTIGRID.LONG_CYCLE


def test_schedule_flops_weigh_every_epochs_shapes_by_their_share_of_clips(tmp_path):
    from tests.engine.tiny_parts import TinyTestNet
    from vov3d.engine.multigrid import schedule_flops

    cfg = tiny_cfg(tmp_path, *MULTIGRID)
    cfg.defrost()
    multigrid = Multigrid(cfg)

    def flops(frames, crop):  # TinyTestNet: a 1x1x1 conv 3 -> 6 per pixel and a 6 -> 4 linear layer
        return 18 * frames * crop * crop + 24
    # Epochs 0-2 at (2 frames, crop 6): short-cycle batches 16, 8, 8 at crops 4, 6, 6;
    # epochs 3-4 at (4, 8): batches 8, 4, 2 at crops 4, 6, 8.
    first = (16 * flops(2, 4) + 8 * flops(2, 6) + 8 * flops(2, 6)) / 32
    last = (8 * flops(4, 4) + 4 * flops(4, 6) + 2 * flops(4, 8)) / 14
    total, plain = schedule_flops(multigrid, TinyTestNet(cfg))
    assert total == pytest.approx(3 * first + 2 * last) and plain == 5 * flops(4, 8)
