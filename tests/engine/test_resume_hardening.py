"""Killed-and-restarted runs and broken checkpoint files.

In-process: the kills are simulated by raising a BaseException at the chosen point (after
the checkpoint of an epoch, inside the atomic save, inside the test pass), then the same
command is run again, as a restart would. Real data goes through the toy video dataset and
a tiny model with dropout, so loader shuffling, augmentation and dropout all take part.
"""
import importlib.util
import os
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.conftest import REPO_ROOT, metrics_records, tiny_toy_run
from tests.engine.tiny_parts import TinyTestNet, make_fake_trainer_class, tiny_cfg
from vov3d.engine import checkpoint as cu
from vov3d.engine import train as train_module
from vov3d.engine.optimizer import construct_optimizer
from vov3d.engine.runtime import setup_process
from vov3d.engine.schedule import lr_at_epoch
from vov3d.engine.test import NoCheckpointError, load_test_weights
from vov3d.models.registry import MODEL_REGISTRY

InMemoryTrainer = make_fake_trainer_class()


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way up handles it."""


class ResumeDropoutNet(nn.Module):
    """conv -> bn -> pool -> dropout -> linear: BN statistics, two optimizer groups and
    dropout draws, the state a resumed run has to reproduce."""

    def __init__(self, cfg):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=(2, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn = nn.BatchNorm3d(8)
        self.head = nn.Module()
        self.head.dropout = nn.Dropout(0.5)
        self.head.projection = nn.Linear(8, cfg.MODEL.NUM_CLASSES)

    def forward(self, x):
        x = x[0] if isinstance(x, (list, tuple)) else x
        x = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3, 4))
        logits = self.head.projection(self.head.dropout(x))
        return logits if self.training else logits.softmax(dim=1)


TOY_CFG = """
TRAIN: {ENABLE: True, DATASET: kinetics, BATCH_SIZE: 2, EVAL_PERIOD: 1, CHECKPOINT_PERIOD: 1, AUTO_RESUME: True}
TEST: {ENABLE: True, DATASET: kinetics, BATCH_SIZE: 2, NUM_ENSEMBLE_VIEWS: 1, NUM_SPATIAL_CROPS: 1,
       SAVE_RESULTS_PATH: preds.pkl}
DATA: {NUM_FRAMES: 4, SAMPLING_RATE: 4, TRAIN_JITTER_SCALES: [32, 40], TRAIN_CROP_SIZE: 32,
       TEST_CROP_SIZE: 32, INPUT_CHANNEL_NUM: [3]}
