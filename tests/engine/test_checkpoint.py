import contextlib
import logging
import os
import stat

import pytest
import torch

from tests.conftest import reference_listing
from tests.engine.tiny_parts import TinyTestNet, tiny_cfg
from vov3d.config import ConfigError
from vov3d.engine import checkpoint as cu
from vov3d.engine.optimizer import construct_optimizer
from vov3d.utils import files


def _trained_pair(tmp_path, *overrides):
    cfg = tiny_cfg(tmp_path, *overrides)
    model = TinyTestNet(cfg)
    opt = construct_optimizer(model, cfg)
    model(torch.randn(2, 3, 2, 8, 8)).sum().backward()
    opt.step()  # creates momentum buffers
    return cfg, model, opt


def test_file_name_round_trip_and_stored_keys(tmp_path):
    cfg, model, opt = _trained_pair(tmp_path)
    path = cu.save_checkpoint(str(tmp_path), model, opt, 0, cfg)
    assert os.path.basename(path) == "checkpoint_epoch_00001.pyth"
    assert cu.list_checkpoints(str(tmp_path)) == [path]
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"epoch", "model_state", "optimizer_state", "cfg"} and obj["epoch"] == 0
    assert "MODEL_NAME: TinyTestNet" in obj["cfg"]

    fresh = TinyTestNet(cfg)
    fresh_opt = construct_optimizer(fresh, cfg)
    assert cu.load_for_resume(path, fresh, fresh_opt) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(fresh_opt.state_dict()["state"][0]["momentum_buffer"], buf)


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    cfg, model, opt = _trained_pair(tmp_path)
    good = cu.save_checkpoint(str(tmp_path), model, opt, 0, cfg)

    def crash(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(cu.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        cu.save_checkpoint(str(tmp_path), model, opt, 1, cfg)
    assert os.listdir(cu.checkpoint_dir(str(tmp_path))) == [os.path.basename(good)]


def test_newest_readable_skips_truncated_and_temp_files(tmp_path, caplog):
    cfg, model, opt = _trained_pair(tmp_path)
    first = cu.save_checkpoint(str(tmp_path), model, opt, 0, cfg)
    second = cu.save_checkpoint(str(tmp_path), model, opt, 1, cfg)
    with open(second, "r+b") as f:
        f.truncate(100)
    open(os.path.join(cu.checkpoint_dir(str(tmp_path)), ".checkpoint_epoch_00003.pyth.x.tmp"), "w").close()
    with caplog.at_level(logging.ERROR):
        path, obj = cu.newest_readable(str(tmp_path))
    assert path == first and obj["epoch"] == 0
    assert "checkpoint_epoch_00002.pyth" in caplog.text and "truncated or corrupt" in caplog.text


def test_keep_last_prunes_older_checkpoints(tmp_path):
    cfg, model, opt = _trained_pair(tmp_path)
    for epoch in range(4):
        cu.save_checkpoint(str(tmp_path), model, opt, epoch, cfg, keep_last=2)
    assert [os.path.basename(p) for p in cu.list_checkpoints(str(tmp_path))] == [
        "checkpoint_epoch_00003.pyth", "checkpoint_epoch_00004.pyth"]


def test_finetune_new_head_lists_skipped_keys_and_resets_epoch(tmp_path, caplog):
    cfg, model, opt = _trained_pair(tmp_path)
    path = cu.save_checkpoint(str(tmp_path), model, opt, 7, cfg)
    # A DataParallel-style file too: the `module.` prefix is stripped.
    wrapped = os.path.join(tmp_path, "wrapped.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, wrapped)

    new_cfg = tiny_cfg(tmp_path / "ft", "MODEL.NUM_CLASSES", "7")
    for source in (path, wrapped):
        target = TinyTestNet(new_cfg)
        head_before = target.head.projection.weight.clone()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            epoch = cu.load_for_finetune(source, target, new_cfg, construct_optimizer(target, new_cfg))
        assert epoch == -1
        assert "2 skipped for shape mismatch" in caplog.text
        assert "skipped head.projection.weight: checkpoint [4, 6], model [7, 6]" in caplog.text
        assert torch.equal(target.head.projection.weight, head_before)
        assert torch.equal(target.conv.weight, model.conv.weight)


def test_finetune_epoch_restore_only_when_every_tensor_loaded(tmp_path, caplog):
    cfg, model, opt = _trained_pair(tmp_path, "SOLVER.MAX_EPOCH", "5")
    path = cu.save_checkpoint(str(tmp_path), model, opt, 7, cfg)
    keep = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_EPOCH_RESET", "False", "SOLVER.MAX_EPOCH", "5")
    target = TinyTestNet(keep)
    target_opt = construct_optimizer(target, keep)
    with caplog.at_level(logging.ERROR):
        assert cu.load_for_finetune(path, target, keep, target_opt) == 7
    assert "no training epoch will run" in caplog.text
    assert target_opt.state_dict()["state"], "optimizer state restored"

    other = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_EPOCH_RESET", "False", "MODEL.NUM_CLASSES", "9")
    target = TinyTestNet(other)
    target_opt = construct_optimizer(target, other)
    assert cu.load_for_finetune(path, target, other, target_opt) == 7
    assert not target_opt.state_dict()["state"], "a skipped head must not restore momentum buffers"


def test_strict_test_load_names_the_missing_keys(tmp_path):
    cfg, model, opt = _trained_pair(tmp_path)
    path = cu.save_checkpoint(str(tmp_path), model, opt, 0, cfg)
    assert cu.load_for_test(path, TinyTestNet(cfg), cfg) == 0
    with pytest.raises(cu.CheckpointError, match=r"head\.projection\.weight \(checkpoint \[4, 6\], model \[5, 6\]\)"):
        wrong = tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "5")
        cu.load_for_test(path, TinyTestNet(wrong), wrong)


class Custom:
    def __init__(self):
        self.x = 1


def test_weights_only_refusal_and_unsafe_flag(tmp_path):
    cfg, model, _ = _trained_pair(tmp_path)
    path = os.path.join(tmp_path, "pickled.pth")
    torch.save({"model_state": model.state_dict(), "extra": Custom()}, path)
    with pytest.raises(cu.UnsafeCheckpointError) as err:
        cu.load_for_finetune(path, TinyTestNet(cfg), cfg)
    assert path in str(err.value) and "TRAIN.CHECKPOINT_UNSAFE_LOAD True" in str(err.value)
    with pytest.raises(cu.UnsafeCheckpointError, match="TEST.CHECKPOINT_UNSAFE_LOAD True"):
        cu.load_for_test(path, TinyTestNet(cfg), cfg)
    trusted = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_UNSAFE_LOAD", "True")
    assert cu.load_for_finetune(path, TinyTestNet(trusted), trusted) == -1


def test_caffe2_type_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="caffe2 is not supported"):
        tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_TYPE", "caffe2")  # by validation, before any work
    cfg = tiny_cfg(tmp_path)
    cfg.TRAIN.CHECKPOINT_TYPE = "caffe2"  # a config built by hand
    with pytest.raises(cu.CheckpointError, match="caffe2 is not supported"):
        cu.load_for_finetune("x.pkl", TinyTestNet(cfg), cfg)


def test_wrong_architecture_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path)
    path = os.path.join(tmp_path, "other.pth")
    torch.save({"conv.weight": torch.zeros(6, 3, 3, 3, 3), "bn.weight": torch.zeros(9)}, path)
    with pytest.raises(cu.CheckpointError, match="backbone tensors would not be loaded"):
        cu.load_for_finetune(path, TinyTestNet(cfg), cfg)


