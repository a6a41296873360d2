"""Killed-and-restarted runs through tools/run_net.py, and runs refused before they could
damage another run's checkpoints or stopped by a full disk.

The kills are simulated in-process by raising a BaseException at the chosen point (after
the checkpoint of an epoch, inside the atomic save, inside the test pass), then the same
command is run again, as a restart would. Real data goes through the toy video dataset and
a tiny model with dropout, so loader shuffling, augmentation and dropout all take part.
"""
import errno
import os
import signal

import pytest
import torch

from tests.conftest import import_tool, metrics_records, tiny_toy_run
from tests.engine.tiny_parts import tiny_cfg
from tests.tools.toy_model import TOY_CFG, ResumeDropoutNet, toy_model_registered
from vov3d.engine import train as train_module
from vov3d.engine.schedule import lr_at_epoch
from vov3d.utils import checkpoint_io as cu
from vov3d.utils import files


def _ckpt(out, epoch):
    return cu.checkpoint_path(str(out), epoch - 1)  # 1-based epoch as in the file name


def _names(out):
    return sorted(os.listdir(cu.checkpoint_dir(str(out))))


def _log_text(out):
    with open(os.path.join(out, "stdout.log")) as f:
        return f.read()


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way up handles it."""


@pytest.fixture(scope="module", autouse=True)
def resume_dropout_net_registered():
    with toy_model_registered():
        yield


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return tiny_toy_run(tmp_path_factory.mktemp("toy"), TOY_CFG)


@pytest.fixture(scope="module")
def run_net():
    """tools/run_net.py's main(), run in this process as the command line would."""
    return import_tool("run_net").main


def _same_weights_and_optimizer(a, b):
    """Two checkpoints hold the same weights and SGD state, bit for bit."""
    assert a["model_state"].keys() == b["model_state"].keys()
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    opt_a, opt_b = a["optimizer_state"], b["optimizer_state"]
    assert opt_a["param_groups"] == opt_b["param_groups"] and opt_a["state"].keys() == opt_b["state"].keys()
    for index, entry in opt_a["state"].items():
        assert torch.equal(entry["momentum_buffer"], opt_b["state"][index]["momentum_buffer"]), index


def _argv(toy, out, *overrides):
    cfg, data = toy
    return ["--cfg", cfg, "DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data, "OUTPUT_DIR", str(out),
            *overrides]


def test_run_net_prints_one_line_for_a_bad_test_checkpoint(toy, tmp_path, run_net, capsys):
    out = tmp_path / "run"
    assert run_net(_argv(toy, out, "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", str(tmp_path))) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"run_net.py: CheckpointError: TEST.CHECKPOINT_FILE_PATH '{tmp_path}' is a directory; "
                     "expected a checkpoint file."]


