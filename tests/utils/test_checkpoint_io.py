"""Checkpoint files: names, atomic and space-aware writing, pruning, safe reading."""
import contextlib
import errno
import io
import logging
import os
import stat
import subprocess
from collections import OrderedDict

import pytest
import torch

from tests.utils import broken_files as broken
from vov3d.utils import checkpoint_io as cio
from vov3d.utils import files


def _state(n=16, epoch=0):
    return {"epoch": epoch, "model_state": OrderedDict(w=torch.arange(float(n)))}


def _saved(out, epoch, n=16):
    path = cio.checkpoint_path(str(out), epoch)
    cio.write_checkpoint(path, _state(n, epoch))
    return path


def _names(out):
    return sorted(os.listdir(cio.checkpoint_dir(str(out))))


# ------------------------------------------------------------------------------------
# Names, discovery, stale temporary files
# ------------------------------------------------------------------------------------
def test_names_discovery_and_size(tmp_path):
    first = cio.checkpoint_path(str(tmp_path), 0)
    assert first == str(tmp_path / "checkpoints" / "checkpoint_epoch_00001.pyth")
    size = cio.write_checkpoint(first, _state())
    assert size == os.path.getsize(first)
    second = _saved(tmp_path, 11)
    for other in (".checkpoint_epoch_00003.pyth.x.tmp", "checkpoint_epoch_3.pyth", "notes.txt"):
        open(os.path.join(cio.checkpoint_dir(str(tmp_path)), other), "w").close()
    assert cio.list_checkpoints(str(tmp_path)) == [first, second]
    assert cio.list_checkpoints(str(tmp_path / "nowhere")) == []
    assert torch.equal(torch.load(first, weights_only=True)["model_state"]["w"], torch.arange(16.0))


def test_stale_temp_files_of_checkpoints_are_removed_and_logged(tmp_path, caplog):
    _saved(tmp_path, 0)
    folder = cio.checkpoint_dir(str(tmp_path))
    stale = [os.path.join(folder, ".checkpoint_epoch_00002.pyth.k2x9q_a.tmp"),
             os.path.join(folder, ".checkpoint_epoch_00007.pyth.zz.tmp")]
    for path in stale:
        with open(path, "wb") as f:
            f.write(b"x" * 1000)
    kept = ["notes.tmp", ".preds.pkl.ab12.tmp", ".checkpoint_epoch_2.pyth.a.tmp"]
    for name in kept:
        open(os.path.join(folder, name), "w").close()
    with caplog.at_level(logging.INFO, logger="vov3d.utils.checkpoint_io"):
        assert cio.remove_stale_temp_files(str(tmp_path)) == stale
    assert _names(tmp_path) == sorted(kept + ["checkpoint_epoch_00001.pyth"])
    for path in stale:
        assert f"Removed '{path}' (1000 bytes), the temporary file of an interrupted save." in caplog.text
    assert cio.remove_stale_temp_files(str(tmp_path / "fresh")) == []


