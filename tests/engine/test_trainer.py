"""The training loop: epochs, checkpoints, logs, precise BN, diverging losses; and resumes
after broken or foreign checkpoints (the killed-and-restarted runs are in
tests/tools/test_run_net_restarts.py)."""
import json
import os

import pytest
import torch

from tests.conftest import metrics_records
from tests.engine.tiny_parts import (ClipDataset, TinyTestNet, fit_in_memory, make_fake_trainer_class,
                                     tiny_cfg)
from tests.utils import broken_files as broken
from vov3d.engine import train as train_module
from vov3d.engine.checkpointer import Checkpointer, Loaded, NoCheckpointError
from vov3d.engine.input_step import InputStep
from vov3d.engine.meters import VideoEnsembleMeter
from vov3d.engine.runtime import setup_process
from vov3d.engine.test import run_views, save_results
from vov3d.engine.train import LossDivergedError
from vov3d.utils import checkpoint_io as cu

InMemoryTrainer = make_fake_trainer_class()


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _log_text(out):
    with open(os.path.join(out, "stdout.log")) as f:
        return f.read()


def test_training_epochs_checkpoints_logs_and_precise_bn(tmp_path):
    cfg = tiny_cfg(tmp_path, "BN.USE_PRECISE_STATS", "True", "TRAIN.CHECKPOINT_PERIOD", "2",
                   "TRAIN.EVAL_PERIOD", "5", "SOLVER.MAX_EPOCH", "3", "TENSORBOARD.ENABLE", "True")
    trainer = fit_in_memory(cfg)
    events = os.listdir(os.path.join(tmp_path, "runs-kinetics"))
    assert len(events) == 1 and events[0].startswith("events.out.tfevents")
    names = [os.path.basename(p) for p in cu.list_checkpoints(str(tmp_path))]
    assert names == ["checkpoint_epoch_00002.pyth", "checkpoint_epoch_00003.pyth"]
    records = _records(tmp_path)
    kinds = [r["_type"] for r in records]
    assert kinds.count("train_iter") == 12 and kinds.count("train_epoch") == 3
    assert kinds.count("val_epoch") == 1  # only the last epoch (EVAL_PERIOD 5)
    first = next(r for r in records if r["_type"] == "train_iter")
    assert first["epoch"] == "1/3" and first["iter"] == "1/4" and first["lr"] == pytest.approx(0.1)
    assert {"dt", "dt_data", "dt_net", "eta", "gpu_mem", "loss", "top1_err", "top5_err"} <= set(first)
    val = next(r for r in records if r["_type"] == "val_epoch")
    assert val["samples"] == 8 and 0.0 <= val["top1_err"] <= 100.0

    # Precise BN: the running mean is the exact mean of the BN input over all 16 clips, as
    # the input step normalises them.
    model = trainer.model
    clips = InputStep(cfg, torch.device("cpu")).clips(ClipDataset(16).clips)
    with torch.no_grad():
        feats = model.conv(clips)
    assert torch.allclose(model.bn.running_mean, feats.mean(dim=(0, 2, 3, 4)), atol=1e-5)
    stored = torch.load(cu.list_checkpoints(str(tmp_path))[-1], weights_only=True)["model_state"]
    assert torch.equal(stored["bn.running_mean"], model.bn.running_mean)


def test_resume_continues_from_the_newest_checkpoint(tmp_path):
    fit_in_memory(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2"))
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FILE_PATH", "/nonexistent.pth")
    trainer = fit_in_memory(cfg)
    assert trainer.start_epoch == 2
    log = _log_text(tmp_path)
    assert "Weights source: auto-resume from" in log and "is not used: auto-resume takes precedence" in log
    assert len(cu.list_checkpoints(str(tmp_path))) == 3


def test_resume_refuses_a_different_experiment(tmp_path):
    fit_in_memory(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"))
    with pytest.raises(cu.CheckpointError, match=r"another experiment \(MODEL\.NUM_CLASSES: stored 4, current 5\)"):
        fit_in_memory(tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "5"))


def test_nan_loss_stops_with_epoch_iteration_and_lr_and_saves_nothing_after(tmp_path, monkeypatch):
    monkeypatch.setattr(TinyTestNet, "nan_at_call", 5)  # epoch 2, iteration 2 (4 iterations/epoch)
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "3")
    with pytest.raises(LossDivergedError, match=r"epoch 2/3, iteration 2/4, lr 0\.0\d+: loss nan"):
        fit_in_memory(cfg)
    names = [os.path.basename(p) for p in cu.list_checkpoints(str(tmp_path))]
    assert names == ["checkpoint_epoch_00001.pyth"]