def test_killed_during_test_phase_reruns_the_test_only(toy, tmp_path, run_net, monkeypatch):
    out = tmp_path / "run"
    argv = _argv(toy, out, "SOLVER.MAX_EPOCH", "2")

    def killed_test(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as m:
        m.setattr("vov3d.engine.test.run_views", killed_test)
        with pytest.raises(Killed):
            run_net(argv)
    assert _names(out) == ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    assert not metrics_records(out, "test_final")
    weights = torch.load(_ckpt(out, 2), weights_only=True)["model_state"]

    assert run_net(argv) == 0
    assert len(metrics_records(out, "train_epoch")) == 2  # not trained again
    assert "Training already finished: the checkpoint holds epoch 2 of SOLVER.MAX_EPOCH 2" in _log_text(out)
    final = metrics_records(out, "test_final")
    assert len(final) == 1 and final[0]["checkpoint_epoch"] == 2 and final[0]["num_videos"] == 4
    again = torch.load(_ckpt(out, 2), weights_only=True)["model_state"]
    assert all(torch.equal(again[k], v) for k, v in weights.items())
    assert os.path.exists(out / "preds.pkl") and os.path.exists(out / "preds.json")


def test_killed_while_saving_keeps_the_previous_checkpoint_and_resumes(toy, tmp_path, run_net, monkeypatch):
    out = tmp_path / "run"
    argv = _argv(toy, out, "SOLVER.MAX_EPOCH", "2")
    real_replace = os.replace

    def killed_at_rename(src, dst):
        if os.path.basename(dst) == "checkpoint_epoch_00002.pyth":
            assert os.path.getsize(src) > 0  # the temporary file was fully written
            raise Killed()
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(files.os, "replace", killed_at_rename)
        with pytest.raises(Killed):
            run_net(argv)
    assert _names(out) == ["checkpoint_epoch_00001.pyth"]
    assert torch.load(_ckpt(out, 1), weights_only=True)["epoch"] == 0
    assert [r["epoch"] for r in metrics_records(out, "train_epoch")] == ["1/2", "2/2"]  # epoch 2 ran
    # A real SIGKILL skips the clean-up and leaves the partial temporary file behind.
    leftover = os.path.join(cu.checkpoint_dir(str(out)), ".checkpoint_epoch_00002.pyth.a1b2c3.tmp")
    with open(_ckpt(out, 1), "rb") as src, open(leftover, "wb") as dst:
        dst.write(src.read()[:1000])

    assert run_net(argv) == 0
    log = _log_text(out)
    assert f"Weights source: auto-resume from {_ckpt(out, 1)} (finished epoch 1)" in log
    assert "Start epoch: 2 of 2" in log
    assert f"Removed '{leftover}' (1000 bytes), the temporary file of an interrupted save." in log
    assert _names(out) == ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    # Epoch 2 ran before the kill, but its checkpoint never landed: it runs again, and the
    # records of the killed attempt are replaced, not repeated.
    assert [r["epoch"] for r in metrics_records(out, "train_epoch")] == ["1/2", "2/2"]
    assert [r["epoch"] for r in metrics_records(out, "val_epoch")] == ["1/2", "2/2"]
    assert [(r["epoch"], r["iter"]) for r in metrics_records(out, "train_iter")] == [
        (f"{e}/2", f"{i}/4") for e in (1, 2) for i in (1, 2, 3, 4)]
    assert metrics_records(out, "test_final")[-1]["checkpoint_epoch"] == 2


def test_a_run_without_auto_resume_never_overwrites_or_tests_another_runs_checkpoints(
        toy, tmp_path, run_net, monkeypatch, capsys):
    out = tmp_path / "run"
    assert run_net(_argv(toy, out, "SOLVER.MAX_EPOCH", "2", "TEST.ENABLE", "False")) == 0
    before = {name: open(cu.checkpoint_dir(str(out)) + "/" + name, "rb").read() for name in _names(out)}
    capsys.readouterr()

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be built")

    monkeypatch.setattr(train_module, "prepare_model", no_model)
    assert run_net(_argv(toy, out, "SOLVER.MAX_EPOCH", "1", "TRAIN.AUTO_RESUME", "False")) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"run_net.py: CheckpointError: OUTPUT_DIR {out} already holds 2 epoch checkpoint(s) (newest "
        f"'{_ckpt(out, 2)}') and TRAIN.AUTO_RESUME is False: a new run would overwrite them, and its test could "
        "score one of them. Set TRAIN.AUTO_RESUME True to continue that run, or use a new OUTPUT_DIR for this one."]
    assert {name: open(cu.checkpoint_dir(str(out)) + "/" + name, "rb").read() for name in _names(out)} == before
    assert not metrics_records(out, "test_final")  # nothing was tested either


def test_a_full_disk_while_saving_stops_the_run_once_with_one_line(toy, tmp_path, run_net, monkeypatch, capsys):
    out = tmp_path / "run"
    real_fsync = os.fsync

    def full_for_epoch_2(fd):
        if ".checkpoint_epoch_00002.pyth." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full_for_epoch_2)
    assert run_net(_argv(toy, out, "SOLVER.MAX_EPOCH", "2")) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"run_net.py: CheckpointError: no space left on device while writing checkpoint '{_ckpt(out, 2)}' (")
    assert "older checkpoints are intact" in lines[0]
    assert _log_text(out).count("no space left on device") == 1
    assert _names(out) == ["checkpoint_epoch_00001.pyth"]
    assert torch.load(_ckpt(out, 1), weights_only=True)["epoch"] == 0
    assert not metrics_records(out, "test_final") and not (out / "preds.pkl").exists()


