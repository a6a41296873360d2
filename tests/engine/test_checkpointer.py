"""The Checkpointer: saving, pruning, the extra-checkpointable slot, which file each phase
loads, and the checks a training run's checkpoint folder gets before anything is built."""
import errno
import logging
import os

import pytest
import torch

from tests.engine.tiny_parts import TinyTestNet, tiny_cfg
from tests.utils import broken_files as broken
from vov3d.engine.checkpoint_loading import load_for_resume
from vov3d.engine.checkpointer import Checkpointer, Loaded, NoCheckpointError, prepare_checkpoint_dir
from vov3d.engine.optimizer import construct_optimizer
from vov3d.utils import files
from vov3d.utils.checkpoint_io import CheckpointError, checkpoint_dir, checkpoint_path, list_checkpoints


def _trained(cfg):
    model = TinyTestNet(cfg)
    opt = construct_optimizer(model, cfg)
    model(torch.randn(2, 3, 2, 8, 8)).sum().backward()
    opt.step()  # creates momentum buffers
    return model, opt


def _names(out):
    return sorted(os.listdir(checkpoint_dir(str(out))))


def _fresh(cfg, **kwargs):
    model = TinyTestNet(cfg)
    return Checkpointer(cfg, model, construct_optimizer(model, cfg), **kwargs)


def test_save_round_trip_and_stored_keys(tmp_path):
    cfg = tiny_cfg(tmp_path)
    model, opt = _trained(cfg)
    path = Checkpointer(cfg, model, opt).save(0)
    assert os.path.basename(path) == "checkpoint_epoch_00001.pyth"
    assert list_checkpoints(str(tmp_path)) == [path]
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"epoch", "model_state", "optimizer_state", "cfg"} and obj["epoch"] == 0
    assert "MODEL_NAME: TinyTestNet" in obj["cfg"]

    for load in ("direct", "checkpointer"):
        fresh = _fresh(cfg)
        if load == "direct":
            assert load_for_resume(path, fresh.model, fresh.optimizer) == 0
        else:
            assert fresh.resume_or_load("train") == Loaded(path, "auto-resume", 0)
        for k, v in model.state_dict().items():
            assert torch.equal(fresh.model.state_dict()[k], v), k
        buf = opt.state_dict()["state"][0]["momentum_buffer"]
        assert torch.equal(fresh.optimizer.state_dict()["state"][0]["momentum_buffer"], buf)


def test_keep_last_prunes_older_checkpoints(tmp_path):
    cfg = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_KEEP_LAST", "2")
    checkpointer = Checkpointer(cfg, *_trained(cfg))
    for epoch in range(4):
        checkpointer.save(epoch)
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == [
        "checkpoint_epoch_00003.pyth", "checkpoint_epoch_00004.pyth"]


def test_keep_last_prunes_only_files_older_than_the_one_saved(tmp_path):
    checkpointer = Checkpointer(tiny_cfg(tmp_path), *_trained(tiny_cfg(tmp_path)))
    for epoch in range(3):
        checkpointer.save(epoch)
    broken.random_bytes(checkpoint_path(str(tmp_path), 8))
    checkpointer.cfg = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_KEEP_LAST", "2")
    saved = checkpointer.save(3)
    assert saved == checkpoint_path(str(tmp_path), 3)
    assert _names(tmp_path) == ["checkpoint_epoch_00003.pyth", "checkpoint_epoch_00004.pyth",
                                "checkpoint_epoch_00009.pyth"]