def _synthetic_state(name):
    listing = reference_listing(name)["state_dict"]
    return {k: torch.zeros(shape, dtype=getattr(torch, dtype)) for k, shape, dtype in listing}


def test_vov3d_first_release_vs_current_detection():
    v1, v2 = _synthetic_state("vov3d_M_v1_k400"), _synthetic_state("vov3d_M_k400")
    assert cu.vov3d_signature(v1) == (24, False, 1)
    assert cu.vov3d_signature(v2) == (20, True, 2)
    assert cu.vov3d_signature(_synthetic_state("x3d_M_k400")) is None
    with pytest.raises(cu.CheckpointError) as err:
        cu.check_vov3d_variant(v1, v2, "vov3d_M_k400_v1.pth")
    assert "first-release VoV3D-M" in str(err.value)
    assert "VOV3D.STAGE_DEPTHS [1,1,2,2] VOV3D.NUM_CONV 4 VOV3D.INNER_CH 48" in str(err.value)
    with pytest.raises(cu.CheckpointError, match="current VoV3D-M.*VOV3D.NUM_CONV 5 VOV3D.INNER_CH 40"):
        cu.check_vov3d_variant(v2, v1, "new.pth")
    cu.check_vov3d_variant(v2, v2, "same.pth")  # same release: nothing to say