# ------------------------------------------------------------------------------------
# Resume at an epoch boundary == the uninterrupted run, bit for bit (CPU)
# ------------------------------------------------------------------------------------
def test_resume_at_epoch_boundary_reproduces_the_uninterrupted_run(toy, tmp_path, run_net, monkeypatch):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_net(_argv(toy, whole, "TEST.ENABLE", "False")) == 0

    real_train_epoch = train_module.Trainer.train_epoch

    def killed_before_epoch_3(self, epoch):
        if epoch == 2:  # after the checkpoint, precise BN and validation of epoch 2
            raise Killed()
        return real_train_epoch(self, epoch)

    with monkeypatch.context() as m:
        m.setattr(train_module.Trainer, "train_epoch", killed_before_epoch_3)
        with pytest.raises(Killed):
            run_net(_argv(toy, resumed, "TEST.ENABLE", "False"))
    assert _names(resumed)[-1] == "checkpoint_epoch_00002.pyth"
    assert run_net(_argv(toy, resumed, "TEST.ENABLE", "False")) == 0
    assert "Start epoch: 3 of 3" in _log_text(resumed)

    a = torch.load(_ckpt(whole, 3), weights_only=True)
    b = torch.load(_ckpt(resumed, 3), weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    _same_weights_and_optimizer(a, b)

    # The same iterations: epoch numbering, LR schedule, losses.
    def epoch3(out):
        return [(r["epoch"], r["iter"], r["lr"], r["loss"]) for r in metrics_records(out, "train_iter")
                if r["epoch"] == "3/3"]

    assert epoch3(whole) == epoch3(resumed) and len(epoch3(whole)) == 4
    cfg = tiny_cfg(tmp_path, "SOLVER.BASE_LR", "0.05", "SOLVER.LR_POLICY", "cosine", "SOLVER.MAX_EPOCH", "3",
                   "SOLVER.WARMUP_EPOCHS", "1.0", "SOLVER.WARMUP_START_LR", "0.01")
    assert epoch3(resumed)[0][2] == pytest.approx(lr_at_epoch(cfg, 2.0), abs=1e-5)
    assert [r["top1_err"] for r in metrics_records(whole, "val_epoch")][-1] == \
        [r["top1_err"] for r in metrics_records(resumed, "val_epoch")][-1]
    assert [r["epoch"] for r in metrics_records(resumed, "train_epoch")] == ["1/3", "2/3", "3/3"]


# ------------------------------------------------------------------------------------
# Stopped by a signal in the middle of an epoch == the uninterrupted run, bit for bit (CPU)
# ------------------------------------------------------------------------------------
def _signal_in_training_call(monkeypatch, call, signum=signal.SIGTERM):
    """Deliver `signum` to this process during the `call`-th (0-based) training forward pass."""
    forward, calls = ResumeDropoutNet.forward, []

    def signalling(self, x):
        if self.training and torch.is_grad_enabled():
            if len(calls) == call:
                os.kill(os.getpid(), signum)
            calls.append(1)
        return forward(self, x)

    monkeypatch.setattr(ResumeDropoutNet, "forward", signalling)


def _same_checkpoint(a_path, b_path):
    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    assert a["epoch"] == b["epoch"]
    _same_weights_and_optimizer(a, b)
    assert a["position"] == b["position"] == {"epoch": a["epoch"] + 1, "iteration": 0, "samples": 0,
                                              "world_size": 1, "meter": {}}
    assert a.keys() == b.keys()
    if "ema_state" in a:
        assert all(torch.equal(v, b["ema_state"][k]) for k, v in a["ema_state"].items())


def _records(out, kind, *keys):
    return [tuple(r[k] for k in keys) for r in metrics_records(out, kind)]


# The 6th training forward pass is in epoch 2 of 4 loader batches: after its iteration 2 (one batch
# per step), or, with 2 micro-batches per optimiser step, in its step 1 of 2.
RECIPES = ["TRAIN.GRAD_ACCUMULATION_STEPS", "2", "MIXUP.ENABLE", "True", "MODEL.EMA.ENABLE", "True",
           "MODEL.EMA.DECAY", "0.5"]


@pytest.mark.parametrize("more,steps,done", [([], 4, 2), (["DATA_LOADER.NUM_WORKERS", "2"], 4, 2), (RECIPES, 2, 1)],
                         ids=["in_process", "workers", "accumulation_mixup_ema"])
def test_stopped_mid_epoch_resumes_exactly_where_it_stopped(toy, tmp_path, run_net, monkeypatch, capsys, more,
                                                            steps, done):
    # Augmentation (scale jitter, crops, flips, windows), shuffling, dropout and precise BN all take part;
    # with workers, each batch comes from another process than in the uninterrupted run.
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    more = ["TEST.ENABLE", "False", *more]
    assert run_net(_argv(toy, whole, *more)) == 0

    with monkeypatch.context() as m:
        _signal_in_training_call(m, 5)
        assert run_net(_argv(toy, stopped, *more)) == 128 + signal.SIGTERM
    mid = cu.checkpoint_path(str(stopped), 1, done)
    assert _names(stopped) == ["checkpoint_epoch_00001.pyth", os.path.basename(mid)]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"run_net.py: Training stopped by SIGTERM in epoch 2/3 after iteration {done}/{steps}; saved {mid}. "
                   "Run the same command again (TRAIN.AUTO_RESUME True) to continue from there."]
    saved = torch.load(mid, weights_only=True)
    assert saved["epoch"] == 0 and saved["position"]["epoch"] == 1 and saved["position"]["iteration"] == done
    assert saved["position"]["samples"] == 8 // steps * done and saved["position"]["world_size"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the training

    assert run_net(_argv(toy, stopped, *more)) == 0
    log = _log_text(stopped)
    assert f"Weights source: auto-resume from {mid} (finished epoch 1)" in log
    assert f"Continuing epoch 2 of a run stopped after iteration {done}/{steps}." in log
    # The mid-epoch file went once epoch 2 was saved; the rest is the uninterrupted run's.
    assert _names(stopped) == _names(whole) == [f"checkpoint_epoch_0000{e}.pyth" for e in (1, 2, 3)]
    for epoch in (2, 3):
        _same_checkpoint(_ckpt(whole, epoch), _ckpt(stopped, epoch))
    for kind, keys in (("train_iter", ("epoch", "iter", "lr", "loss", "top1_err")),
                       ("train_epoch", ("epoch", "loss", "top1_err", "samples", "lr")),
                       ("val_epoch", ("epoch", "top1_err"))):
        assert _records(whole, kind, *keys) == _records(stopped, kind, *keys), kind
    assert len(_records(stopped, "train_iter", "iter")) == 3 * steps  # each iteration recorded once