def test_loss_explosion_factor_and_cpu_amp_guard(tmp_path):
    cfg = tiny_cfg(tmp_path, "TRAIN.KILL_LOSS_EXPLOSION_FACTOR", "2.0", "TRAIN.MIXED_PRECISION", "True")
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    assert not trainer.amp and "MIXED_PRECISION is ignored on the CPU" in _log_text(tmp_path)
    for _ in range(5):
        trainer._check_loss(torch.tensor(1.0), 0, 0, 0.1)
    with pytest.raises(LossDivergedError, match=r"> 2 x the mean of the previous 5"):
        trainer._check_loss(torch.tensor(2.5), 0, 5, 0.1)


def _test_batches(videos, k, failed=(), frames=None):
    ds = ClipDataset(len(videos) * k, seed=3)
    batches = []
    for start in range(0, len(videos), 2):
        idx = torch.tensor(videos[start:start + 2])
        views = torch.stack([ds.clips[i * k:(i + 1) * k] for i in idx.tolist()])
        bad = torch.tensor([int(i in failed) for i in idx.tolist()])
        views[bad.bool()] = 0
        meta = {"failed": bad}
        if frames is not None:
            meta["video_frames"] = torch.tensor([frames[i] for i in idx.tolist()])
        batches.append(([views], idx % 4, idx, meta))
    return ds, batches


def test_multi_view_forward_chunks_ensembles_and_saves(tmp_path):
    cfg = tiny_cfg(tmp_path, "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3",
                   "TEST.BATCH_SIZE", "4", "TEST.ENSEMBLE_METHOD", "max")
    model = TinyTestNet(cfg).eval()
    ds, batches = _test_batches([0, 1, 2, 3, 4], k=6, failed={3})
    results = run_views(cfg, model, batches)
    meter = VideoEnsembleMeter(5, 4)
    for r in results:
        meter.add(*r[:4])
        assert r[4].tolist() == [-1] * len(r[0])  # the loader did not say how long the videos are
    with torch.no_grad():  # video 1, all 6 views normalised and forwarded at once
        expected = model(InputStep(cfg, torch.device("cpu")).clips(ds.clips[6:12])).max(dim=0).values
    assert torch.allclose(meter.preds[1], expected, atol=1e-6)
    assert meter.failed_indices() == [3] and torch.equal(meter.preds[3], torch.zeros(4))
    metrics = meter.finalize()
    assert metrics["num_videos"] == 4

    out = os.path.join(tmp_path, "preds.pkl")
    save_results(out, meter, ds, {"top1_acc": "1.00"})
    import pickle
    with open(out, "rb") as f:
        preds, labels = pickle.load(f)
    assert preds.shape == (5, 4) and labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 3, 0]
    with open(os.path.join(tmp_path, "preds.json")) as f:
        report = json.load(f)
    assert report["failed_videos"] == ["video_003.mp4"]
    assert report["videos"][1]["top5_classes"][0] == int(expected.argmax())
    assert report["too_short_videos"] == [] and report["videos"][1]["video_frames"] is None


def test_videos_of_one_frame_are_flagged_in_the_results(tmp_path):
    cfg = tiny_cfg(tmp_path, "TEST.BATCH_SIZE", "2")
    frames = {0: 300, 1: 1, 2: 0, 3: 2}  # video 2 failed to load: not "too short"
    _, batches = _test_batches([0, 1, 2, 3], k=1, failed={2}, frames=frames)
    meter = VideoEnsembleMeter(4, 4)
    video_frames = {}
    for indices, preds, labels, failed, counts, _ in run_views(cfg, TinyTestNet(cfg).eval(), batches):
        meter.add(indices, preds, labels, failed)
        video_frames.update(zip(indices.tolist(), counts.tolist()))
    assert video_frames == frames
    out = tmp_path / "preds.pkl"
    save_results(str(out), meter, ClipDataset(4), {}, video_frames)
    report = json.loads((tmp_path / "preds.json").read_text())
    assert [(v["video_frames"], v["too_short"]) for v in report["videos"]] == [
        (300, False), (1, True), (None, False), (2, False)]
    assert report["too_short_videos"] == ["video_001.mp4"] and report["failed_videos"] == ["video_002.mp4"]