NAMES = ["abseiling", "air drumming", "yoga", "zumba"]


def test_class_names_travel_with_the_checkpoint(tmp_path, caplog):
    cfg, model, opt = _trained_pair(tmp_path)
    path = cu.save_checkpoint(str(tmp_path), model, opt, 0, cfg, class_names=NAMES)
    assert torch.load(path, weights_only=True)["class_names"] == NAMES
    # Same names, or names unknown on either side: loads.
    for names in (NAMES, None):
        assert cu.load_for_test(path, TinyTestNet(cfg), cfg, class_names=names) == 0
    unnamed = cu.save_checkpoint(str(tmp_path / "b"), model, opt, 0, cfg)
    assert cu.load_for_test(unnamed, TinyTestNet(cfg), cfg, class_names=NAMES) == 0

    swapped = [NAMES[0], NAMES[2], NAMES[1], NAMES[3]]
    with pytest.raises(cu.CheckpointError, match=r"label 1 is 'air drumming' there but 'yoga' in the test lists"):
        cu.load_for_test(path, TinyTestNet(cfg), cfg, class_names=swapped)
    with pytest.raises(cu.CheckpointError, match=r"4 classes there, 3 in the training lists"):
        cu.load_for_resume(path, TinyTestNet(cfg), construct_optimizer(TinyTestNet(cfg), cfg),
                           class_names=NAMES[:3])

    # Fine-tuning with the classifier reused under another label order: loads, but says so.
    target = TinyTestNet(cfg)
    with caplog.at_level(logging.WARNING):
        cu.load_for_finetune(path, target, cfg, construct_optimizer(target, cfg), class_names=swapped)
    assert "label 1 is 'air drumming' there but 'yoga'" in caplog.text
    assert torch.equal(target.head.projection.weight, model.head.projection.weight)
    # A new head (other class count) is not compared: its weights are not reused.
    caplog.clear()
    other = tiny_cfg(tmp_path / "ft", "MODEL.NUM_CLASSES", "3")
    target = TinyTestNet(other)
    with caplog.at_level(logging.WARNING):
        cu.load_for_finetune(path, target, other, construct_optimizer(target, other), class_names=NAMES[:3])
    assert "there but" not in caplog.text and "classes there" not in caplog.text


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

    cfg, model, opt = _trained_pair(tmp_path)
    with _umask(mask):
        assert files.current_umask() == mask
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        ckpt = cu.save_checkpoint(str(tmp_path), model, opt, 0, cfg)
        text = tmp_path / "notes.txt"
        files.write_atomic(str(text), lambda f: f.write("säved"), binary=False)
        meter = VideoEnsembleMeter(2, 3)
        save_results(str(tmp_path / "res" / "preds.pkl"), meter, None, {"top1_acc": "0.0"})
    assert _mode(plain) == 0o666 & ~mask
    for path in (ckpt, text, tmp_path / "res" / "preds.pkl", tmp_path / "res" / "preds.json"):
        assert _mode(path) == _mode(plain), path
    assert text.read_text(encoding="utf-8") == "säved"
    assert sorted(os.listdir(tmp_path / "res")) == ["preds.json", "preds.pkl"]  # no temp file left