BN: {USE_PRECISE_STATS: True, NUM_BATCHES_PRECISE: 2}
SOLVER: {BASE_LR: 0.05, LR_POLICY: cosine, MAX_EPOCH: 3, WARMUP_EPOCHS: 1.0, WARMUP_START_LR: 0.01}
MODEL: {NUM_CLASSES: 2, MODEL_NAME: ResumeDropoutNet}
DATA_LOADER: {NUM_WORKERS: 0, PIN_MEMORY: False}
NUM_GPUS: 0
RNG_SEED: 0
LOG_PERIOD: 1
LOG_MODEL_INFO: False
"""


@pytest.fixture(scope="module", autouse=True)
def resume_dropout_net_registered():
    with MODEL_REGISTRY.scoped():
        MODEL_REGISTRY.register(ResumeDropoutNet)
        yield


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return tiny_toy_run(tmp_path_factory.mktemp("toy"), TOY_CFG)


@pytest.fixture(scope="module")
def run_net():
    """tools/run_net.py's main(), run in this process as the command line would."""
    spec = importlib.util.spec_from_file_location("run_net_in_process", os.path.join(REPO_ROOT, "tools", "run_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _argv(toy, out, *overrides):
    cfg, data = toy
    return ["--cfg", cfg, "DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data, "OUTPUT_DIR", str(out),
            *overrides]


def _log(out):
    with open(os.path.join(out, "stdout.log")) as f:
        return f.read()


def _names(out):
    return sorted(os.listdir(cu.checkpoint_dir(str(out))))


def _fit(cfg):
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    trainer.fit()
    return trainer


def _ckpt(out, epoch):
    return cu.checkpoint_path(str(out), epoch - 1)  # 1-based epoch as in the file name


# ------------------------------------------------------------------------------------
# a. a broken newest checkpoint: warn, fall back, keep the file; temp files never count
# ------------------------------------------------------------------------------------
def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _empty(path):
    open(path, "wb").close()


def _random_bytes(path):
    with open(path, "wb") as f:
        f.write(random.Random(0).randbytes(3000))


def _flip_tensor_bytes(path):
    # The zip index stays intact (torch.load succeeds on such a file); only a CRC check sees it.
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("breakage", [_truncate, _empty, _random_bytes, _flip_tensor_bytes],
                         ids=["truncated", "zero_bytes", "random_bytes", "flipped_bytes"])
def test_broken_newest_checkpoint_falls_back_and_is_left_in_place(tmp_path, breakage):
    _fit(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "3"))
    newest = _ckpt(tmp_path, 3)
    # A complete-looking leftover of a killed save of a later epoch: it must never be loaded.
    leftover = os.path.join(cu.checkpoint_dir(str(tmp_path)), ".checkpoint_epoch_00004.pyth.k2x9q.tmp")
    with open(newest, "rb") as src, open(leftover, "wb") as dst:
        dst.write(src.read())
    breakage(newest)
    broken_bytes = open(newest, "rb").read()

    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "4")
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    assert trainer.start_epoch == 2  # resumed from epoch 2, the newest readable file
    log = _log(tmp_path)
    assert f"Skipping unusable checkpoint: checkpoint '{newest}'" in log
    assert f"Using '{_ckpt(tmp_path, 2)}', the newest readable checkpoint" in log
    assert f"Ignoring '{leftover}': the temporary file of an interrupted save" in log
    assert open(newest, "rb").read() == broken_bytes and os.path.exists(leftover)
    path, epoch = load_test_weights(cfg, TinyTestNet(cfg))  # the test phase falls back alike
    assert (path, epoch) == (_ckpt(tmp_path, 2), 1)

    trainer.fit()  # epochs 3 and 4; epoch 3 is written again, complete
    assert torch.load(newest, weights_only=True)["epoch"] == 2
    assert cu.newest_readable(str(tmp_path))[0] == _ckpt(tmp_path, 4)