# ------------------------------------------------------------------------------------
# Resume after a broken newest checkpoint: warn, fall back, keep the file
# ------------------------------------------------------------------------------------
def _ckpt(out, epoch):
    return cu.checkpoint_path(str(out), epoch - 1)  # 1-based epoch as in the file name


def _names(out):
    return sorted(os.listdir(cu.checkpoint_dir(str(out))))


def _test_load(cfg):
    return Checkpointer(cfg, TinyTestNet(cfg)).resume_or_load("test")


@pytest.mark.parametrize("breakage", [broken.truncate, broken.empty, broken.random_bytes, broken.flip_tensor_bytes],
                         ids=["truncated", "zero_bytes", "random_bytes", "flipped_bytes"])
def test_broken_newest_checkpoint_falls_back_and_is_left_in_place(tmp_path, breakage):
    fit_in_memory(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "3"))
    newest = _ckpt(tmp_path, 3)
    # A complete-looking leftover of a killed save of a later epoch: removed at the start, never loaded.
    leftover = os.path.join(cu.checkpoint_dir(str(tmp_path)), ".checkpoint_epoch_00004.pyth.k2x9q.tmp")
    with open(newest, "rb") as src, open(leftover, "wb") as dst:
        dst.write(src.read())
    leftover_size = os.path.getsize(leftover)
    breakage(newest)
    broken_bytes = open(newest, "rb").read()

    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "4")
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    assert trainer.start_epoch == 2  # resumed from epoch 2, the newest readable file
    log = _log_text(tmp_path)
    assert f"Skipping unusable checkpoint: checkpoint '{newest}'" in log
    assert f"Using '{_ckpt(tmp_path, 2)}', the newest readable checkpoint" in log
    assert f"Removed '{leftover}' ({leftover_size} bytes), the temporary file of an interrupted save." in log
    assert open(newest, "rb").read() == broken_bytes and not os.path.exists(leftover)
    assert _test_load(cfg) == Loaded(_ckpt(tmp_path, 2), "checkpoint", 1)  # the test phase falls back alike

    trainer.fit()  # epochs 3 and 4; epoch 3 is written again, complete
    assert torch.load(newest, weights_only=True)["epoch"] == 2
    assert cu.newest_readable(str(tmp_path))[0] == _ckpt(tmp_path, 4)