def test_stopped_mid_epoch_with_randaugment_and_short_cycles_resumes_exactly(toy, tmp_path, run_net, monkeypatch):
    # Short cycles of 4, 2 and 1 videos (3 steps of the 8 training videos per epoch), each video
    # decoded once and augmented twice (RandAugment, random erasing): stopped after step 2 of epoch 2.
    more = ["TEST.ENABLE", "False", "TRAIN.BATCH_SIZE", "1", "MULTIGRID.SHORT_CYCLE", "True", "AUG.ENABLE", "True",
            "AUG.NUM_SAMPLE", "2", "AUG.RE_PROB", "0.5", "AUG.AA_TYPE", "rand-m9-n3-mstd0.5-inc1"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert run_net(_argv(toy, whole, *more)) == 0
    with monkeypatch.context() as m:
        _signal_in_training_call(m, 4)
        assert run_net(_argv(toy, stopped, *more)) == 128 + signal.SIGTERM
    saved = torch.load(cu.checkpoint_path(str(stopped), 1, 2), weights_only=True)
    assert saved["position"]["iteration"] == 2 and saved["position"]["samples"] == 4 + 2  # videos, not clips
    assert run_net(_argv(toy, stopped, *more)) == 0
    assert "Continuing epoch 2 of a run stopped after iteration 2/3." in _log_text(stopped)
    for epoch in (2, 3, 4):  # 1.5 x 3 epochs
        _same_checkpoint(_ckpt(whole, epoch), _ckpt(stopped, epoch))
    keys = ("epoch", "iter", "lr", "loss", "top1_err")
    assert _records(whole, "train_iter", *keys) == _records(stopped, "train_iter", *keys)
    assert [r[1] for r in _records(whole, "train_iter", "epoch", "iter")][:3] == ["1/3", "2/3", "3/3"]
