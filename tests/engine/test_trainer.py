import json
import os

import pytest
import torch

from tests.engine.tiny_parts import ClipDataset, TinyTestNet, make_fake_trainer_class, tiny_cfg
from vov3d.engine import checkpoint as cu
from vov3d.engine.runtime import setup_process
from vov3d.engine.test import load_test_weights, NoCheckpointError, run_views, save_results
from vov3d.engine.meters import VideoEnsembleMeter
from vov3d.engine.train import LossDivergedError

InMemoryTrainer = make_fake_trainer_class()


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _log_text(out):
    with open(os.path.join(out, "stdout.log")) as f:
        return f.read()


def _fit(cfg):
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    trainer.fit()
    return trainer


def test_training_epochs_checkpoints_logs_and_precise_bn(tmp_path):
    cfg = tiny_cfg(tmp_path, "BN.USE_PRECISE_STATS", "True", "TRAIN.CHECKPOINT_PERIOD", "2",
                   "TRAIN.EVAL_PERIOD", "5", "SOLVER.MAX_EPOCH", "3", "TENSORBOARD.ENABLE", "True")
    trainer = _fit(cfg)
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

    # Precise BN: the running mean is the exact mean of the BN input over all 16 clips.
    model = trainer.model
    clips = ClipDataset(16).clips
    with torch.no_grad():
        feats = model.conv(clips)
    assert torch.allclose(model.bn.running_mean, feats.mean(dim=(0, 2, 3, 4)), atol=1e-5)
    stored = torch.load(cu.list_checkpoints(str(tmp_path))[-1], weights_only=True)["model_state"]
    assert torch.equal(stored["bn.running_mean"], model.bn.running_mean)


def test_resume_continues_from_the_newest_checkpoint(tmp_path):
    _fit(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2"))
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FILE_PATH", "/nonexistent.pth")
    trainer = _fit(cfg)
    assert trainer.start_epoch == 2
    log = _log_text(tmp_path)
    assert "Weights source: auto-resume from" in log and "is not used: auto-resume takes precedence" in log
    assert len(cu.list_checkpoints(str(tmp_path))) == 3


def test_resume_refuses_a_different_experiment(tmp_path):
    _fit(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"))
    with pytest.raises(cu.CheckpointError, match=r"another experiment \(MODEL\.NUM_CLASSES: stored 4, current 5\)"):
        _fit(tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "5"))


def test_nan_loss_stops_with_epoch_iteration_and_lr_and_saves_nothing_after(tmp_path, monkeypatch):
    monkeypatch.setattr(TinyTestNet, "nan_at_call", 5)  # epoch 2, iteration 2 (4 iterations/epoch)
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "3")
    with pytest.raises(LossDivergedError, match=r"epoch 2/3, iteration 2/4, lr 0\.0\d+: loss nan"):
        _fit(cfg)
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
    with torch.no_grad():
        expected = model(ds.clips[6:12]).max(dim=0).values  # video 1, all 6 views in one forward
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
    for indices, preds, labels, failed, counts in run_views(cfg, TinyTestNet(cfg).eval(), batches):
        meter.add(indices, preds, labels, failed)
        video_frames.update(zip(indices.tolist(), counts.tolist()))
    assert video_frames == frames
    out = tmp_path / "preds.pkl"
    save_results(str(out), meter, ClipDataset(4), {}, video_frames)
    report = json.loads((tmp_path / "preds.json").read_text())
    assert [(v["video_frames"], v["too_short"]) for v in report["videos"]] == [
        (300, False), (1, True), (None, False), (2, False)]
    assert report["too_short_videos"] == ["video_001.mp4"] and report["failed_videos"] == ["video_002.mp4"]


def test_testing_random_weights_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(NoCheckpointError, match="TEST.ALLOW_RANDOM_INIT True"):
        load_test_weights(cfg, TinyTestNet(cfg))
    allowed = tiny_cfg(tmp_path, "TEST.ALLOW_RANDOM_INIT", "True")
    assert load_test_weights(allowed, TinyTestNet(allowed)) == (None, None)