def test_a_full_disk_stops_the_save_and_prunes_nothing(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_KEEP_LAST", "1")
    checkpointer = Checkpointer(cfg, *_trained(cfg))
    first = checkpointer.save(0)
    before = open(first, "rb").read()
    monkeypatch.setattr(files.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(CheckpointError, match=r"^no space left on device while writing checkpoint "
                                              rf"'{checkpoint_path(str(tmp_path), 1)}' \([\d,]+ bytes;"):
        checkpointer.save(1)
    assert _names(tmp_path) == ["checkpoint_epoch_00001.pyth"] and open(first, "rb").read() == before


# ------------------------------------------------------------------------------------
# The extension slot: named checkpointables
# ------------------------------------------------------------------------------------
class Counter:
    """The smallest checkpointable: a count and its history."""

    def __init__(self, n=0):
        self.n, self.history = n, [n]

    def state_dict(self):
        return {"n": self.n, "history": list(self.history)}

    def load_state_dict(self, state):
        if not isinstance(state.get("n"), int):
            raise ValueError(f"'n' must be an int, got {state.get('n')!r}")
        self.n, self.history = state["n"], list(state["history"])


def test_registered_checkpointables_are_saved_and_restored_on_resume(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path)
    writer = _fresh(cfg)
    writer.register("ema", Counter(7))
    path = writer.save(0)
    assert torch.load(path, weights_only=True)["ema"] == {"n": 7, "history": [7]}

    reader = _fresh(cfg)
    restored = Counter()
    reader.register("ema", restored)
    assert reader.resume_or_load("train").epoch == 0
    assert (restored.n, restored.history) == (7, [7])

    # A file written before the slot existed: resumes, says so, the object keeps its state.
    plain = _fresh(tiny_cfg(tmp_path / "plain"))
    plain.save(0)
    late = _fresh(tiny_cfg(tmp_path / "plain"))
    untouched = Counter(3)
    late.register("ema", untouched)
    with caplog.at_level(logging.WARNING):
        assert late.resume_or_load("train").epoch == 0
    assert "has no 'ema' state; it starts afresh" in caplog.text and untouched.n == 3


def test_a_checkpointable_that_refuses_its_state_stops_the_resume_before_the_model_loads(tmp_path):
    cfg = tiny_cfg(tmp_path)
    writer = _fresh(cfg)
    writer.register("loader_position", Counter(5))
    path = writer.save(0)
    obj = torch.load(path, weights_only=True)
    obj["loader_position"]["n"] = "five"
    torch.save(obj, path)
    reader = _fresh(cfg)
    reader.register("loader_position", Counter())
    before = {k: v.clone() for k, v in reader.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"cannot load the 'loader_position' state of '{path}': "
                                              r"ValueError: 'n' must be an int, got 'five'"):
        reader.resume_or_load("train")
    assert all(torch.equal(v, before[k]) for k, v in reader.model.state_dict().items())


def test_finetune_restores_checkpointables_only_with_the_optimizer(tmp_path):
    source = _fresh(tiny_cfg(tmp_path / "src"))
    source.register("ema", Counter(4))
    path = source.save(2)
    for reset, expected in (("True", 0), ("False", 4)):
        cfg = tiny_cfg(tmp_path / reset, "TRAIN.CHECKPOINT_FILE_PATH", path, "TRAIN.CHECKPOINT_EPOCH_RESET", reset,
                       "SOLVER.MAX_EPOCH", "5")
        target, counter = _fresh(cfg), Counter()
        target.register("ema", counter)
        loaded = target.resume_or_load("train")
        assert loaded == Loaded(path, "TRAIN.CHECKPOINT_FILE_PATH", -1 if reset == "True" else 2)
        assert counter.n == expected


def test_checkpointable_names_and_types_are_checked(tmp_path):
    checkpointer = _fresh(tiny_cfg(tmp_path))
    checkpointer.register("ema", Counter())
    for name in ("model_state", "optimizer_state", "epoch", "cfg", "class_names", "scaler_state", "ema"):
        with pytest.raises(ValueError, match=rf"checkpointable name '{name}' is taken"):
            checkpointer.register(name, Counter())
    with pytest.raises(TypeError, match=r"checkpointable 'position' \(int\) needs state_dict\(\) and load_state_dict"):
        checkpointer.register("position", 3)
    assert list(checkpointer.checkpointables) == ["ema"]


# ------------------------------------------------------------------------------------
# Which file each phase loads
# ------------------------------------------------------------------------------------
def test_training_prefers_auto_resume_then_the_initialisation_file_then_scratch(tmp_path):
    init = _fresh(tiny_cfg(tmp_path / "init")).save(4)
    cfg = tiny_cfg(tmp_path / "run", "TRAIN.CHECKPOINT_FILE_PATH", init)
    assert _fresh(tiny_cfg(tmp_path / "run")).resume_or_load("train") == Loaded(None, "", -1)
    assert _fresh(cfg).resume_or_load("train") == Loaded(init, "TRAIN.CHECKPOINT_FILE_PATH", -1)
    own = _fresh(cfg).save(0)
    assert _fresh(cfg).resume_or_load("train") == Loaded(own, "auto-resume", 0)
    no_resume = tiny_cfg(tmp_path / "run", "TRAIN.CHECKPOINT_FILE_PATH", init, "TRAIN.AUTO_RESUME", "False")
    assert _fresh(no_resume).resume_or_load("train") == Loaded(init, "TRAIN.CHECKPOINT_FILE_PATH", -1)
    with pytest.raises(ValueError, match="phase must be 'train' or 'test'"):
        _fresh(cfg).resume_or_load("val")


def test_testing_prefers_its_file_then_the_newest_checkpoint_then_the_initialisation_file(tmp_path, caplog):
    init = _fresh(tiny_cfg(tmp_path / "init")).save(4)
    explicit = _fresh(tiny_cfg(tmp_path / "explicit")).save(6)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert _fresh(tiny_cfg(out, "TRAIN.CHECKPOINT_FILE_PATH", init)).resume_or_load("test") == \
            Loaded(init, "TRAIN.CHECKPOINT_FILE_PATH", 4)
    assert "testing the initialisation file TRAIN.CHECKPOINT_FILE_PATH" in caplog.text
    own = _fresh(tiny_cfg(out)).save(1)
    assert _fresh(tiny_cfg(out, "TRAIN.CHECKPOINT_FILE_PATH", init)).resume_or_load("test") == \
        Loaded(own, "checkpoint", 1)
    assert _fresh(tiny_cfg(out, "TEST.CHECKPOINT_FILE_PATH", explicit)).resume_or_load("test") == \
        Loaded(explicit, "TEST.CHECKPOINT_FILE_PATH", 6)


def test_testing_random_weights_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(NoCheckpointError, match="TEST.ALLOW_RANDOM_INIT True"):
        Checkpointer(cfg, TinyTestNet(cfg)).resume_or_load("test")
    allowed = tiny_cfg(tmp_path, "TEST.ALLOW_RANDOM_INIT", "True")
    assert Checkpointer(allowed, TinyTestNet(allowed)).resume_or_load("test") == Loaded(None, "", None)


def _bad_path(tmp_path, kind):
    if kind == "missing":
        return str(tmp_path / "no_such.pyth"), "not found"
    if kind == "directory":
        return str(tmp_path), "is a directory; expected a checkpoint file"
    path = str(tmp_path / f"{kind}.pyth")
    os.replace(_fresh(tiny_cfg(tmp_path / "src")).save(0), path)
    {"truncated": broken.truncate, "empty": broken.empty, "random": broken.random_bytes}[kind](path)
    return path, {"truncated": "truncated or corrupt", "empty": "is empty (0 bytes)",
                  "random": "truncated or corrupt"}[kind]


@pytest.mark.parametrize("kind", ["missing", "directory", "truncated", "empty", "random"])
def test_explicit_checkpoint_paths_give_one_clear_error(tmp_path, kind):
    path, reason = _bad_path(tmp_path, kind)
    test_cfg = tiny_cfg(tmp_path / "out", "TEST.CHECKPOINT_FILE_PATH", path)
    with pytest.raises(CheckpointError) as err:
        Checkpointer(test_cfg, TinyTestNet(test_cfg)).resume_or_load("test")
    assert type(err.value) is CheckpointError  # garbage is not mistaken for an "unsafe" file
    assert f"TEST.CHECKPOINT_FILE_PATH '{path}'" in str(err.value) and reason in str(err.value)

    train_cfg = tiny_cfg(tmp_path / "out", "TRAIN.CHECKPOINT_FILE_PATH", path)
    with pytest.raises(CheckpointError) as err:
        _fresh(train_cfg).resume_or_load("train")
    assert f"TRAIN.CHECKPOINT_FILE_PATH '{path}'" in str(err.value) and reason in str(err.value)


# ------------------------------------------------------------------------------------
# The checkpoint folder of a training run, before anything is built
# ------------------------------------------------------------------------------------
def test_a_run_without_auto_resume_refuses_a_folder_with_epoch_checkpoints(tmp_path):
    old = [_fresh(tiny_cfg(tmp_path)).save(e) for e in range(3)]
    before = [open(p, "rb").read() for p in old]
    cfg = tiny_cfg(tmp_path, "TRAIN.AUTO_RESUME", "False")
    with pytest.raises(CheckpointError) as err:
        prepare_checkpoint_dir(cfg)
    assert str(err.value) == (
        f"OUTPUT_DIR {tmp_path} already holds 3 epoch checkpoint(s) (newest '{old[-1]}') and TRAIN.AUTO_RESUME "
        "is False: a new run would overwrite them, and its test could score one of them. Set TRAIN.AUTO_RESUME "
        "True to continue that run, or use a new OUTPUT_DIR for this one.")
    assert [open(p, "rb").read() for p in old] == before
    prepare_checkpoint_dir(tiny_cfg(tmp_path))  # resuming them is fine
    prepare_checkpoint_dir(tiny_cfg(tmp_path / "new", "TRAIN.AUTO_RESUME", "False"))  # so is a new folder


def test_temporary_files_of_interrupted_saves_are_removed_at_the_start(tmp_path, caplog):
    own = _fresh(tiny_cfg(tmp_path)).save(0)
    leftover = os.path.join(checkpoint_dir(str(tmp_path)), ".checkpoint_epoch_00002.pyth.a1b2c3.tmp")
    with open(leftover, "wb") as f:
        f.write(b"\0" * 512)
    with caplog.at_level(logging.INFO):
        prepare_checkpoint_dir(tiny_cfg(tmp_path))
    assert f"Removed '{leftover}' (512 bytes), the temporary file of an interrupted save." in caplog.text
    assert _names(tmp_path) == [os.path.basename(own)]


def test_a_mid_epoch_save_stores_the_last_finished_epoch_and_is_tested_only_as_the_newest_state(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path)
    checkpointer = Checkpointer(cfg, *_trained(cfg))
    checkpointer.save(0)
    mid = checkpointer.save(1, iteration=3)
    assert os.path.basename(mid) == "checkpoint_epoch_00002_iter_000003.pyth"
    assert torch.load(mid, weights_only=True)["epoch"] == 0  # epoch 2 is not finished
    assert _fresh(cfg).resume_or_load("train") == Loaded(mid, "auto-resume", 0)
    with caplog.at_level(logging.WARNING):
        assert _fresh(cfg).resume_or_load("test") == Loaded(mid, "checkpoint", 0)
    assert f"{mid} is a mid-epoch checkpoint: training was stopped inside epoch 2 and has not finished" in caplog.text
    end = checkpointer.save(1)
    assert _names(tmp_path) == ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _fresh(cfg).resume_or_load("test") == Loaded(end, "checkpoint", 1)
    assert "mid-epoch" not in caplog.text