# ------------------------------------------------------------------------------------
# Writing: atomic, and a full disk is one clear error that keeps the older files
# ------------------------------------------------------------------------------------
def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    good = _saved(tmp_path, 0)

    def crash(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(cio.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        cio.write_checkpoint(cio.checkpoint_path(str(tmp_path), 1), _state())
    assert _names(tmp_path) == [os.path.basename(good)]


def _serialised_size(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return len(buffer.getvalue())


def test_disk_full_names_the_file_and_size_and_keeps_older_checkpoints(tmp_path, monkeypatch):
    older = [_saved(tmp_path, 0), _saved(tmp_path, 1)]
    before = [open(p, "rb").read() for p in older]

    def full_at_sync(fd):  # file systems with delayed allocation report a full disk here
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full_at_sync)
    target = cio.checkpoint_path(str(tmp_path), 2)
    with pytest.raises(cio.CheckpointError) as err:
        cio.write_checkpoint(target, _state(64, 2))
    message = str(err.value)
    assert message.startswith(f"no space left on device while writing checkpoint '{target}' "
                              f"({_serialised_size(_state(64, 2)):,} bytes; ")
    assert "older checkpoints are intact" in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one line, no torch chain
    assert _names(tmp_path) == ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    assert [open(p, "rb").read() for p in older] == before

    # Another OSError is not mistaken for a full disk.
    monkeypatch.setattr(files.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="I/O error") as err:
        cio.write_checkpoint(target, _state(64, 2))
    assert not isinstance(err.value, cio.CheckpointError)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_on_a_real_small_file_system(tiny_tmpfs):
    small = _saved(tiny_tmpfs, 0)
    target = cio.checkpoint_path(str(tiny_tmpfs), 1)
    size = _serialised_size(_state(40000, 1))  # 160 kB of floats
    with pytest.raises(cio.CheckpointError, match=r"^no space left on device while writing checkpoint "
                                                  rf"'{target}' \({size:,} bytes; [\d,]+ bytes free there\)"):
        cio.write_checkpoint(target, _state(40000, 1))
    assert _names(tiny_tmpfs) == ["checkpoint_epoch_00001.pyth"]
    assert torch.load(small, weights_only=True)["epoch"] == 0


def test_pruning_keeps_the_newest_and_never_counts_later_names(tmp_path):
    for epoch in range(4):
        _saved(tmp_path, epoch)
    stray = _saved(tmp_path, 8)
    removed = cio.prune_checkpoints(cio.checkpoint_path(str(tmp_path), 3), keep_last=2)
    assert [os.path.basename(p) for p in removed] == ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    assert _names(tmp_path) == ["checkpoint_epoch_00003.pyth", "checkpoint_epoch_00004.pyth",
                                os.path.basename(stray)]


# ------------------------------------------------------------------------------------
# Reading: broken files, unsafe files
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("breakage,reason", [
    (broken.truncate, "truncated or corrupt"), (broken.empty, "is empty (0 bytes)"),
    (broken.random_bytes, "truncated or corrupt"), (broken.flip_tensor_bytes, "fails the CRC check")])
def test_broken_files_are_corrupt_not_unsafe(tmp_path, breakage, reason):
    path = _saved(tmp_path, 0, n=4000)
    breakage(path)
    with pytest.raises(cio.CheckpointError) as err:
        cio.read_checkpoint(path, source="TEST.CHECKPOINT_FILE_PATH")
    assert type(err.value) is cio.CheckpointError
    assert str(err.value).startswith(f"TEST.CHECKPOINT_FILE_PATH '{path}' ") and reason in str(err.value)


def test_missing_directory_and_non_dict_files(tmp_path):
    with pytest.raises(cio.CheckpointError, match=r"source 'nope.pyth' not found\."):
        cio.read_checkpoint("nope.pyth", source="source")
    newest = _saved(tmp_path, 2)
    for folder in (str(tmp_path), cio.checkpoint_dir(str(tmp_path))):
        with pytest.raises(cio.CheckpointError, match=rf"is a directory; expected a checkpoint file\. The newest "
                                                      rf"checkpoint inside is '{newest}'\."):
            cio.read_checkpoint(folder)
    listed = str(tmp_path / "list.pth")
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(cio.CheckpointError, match=r"holds a list, expected a dict"):
        cio.read_checkpoint(listed)


class RunsAShellCommand:
    """Pickles as a call of posix.system: loading it fully would run the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_blocked_global_is_reported_as_unsafe_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = str(tmp_path / "trojan.pyth")
    torch.save({"model_state": {"w": torch.zeros(2)}, "extra": RunsAShellCommand(f"touch {marker}")}, path)
    for setting in ("TEST.CHECKPOINT_UNSAFE_LOAD", "TRAIN.CHECKPOINT_UNSAFE_LOAD"):
        with pytest.raises(cio.UnsafeCheckpointError) as err:
            cio.read_checkpoint(path, unsafe_setting=setting, source="TEST.CHECKPOINT_FILE_PATH")
        message = str(err.value)
        assert message.startswith(f"TEST.CHECKPOINT_FILE_PATH '{path}' is readable but unsafe: it names the "
                                  "Python global 'posix.system'")
        assert "blocks the module 'posix' outright" in message and f"set {setting} True." in message
        assert "truncated or corrupt" not in message and "\n" not in message
    with pytest.raises(cio.UnsafeCheckpointError, match=r"If you trust the file, rerun with --unsafe-load\.$"):
        cio.read_checkpoint(path, unsafe_setting="--unsafe-load")
    # As the newest checkpoint of a run it stops the search: it is the run's state, not garbage.
    os.makedirs(cio.checkpoint_dir(str(tmp_path)))
    os.replace(path, cio.checkpoint_path(str(tmp_path), 1))
    _saved(tmp_path, 0)
    with pytest.raises(cio.UnsafeCheckpointError, match="posix.system"):
        cio.newest_readable(str(tmp_path))
    assert not marker.exists()


def test_newest_readable_skips_truncated_and_temp_files(tmp_path, caplog):
    first = _saved(tmp_path, 0)
    second = _saved(tmp_path, 1)
    with open(second, "r+b") as f:
        f.truncate(100)
    open(os.path.join(cio.checkpoint_dir(str(tmp_path)), ".checkpoint_epoch_00003.pyth.x.tmp"), "w").close()
    with caplog.at_level(logging.ERROR):
        path, obj = cio.newest_readable(str(tmp_path))
    assert path == first and obj["epoch"] == 0
    assert "checkpoint_epoch_00002.pyth" in caplog.text and "truncated or corrupt" in caplog.text
    assert cio.newest_readable(str(tmp_path / "empty")) == (None, None)


# ------------------------------------------------------------------------------------
# What a checkpoint holds
# ------------------------------------------------------------------------------------
def test_state_dict_from_every_layout():
    weights = OrderedDict([("conv.weight", torch.ones(2)), ("bn.bias", torch.zeros(2))])
    layouts = [weights, {"model_state": weights, "epoch": 3}, {"state_dict": weights, "meta": {}},
               {"model": weights}, {"state_dict": OrderedDict(("module." + k, v) for k, v in weights.items())}]
    for layout in layouts:
        state = cio.state_dict_from(layout, "f.pth")
        assert list(state) == list(weights) and all(torch.equal(state[k], weights[k]) for k in weights)
    half = {"module.conv.weight": torch.ones(1), "bn.bias": torch.ones(1)}  # only a full prefix is a wrapper
    assert list(cio.state_dict_from(half)) == list(half)
    for bad in ({"state_dict": {"note": "empty"}}, {}, {"w": torch.ones(1), "epoch": 3}):
        with pytest.raises(cio.CheckpointError, match=r"'f.pth' has no state dict: expected tensors under"):
            cio.state_dict_from(bad, "f.pth")
    assert [cio.stored_epoch(o) for o in ({"epoch": 4}, {"epoch": torch.tensor(2)}, {}, {"epoch": "x"})] == \
        [4, 2, None, None]


# ------------------------------------------------------------------------------------
# Atomic files get the mode open() gives, not mkstemp's private 0600
# ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, mask):
    from vov3d.engine.meters import VideoEnsembleMeter
    from vov3d.engine.test import save_results

    with _umask(mask):
        assert files.current_umask() == mask
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        ckpt = _saved(tmp_path, 0)
        text = tmp_path / "notes.txt"
        files.write_atomic(str(text), lambda f: f.write("säved"), binary=False)
        meter = VideoEnsembleMeter(2, 3)
        save_results(str(tmp_path / "res" / "preds.pkl"), meter, None, {"top1_acc": "0.0"})
    assert _mode(plain) == 0o666 & ~mask
    for path in (ckpt, text, tmp_path / "res" / "preds.pkl", tmp_path / "res" / "preds.json"):
        assert _mode(path) == _mode(plain), path
    assert text.read_text(encoding="utf-8") == "säved"
    assert sorted(os.listdir(tmp_path / "res")) == ["preds.json", "preds.pkl"]  # no temp file left


# ------------------------------------------------------------------------------------
# Mid-epoch checkpoints: named by epoch and iteration, ordered by how far the run got
# ------------------------------------------------------------------------------------
def test_mid_epoch_names_order_by_progress_not_by_name(tmp_path):
    mid = cio.checkpoint_path(str(tmp_path), 3, 25)  # 25 iterations into the 4th epoch
    assert os.path.basename(mid) == "checkpoint_epoch_00004_iter_000025.pyth"
    assert cio.progress(mid) == (3, 25) and cio.is_mid_epoch(mid)
    end = cio.checkpoint_path(str(tmp_path), 3)  # the 4th epoch finished: sorts before the mid file by name
    assert cio.progress(end) == (4, 0) and not cio.is_mid_epoch(end)
    for path in (end, mid, cio.checkpoint_path(str(tmp_path), 2), cio.checkpoint_path(str(tmp_path), 3, 7)):
        cio.write_checkpoint(path, _state())
    open(os.path.join(cio.checkpoint_dir(str(tmp_path)), ".checkpoint_epoch_00004_iter_000025.pyth.a.tmp"), "w").close()
    assert [os.path.basename(p) for p in cio.list_checkpoints(str(tmp_path))] == [
        "checkpoint_epoch_00003.pyth", "checkpoint_epoch_00004_iter_000007.pyth",
        "checkpoint_epoch_00004_iter_000025.pyth", "checkpoint_epoch_00004.pyth"]
    assert cio.newest_readable(str(tmp_path))[0] == end
    assert cio.remove_stale_temp_files(str(tmp_path))  # a killed mid-epoch save is cleaned up too
    with pytest.raises(ValueError, match="is not named like a checkpoint"):
        cio.progress("model_final.pyth")


def test_a_later_checkpoint_removes_the_mid_epoch_ones_before_it_and_keep_last_counts_epochs(tmp_path, caplog):
    for epoch in range(3):
        _saved(tmp_path, epoch)
    first_mid = cio.checkpoint_path(str(tmp_path), 3, 2)
    cio.write_checkpoint(first_mid, _state())
    later_mid = cio.checkpoint_path(str(tmp_path), 3, 5)
    cio.write_checkpoint(later_mid, _state())
    with caplog.at_level(logging.INFO, logger="vov3d.utils.checkpoint_io"):
        assert cio.prune_checkpoints(later_mid, keep_last=1) == [first_mid]  # epoch files stay for a mid save
    assert f"Removed mid-epoch checkpoint {first_mid}: checkpoint_epoch_00004_iter_000005.pyth is newer." in caplog.text
    end = _saved(tmp_path, 3)
    assert [os.path.basename(p) for p in cio.prune_checkpoints(end, keep_last=2)] == [
        "checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth", "checkpoint_epoch_00004_iter_000005.pyth"]
    assert _names(tmp_path) == ["checkpoint_epoch_00003.pyth", "checkpoint_epoch_00004.pyth"]
    # keep_last 0 keeps every epoch file, but never a mid-epoch file the run got past.
    mid = cio.checkpoint_path(str(tmp_path), 4, 1)
    cio.write_checkpoint(mid, _state())
    assert cio.prune_checkpoints(_saved(tmp_path, 4), keep_last=0) == [mid]