def test_every_checkpoint_broken_refuses_to_start_over_them(tmp_path):
    fit_in_memory(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2"))
    for epoch in (1, 2):
        broken.truncate(_ckpt(tmp_path, epoch))
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2")
    setup_process(cfg)
    with pytest.raises(cu.CheckpointError, match=r"found 2 checkpoint\(s\) .* but none can be read") as err:
        InMemoryTrainer(cfg)
    assert _ckpt(tmp_path, 2) in str(err.value) and "AUTO_RESUME False" not in str(err.value)
    with pytest.raises(NoCheckpointError, match="holds 2 checkpoint\\(s\\), none readable"):
        _test_load(cfg)


# ------------------------------------------------------------------------------------
# Auto-resume of another model: one clear error, nothing loaded
# ------------------------------------------------------------------------------------
def test_resume_of_another_class_count_is_blamed_on_the_output_dir(tmp_path):
    fit_in_memory(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"))
    cfg = tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "5")
    setup_process(cfg)
    with pytest.raises(cu.CheckpointError, match=r"MODEL\.NUM_CLASSES: stored 4, current 5\)\. Use a new OUTPUT_DIR"):
        InMemoryTrainer(cfg)


def _warnings_logged(out):
    return [line for line in _log_text(out).splitlines() if "][WARNING]" in line or "][ERROR]" in line]


def test_auto_resume_into_another_models_output_dir_stops_with_one_error(tmp_path):
    fit_in_memory(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"))
    path = _ckpt(tmp_path, 1)
    before_warnings = _warnings_logged(tmp_path)
    cfg = tiny_cfg(tmp_path, "MODEL.MODEL_NAME", "OtherTinyNet")
    setup_process(cfg)
    with pytest.raises(cu.CheckpointError) as err:
        InMemoryTrainer(cfg)
    assert str(err.value) == (
        f"cannot auto-resume from '{path}': OUTPUT_DIR {tmp_path} holds the checkpoints of another experiment "
        "(MODEL.MODEL_NAME: stored 'TinyTestNet', current 'OtherTinyNet'). Use a new OUTPUT_DIR for this "
        "run, or move those checkpoints away.")
    # No per-tensor (or any other) warning on the way to the error.
    assert _warnings_logged(tmp_path) == before_warnings

    # Names are looked up ignoring case: the same model spelled otherwise resumes.
    same = tiny_cfg(tmp_path, "MODEL.MODEL_NAME", "tinytestnet", "SOLVER.MAX_EPOCH", "1")
    setup_process(same)
    assert InMemoryTrainer(same).start_epoch == 1


def test_unusable_test_path_is_reported_before_training(tmp_path):
    cfg = tiny_cfg(tmp_path, "TEST.CHECKPOINT_FILE_PATH", str(tmp_path / "typo.pyth"))
    setup_process(cfg)
    train_module._warn_unusable_test_path(cfg)
    # A checkpoint this run will write is a valid choice before it exists.
    own = tiny_cfg(tmp_path, "TEST.CHECKPOINT_FILE_PATH", _ckpt(tmp_path, 2))
    train_module._warn_unusable_test_path(own)
    log = _log_text(tmp_path)
    assert f"TEST.CHECKPOINT_FILE_PATH '{tmp_path / 'typo.pyth'}' does not exist" in log
    assert _ckpt(tmp_path, 2) not in log


# ------------------------------------------------------------------------------------
# A raised MAX_EPOCH continues; pruning never removes the state being resumed
# ------------------------------------------------------------------------------------
def test_raised_max_epoch_continues_and_pruning_spares_the_resumed_state(tmp_path):
    fit_in_memory(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2"))
    stray = _ckpt(tmp_path, 5)  # e.g. an interrupted copy from elsewhere: newer by name, unreadable
    broken.random_bytes(stray)
    stray_bytes = open(stray, "rb").read()

    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "4", "TRAIN.CHECKPOINT_KEEP_LAST", "1")
    trainer = fit_in_memory(cfg)
    assert trainer.start_epoch == 2 and "Start epoch: 3 of 4" in _log_text(tmp_path)
    # Counting the stray file as "the newest" would have deleted every checkpoint written.
    assert _names(tmp_path) == ["checkpoint_epoch_00004.pyth", "checkpoint_epoch_00005.pyth"]
    assert open(stray, "rb").read() == stray_bytes
    assert torch.load(_ckpt(tmp_path, 4), weights_only=True)["epoch"] == 3
    assert [r["epoch"] for r in metrics_records(tmp_path, "train_epoch")] == ["1/2", "2/2", "3/4", "4/4"]


# ------------------------------------------------------------------------------------
# Training recipes: a run resumed at an epoch boundary repeats the uninterrupted one
# ------------------------------------------------------------------------------------
class _Stopped(Exception):
    pass


def test_resume_with_ema_accumulation_and_mixup_repeats_the_uninterrupted_run(tmp_path):
    recipe = ("MODEL.EMA.ENABLE", "True", "MODEL.EMA.DECAY", "0.8", "TRAIN.BATCH_SIZE", "2",
              "TRAIN.GRAD_ACCUMULATION_STEPS", "3", "MIXUP.ENABLE", "True", "SOLVER.MAX_EPOCH", "3")
    fit_in_memory(tiny_cfg(tmp_path / "whole", *recipe))

    cfg = tiny_cfg(tmp_path / "resumed", *recipe)
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    save = trainer.checkpointer.save

    def save_then_stop(epoch):
        save(epoch)
        if epoch == 0:
            raise _Stopped  # killed right after the first checkpoint
    trainer.checkpointer.save = save_then_stop
    with pytest.raises(_Stopped):
        trainer.fit()
    assert fit_in_memory(cfg).start_epoch == 1

    whole, resumed = (torch.load(cu.list_checkpoints(str(tmp_path / n))[-1], weights_only=True)
                      for n in ("whole", "resumed"))
    for entry in ("model_state", "ema_state"):
        assert whole[entry].keys() == resumed[entry].keys()
        assert all(torch.equal(v, resumed[entry][k]) for k, v in whole[entry].items()), entry
    momentum = [s["momentum_buffer"] for s in whole["optimizer_state"]["state"].values()]
    assert all(torch.equal(m, s["momentum_buffer"]) for m, s in
               zip(momentum, resumed["optimizer_state"]["state"].values()))
    losses = [[r["loss"] for r in metrics_records(tmp_path / n, "train_iter")] for n in ("whole", "resumed")]
    assert losses[0] == losses[1] and len(losses[0]) == 3 * 2  # 8 micro-batches: 2 steps of 3 per epoch