def test_every_checkpoint_broken_refuses_to_start_over_them(tmp_path):
    _fit(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2"))
    for epoch in (1, 2):
        _truncate(_ckpt(tmp_path, epoch))
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2")
    setup_process(cfg)
    with pytest.raises(cu.CheckpointError, match=r"found 2 checkpoint\(s\) .* but none can be read") as err:
        InMemoryTrainer(cfg)
    assert _ckpt(tmp_path, 2) in str(err.value)
    with pytest.raises(NoCheckpointError, match="holds 2 checkpoint\\(s\\), none readable"):
        load_test_weights(cfg, TinyTestNet(cfg))


# ------------------------------------------------------------------------------------
# b. auto-resume of another model: a clear error, nothing loaded
# ------------------------------------------------------------------------------------
def test_resume_shape_mismatch_names_file_and_keys_and_loads_nothing(tmp_path):
    _fit(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"))
    path = _ckpt(tmp_path, 1)
    cfg = tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "5")
    model = TinyTestNet(cfg)
    opt = construct_optimizer(model, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(cu.CheckpointError) as err:
        cu.load_for_resume(path, model, opt)
    message = str(err.value)
    assert f"cannot resume from '{path}'" in message
    assert "head.projection.weight (checkpoint [4, 6], model [5, 6])" in message
    assert "head.projection.bias (checkpoint [4], model [5])" in message
    # conv/bn fit by shape; a partial load would have replaced them.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not opt.state_dict()["state"]

    # Through the trainer, the stored config already tells: another experiment's OUTPUT_DIR.
    setup_process(cfg)
    with pytest.raises(cu.CheckpointError, match=r"MODEL\.NUM_CLASSES: stored 4, current 5\)\. Use a new OUTPUT_DIR"):
        InMemoryTrainer(cfg)


def _warnings_logged(out):
    return [line for line in _log(out).splitlines() if "][WARNING]" in line or "][ERROR]" in line]


def test_auto_resume_into_another_models_output_dir_stops_with_one_error(tmp_path):
    _fit(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"))
    path = _ckpt(tmp_path, 1)
    before_warnings = _warnings_logged(tmp_path)
    cfg = tiny_cfg(tmp_path, "MODEL.MODEL_NAME", "ResumeDropoutNet")
    setup_process(cfg)
    with pytest.raises(cu.CheckpointError) as err:
        InMemoryTrainer(cfg)
    assert str(err.value) == (
        f"cannot auto-resume from '{path}': OUTPUT_DIR {tmp_path} holds the checkpoints of another experiment "
        "(MODEL.MODEL_NAME: stored 'TinyTestNet', current 'ResumeDropoutNet'). Use a new OUTPUT_DIR for this "
        "run, or set TRAIN.AUTO_RESUME False to start it from scratch here (its checkpoints then replace these).")
    # No per-tensor (or any other) warning on the way to the error.
    assert _warnings_logged(tmp_path) == before_warnings

    # Names are looked up ignoring case: the same model spelled otherwise resumes.
    same = tiny_cfg(tmp_path, "MODEL.MODEL_NAME", "tinytestnet", "SOLVER.MAX_EPOCH", "1")
    setup_process(same)
    assert InMemoryTrainer(same).start_epoch == 1


def test_resume_blames_a_changed_class_count_on_the_output_dir_not_the_label_lists(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path)
    model = TinyTestNet(cfg)
    names = ["a", "b", "c", "d"]
    path = cu.save_checkpoint(str(tmp_path), model, construct_optimizer(model, cfg), 0, cfg, class_names=names)
    other = tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "2")
    target = TinyTestNet(other)
    opt = construct_optimizer(target, other)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    caplog.clear()
    with caplog.at_level("INFO", logger="vov3d.engine.checkpoint"):
        with pytest.raises(cu.CheckpointError, match=r"another experiment \(MODEL\.NUM_CLASSES: stored 4, current 2\)"):
            cu.load_for_resume(path, target, opt, class_names=names[:2], cfg=other)
        # Without a stored config (older files) the tensors tell, still before the class names and
        # without a log line per tensor.
        obj = torch.load(path, weights_only=True)
        del obj["cfg"]
        with pytest.raises(cu.CheckpointError, match=r"head\.projection\.weight \(checkpoint \[4, 6\], model "
                                                     r"\[2, 6\]\).*Was OUTPUT_DIR used by another experiment"):
            cu.load_for_resume(path, target, opt, obj=obj, class_names=names[:2], cfg=other)
    assert not [r for r in caplog.records if r.name == "vov3d.engine.checkpoint"]
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    # Same class count, another label order: that one is the label lists' fault.
    with pytest.raises(cu.CheckpointError, match=r"label 0 is 'a' there but 'b' in the training lists"):
        cu.load_for_resume(path, TinyTestNet(cfg), construct_optimizer(TinyTestNet(cfg), cfg),
                           class_names=["b", "a", "c", "d"], cfg=cfg)


def test_resume_refuses_extra_tensors_and_a_foreign_optimizer(tmp_path):
    _fit(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"))
    path = _ckpt(tmp_path, 1)
    obj = torch.load(path, weights_only=True)
    obj["model_state"]["extra.weight"] = torch.zeros(3)
    extra = os.path.join(tmp_path, "extra.pyth")
    torch.save(obj, extra)
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(cu.CheckpointError, match=r"extra\.weight \(not in the model\)"):
        cu.load_for_resume(extra, TinyTestNet(cfg), construct_optimizer(TinyTestNet(cfg), cfg))

    # Same shapes, but frozen BN leaves the BN group out of the optimizer.
    frozen = tiny_cfg(tmp_path, "MODEL.FROZEN_BN", "True")
    model = TinyTestNet(frozen)
    opt = construct_optimizer(model, frozen)
    conv_before = model.conv.weight.clone()
    with pytest.raises(cu.CheckpointError, match=r"optimizer state does not fit .*2 parameter groups in the file, "
                                                 r"1 in the optimizer.*MODEL\.FROZEN_BN"):
        cu.load_for_resume(path, model, opt)
    assert torch.equal(model.conv.weight, conv_before) and not opt.state_dict()["state"]

    adam = tiny_cfg(tmp_path, "SOLVER.OPTIMIZING_METHOD", "adam")
    model = TinyTestNet(adam)
    with pytest.raises(cu.CheckpointError, match=r"group 'decay' was written by another optimizer"):
        cu.load_for_resume(path, model, construct_optimizer(model, adam))


def test_unusable_test_path_is_reported_before_training(tmp_path):
    cfg = tiny_cfg(tmp_path, "TEST.CHECKPOINT_FILE_PATH", str(tmp_path / "typo.pyth"))
    setup_process(cfg)
    train_module._warn_unusable_test_path(cfg)
    # A checkpoint this run will write is a valid choice before it exists.
    own = tiny_cfg(tmp_path, "TEST.CHECKPOINT_FILE_PATH", _ckpt(tmp_path, 2))
    train_module._warn_unusable_test_path(own)
    log = _log(tmp_path)
    assert f"TEST.CHECKPOINT_FILE_PATH '{tmp_path / 'typo.pyth'}' does not exist" in log
    assert _ckpt(tmp_path, 2) not in log


# ------------------------------------------------------------------------------------
# c. an explicit path that is missing, a directory or broken: one error naming it
# ------------------------------------------------------------------------------------
def _bad_path(tmp_path, kind):
    if kind == "missing":
        return str(tmp_path / "no_such.pyth"), "not found"
    if kind == "directory":
        return str(tmp_path), "is a directory; expected a checkpoint file"
    path = str(tmp_path / f"{kind}.pyth")
    cfg = tiny_cfg(tmp_path / "src")
    model = TinyTestNet(cfg)
    cu.save_checkpoint(str(tmp_path / "src"), model, construct_optimizer(model, cfg), 0, cfg)
    os.replace(_ckpt(tmp_path / "src", 1), path)
    {"truncated": _truncate, "empty": _empty, "random": _random_bytes}[kind](path)
    return path, {"truncated": "truncated or corrupt", "empty": "is empty (0 bytes)",
                  "random": "truncated or corrupt"}[kind]


@pytest.mark.parametrize("kind", ["missing", "directory", "truncated", "empty", "random"])
def test_explicit_checkpoint_paths_give_one_clear_error(tmp_path, kind):
    path, reason = _bad_path(tmp_path, kind)
    test_cfg = tiny_cfg(tmp_path / "out", "TEST.CHECKPOINT_FILE_PATH", path)
    with pytest.raises(cu.CheckpointError) as err:
        load_test_weights(test_cfg, TinyTestNet(test_cfg))
    assert type(err.value) is cu.CheckpointError  # garbage is not mistaken for an "unsafe" file
    assert f"TEST.CHECKPOINT_FILE_PATH '{path}'" in str(err.value) and reason in str(err.value)

    train_cfg = tiny_cfg(tmp_path / "out", "TRAIN.CHECKPOINT_FILE_PATH", path)
    setup_process(train_cfg)
    with pytest.raises(cu.CheckpointError) as err:
        InMemoryTrainer(train_cfg)
    assert f"TRAIN.CHECKPOINT_FILE_PATH '{path}'" in str(err.value) and reason in str(err.value)


def test_run_net_prints_one_line_for_a_bad_test_checkpoint(toy, tmp_path, run_net, capsys):
    out = tmp_path / "run"
    assert run_net(_argv(toy, out, "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", str(tmp_path))) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"run_net.py: CheckpointError: TEST.CHECKPOINT_FILE_PATH '{tmp_path}' is a directory; "
                     "expected a checkpoint file."]


# ------------------------------------------------------------------------------------
# d. killed in the test phase, killed while saving
# ------------------------------------------------------------------------------------
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
    assert "Training already finished: the checkpoint holds epoch 2 of SOLVER.MAX_EPOCH 2" in _log(out)
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
        m.setattr(cu.os, "replace", killed_at_rename)
        with pytest.raises(Killed):
            run_net(argv)
    assert _names(out) == ["checkpoint_epoch_00001.pyth"]
    assert torch.load(_ckpt(out, 1), weights_only=True)["epoch"] == 0
    # A real SIGKILL skips the clean-up and leaves the partial temporary file behind.
    leftover = os.path.join(cu.checkpoint_dir(str(out)), ".checkpoint_epoch_00002.pyth.a1b2c3.tmp")
    with open(_ckpt(out, 1), "rb") as src, open(leftover, "wb") as dst:
        dst.write(src.read()[:1000])

    assert run_net(argv) == 0
    log = _log(out)
    assert f"Weights source: auto-resume from {_ckpt(out, 1)} (finished epoch 1)" in log
    assert "Start epoch: 2 of 2" in log and f"Ignoring '{leftover}'" in log
    # Epoch 2 ran before the kill, but its checkpoint never landed: it runs again.
    assert [r["epoch"] for r in metrics_records(out, "train_epoch")] == ["1/2", "2/2", "2/2"]
    assert _names(out) == [".checkpoint_epoch_00002.pyth.a1b2c3.tmp", "checkpoint_epoch_00001.pyth",
                           "checkpoint_epoch_00002.pyth"]
    assert metrics_records(out, "test_final")[-1]["checkpoint_epoch"] == 2


# ------------------------------------------------------------------------------------
# e. resume at an epoch boundary == the uninterrupted run, bit for bit (CPU)
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
    assert "Start epoch: 3 of 3" in _log(resumed)

    a = torch.load(_ckpt(whole, 3), weights_only=True)
    b = torch.load(_ckpt(resumed, 3), weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert a["model_state"].keys() == b["model_state"].keys()
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    opt_a, opt_b = a["optimizer_state"], b["optimizer_state"]
    assert opt_a["param_groups"] == opt_b["param_groups"] and opt_a["state"].keys() == opt_b["state"].keys()
    for index, entry in opt_a["state"].items():
        assert torch.equal(entry["momentum_buffer"], opt_b["state"][index]["momentum_buffer"]), index

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


# ------------------------------------------------------------------------------------
# f. a raised MAX_EPOCH continues; pruning never removes the state being resumed
# ------------------------------------------------------------------------------------
def test_raised_max_epoch_continues_and_pruning_spares_the_resumed_state(tmp_path):
    _fit(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2"))
    stray = _ckpt(tmp_path, 5)  # e.g. an interrupted copy from elsewhere: newer by name, unreadable
    _random_bytes(stray)
    stray_bytes = open(stray, "rb").read()

    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "4", "TRAIN.CHECKPOINT_KEEP_LAST", "1")
    trainer = _fit(cfg)
    assert trainer.start_epoch == 2 and "Start epoch: 3 of 4" in _log(tmp_path)
    # Counting the stray file as "the newest" would have deleted every checkpoint written.
    assert _names(tmp_path) == ["checkpoint_epoch_00004.pyth", "checkpoint_epoch_00005.pyth"]
    assert open(stray, "rb").read() == stray_bytes
    assert torch.load(_ckpt(tmp_path, 4), weights_only=True)["epoch"] == 3
    assert [r["epoch"] for r in metrics_records(tmp_path, "train_epoch")] == ["1/2", "2/2", "3/4", "4/4"]


def test_keep_last_prunes_only_files_older_than_the_one_saved(tmp_path):
    cfg = tiny_cfg(tmp_path)
    model = TinyTestNet(cfg)
    opt = construct_optimizer(model, cfg)
    for epoch in range(3):
        cu.save_checkpoint(str(tmp_path), model, opt, epoch, cfg)
    _random_bytes(_ckpt(tmp_path, 9))
    saved = cu.save_checkpoint(str(tmp_path), model, opt, 3, cfg, keep_last=2)
    assert saved == _ckpt(tmp_path, 4)
    assert _names(tmp_path) == ["checkpoint_epoch_00003.pyth", "checkpoint_epoch_00004.pyth",
                                "checkpoint_epoch_00009.pyth"]
