"""The three load modes: resume (exact), fine-tune (shape-tolerant), test (strict)."""
import logging
import os

import pytest
import torch

from tests.engine.tiny_parts import TinyTestNet, tiny_cfg
from vov3d.engine.checkpoint_loading import load_for_finetune, load_for_resume, load_for_test
from vov3d.engine.checkpointer import Checkpointer
from vov3d.engine.optimizer import construct_optimizer
from vov3d.models.registry import checkpoint_filter, register_checkpoint_filter
from vov3d.utils.checkpoint_io import CheckpointError, UnsafeCheckpointError

LOADING_LOGGERS = ("vov3d.engine.checkpoint_loading", "vov3d.engine.state_matching")


def _trained_pair(tmp_path, *overrides):
    cfg = tiny_cfg(tmp_path, *overrides)
    model = TinyTestNet(cfg)
    opt = construct_optimizer(model, cfg)
    model(torch.randn(2, 3, 2, 8, 8)).sum().backward()
    opt.step()  # creates momentum buffers
    return cfg, model, opt


def _save(cfg, model, opt, epoch, class_names=None):
    return Checkpointer(cfg, model, opt, class_names=class_names).save(epoch)


# ------------------------------------------------------------------------------------
# Fine-tune
# ------------------------------------------------------------------------------------
def test_finetune_new_head_lists_skipped_keys_and_resets_epoch(tmp_path, caplog):
    cfg, model, opt = _trained_pair(tmp_path)
    path = _save(cfg, model, opt, 7)
    # A DataParallel-style file too: the `module.` prefix is stripped.
    wrapped = os.path.join(tmp_path, "wrapped.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, wrapped)

    new_cfg = tiny_cfg(tmp_path / "ft", "MODEL.NUM_CLASSES", "7")
    for source in (path, wrapped):
        target = TinyTestNet(new_cfg)
        head_before = target.head.projection.weight.clone()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            epoch = load_for_finetune(source, target, new_cfg, construct_optimizer(target, new_cfg))
        assert epoch == -1
        assert "2 skipped for shape mismatch" in caplog.text
        assert "skipped head.projection.weight: checkpoint [4, 6], model [7, 6]" in caplog.text
        assert torch.equal(target.head.projection.weight, head_before)
        assert torch.equal(target.conv.weight, model.conv.weight)


def test_finetune_epoch_restore_only_when_every_tensor_loaded(tmp_path, caplog):
    cfg, model, opt = _trained_pair(tmp_path, "SOLVER.MAX_EPOCH", "5")
    path = _save(cfg, model, opt, 7)
    keep = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_EPOCH_RESET", "False", "SOLVER.MAX_EPOCH", "5")
    target = TinyTestNet(keep)
    target_opt = construct_optimizer(target, keep)
    with caplog.at_level(logging.ERROR):
        assert load_for_finetune(path, target, keep, target_opt) == 7
    assert "no training epoch will run" in caplog.text
    assert target_opt.state_dict()["state"], "optimizer state restored"

    other = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_EPOCH_RESET", "False", "MODEL.NUM_CLASSES", "9")
    target = TinyTestNet(other)
    target_opt = construct_optimizer(target, other)
    assert load_for_finetune(path, target, other, target_opt) == 7
    assert not target_opt.state_dict()["state"], "a skipped head must not restore momentum buffers"


def test_wrong_architecture_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path)
    path = os.path.join(tmp_path, "other.pth")
    torch.save({"conv.weight": torch.zeros(6, 3, 3, 3, 3), "bn.weight": torch.zeros(9)}, path)
    with pytest.raises(CheckpointError, match="backbone tensors would not be loaded"):
        load_for_finetune(path, TinyTestNet(cfg), cfg)


# ------------------------------------------------------------------------------------
# Test
# ------------------------------------------------------------------------------------
def test_strict_test_load_names_the_missing_keys(tmp_path):
    cfg, model, opt = _trained_pair(tmp_path)
    path = _save(cfg, model, opt, 0)
    assert load_for_test(path, TinyTestNet(cfg), cfg) == 0
    with pytest.raises(CheckpointError, match=r"head\.projection\.weight \(checkpoint \[4, 6\], model \[5, 6\]\)"):
        wrong = tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "5")
        load_for_test(path, TinyTestNet(wrong), wrong)


def test_test_load_refuses_tensors_the_model_lacks_but_not_bn_counters(tmp_path):
    cfg, model, opt = _trained_pair(tmp_path)
    state = model.state_dict()
    deeper = dict(state, **{"s6.weight": torch.ones(6, 6)})  # a block this network does not have
    path = os.path.join(tmp_path, "deeper.pyth")
    torch.save({"model_state": deeper, "epoch": 3}, path)
    with pytest.raises(CheckpointError) as err:
        load_for_test(path, TinyTestNet(cfg), cfg)
    assert str(err.value) == (f"testing needs exactly this model's weights, but 1 tensors of '{path}' do not fit: "
                              "s6.weight (not in the model). Check MODEL.NUM_CLASSES and the architecture keys "
                              "against the training config.")
    counters = dict(state, **{"extra_bn.num_batches_tracked": torch.tensor(5)})
    torch.save({"model_state": counters, "epoch": 3}, path)
    tested = TinyTestNet(cfg)
    assert load_for_test(path, tested, cfg) == 3
    assert all(torch.equal(v, state[k]) for k, v in tested.state_dict().items())


class Custom:
    def __init__(self):
        self.x = 1


def test_weights_only_refusal_and_unsafe_flag(tmp_path):
    cfg, model, _ = _trained_pair(tmp_path)
    path = os.path.join(tmp_path, "pickled.pth")
    torch.save({"model_state": model.state_dict(), "extra": Custom()}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_for_finetune(path, TinyTestNet(cfg), cfg)
    assert path in str(err.value) and "TRAIN.CHECKPOINT_UNSAFE_LOAD True" in str(err.value)
    assert f"'{__name__}.Custom'" in str(err.value)
    with pytest.raises(UnsafeCheckpointError, match="TEST.CHECKPOINT_UNSAFE_LOAD True"):
        load_for_test(path, TinyTestNet(cfg), cfg)
    trusted = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_UNSAFE_LOAD", "True")
    assert load_for_finetune(path, TinyTestNet(trusted), trusted) == -1


NAMES = ["abseiling", "air drumming", "yoga", "zumba"]


def test_class_names_travel_with_the_checkpoint(tmp_path, caplog):
    cfg, model, opt = _trained_pair(tmp_path)
    path = _save(cfg, model, opt, 0, class_names=NAMES)
    assert torch.load(path, weights_only=True)["class_names"] == NAMES
    # Same names, or names unknown on either side: loads.
    for names in (NAMES, None):
        assert load_for_test(path, TinyTestNet(cfg), cfg, class_names=names) == 0
    unnamed = _save(tiny_cfg(tmp_path / "b"), model, opt, 0)
    assert load_for_test(unnamed, TinyTestNet(cfg), cfg, class_names=NAMES) == 0

    swapped = [NAMES[0], NAMES[2], NAMES[1], NAMES[3]]
    with pytest.raises(CheckpointError, match=r"label 1 is 'air drumming' there but 'yoga' in the test lists"):
        load_for_test(path, TinyTestNet(cfg), cfg, class_names=swapped)
    with pytest.raises(CheckpointError, match=r"4 classes there, 3 in the training lists"):
        load_for_resume(path, TinyTestNet(cfg), construct_optimizer(TinyTestNet(cfg), cfg), class_names=NAMES[:3])

    # Fine-tuning with the classifier reused under another label order: loads, but says so.
    target = TinyTestNet(cfg)
    with caplog.at_level(logging.WARNING):
        load_for_finetune(path, target, cfg, construct_optimizer(target, cfg), class_names=swapped)
    assert "label 1 is 'air drumming' there but 'yoga'" in caplog.text
    assert torch.equal(target.head.projection.weight, model.head.projection.weight)
    # A new head (other class count) is not compared: its weights are not reused.
    caplog.clear()
    other = tiny_cfg(tmp_path / "ft", "MODEL.NUM_CLASSES", "3")
    target = TinyTestNet(other)
    with caplog.at_level(logging.WARNING):
        load_for_finetune(path, target, other, construct_optimizer(target, other), class_names=NAMES[:3])
    assert "there but" not in caplog.text and "classes there" not in caplog.text


# ------------------------------------------------------------------------------------
# Resume: a clear error and nothing loaded when the file is another model's
# ------------------------------------------------------------------------------------
def test_resume_shape_mismatch_names_file_and_keys_and_loads_nothing(tmp_path):
    cfg, model, opt = _trained_pair(tmp_path)
    path = _save(cfg, model, opt, 0)
    cfg = tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "5")
    model = TinyTestNet(cfg)
    opt = construct_optimizer(model, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_for_resume(path, model, opt)
    message = str(err.value)
    assert f"cannot resume from '{path}'" in message
    assert "head.projection.weight (checkpoint [4, 6], model [5, 6])" in message
    assert "head.projection.bias (checkpoint [4], model [5])" in message
    # conv/bn fit by shape; a partial load would have replaced them.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not opt.state_dict()["state"]


def test_resume_blames_a_changed_class_count_on_the_output_dir_not_the_label_lists(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path)
    model = TinyTestNet(cfg)
    names = ["a", "b", "c", "d"]
    path = _save(cfg, model, construct_optimizer(model, cfg), 0, class_names=names)
    other = tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "2")
    target = TinyTestNet(other)
    opt = construct_optimizer(target, other)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    caplog.clear()
    with caplog.at_level("INFO", logger="vov3d.engine"):
        with pytest.raises(CheckpointError, match=r"another experiment \(MODEL\.NUM_CLASSES: stored 4, current 2\)"):
            load_for_resume(path, target, opt, class_names=names[:2], cfg=other)
        # Without a stored config (older files) the tensors tell, still before the class names and
        # without a log line per tensor.
        obj = torch.load(path, weights_only=True)
        del obj["cfg"]
        with pytest.raises(CheckpointError, match=r"head\.projection\.weight \(checkpoint \[4, 6\], model "
                                                  r"\[2, 6\]\).*Was OUTPUT_DIR used by another experiment"):
            load_for_resume(path, target, opt, obj=obj, class_names=names[:2], cfg=other)
    assert not [r for r in caplog.records if r.name in LOADING_LOGGERS]
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    # Same class count, another label order: that one is the label lists' fault.
    with pytest.raises(CheckpointError, match=r"label 0 is 'a' there but 'b' in the training lists"):
        load_for_resume(path, TinyTestNet(cfg), construct_optimizer(TinyTestNet(cfg), cfg),
                        class_names=["b", "a", "c", "d"], cfg=cfg)


def test_resume_refuses_extra_tensors_and_a_foreign_optimizer(tmp_path):
    cfg, model, opt = _trained_pair(tmp_path)
    path = _save(cfg, model, opt, 0)
    obj = torch.load(path, weights_only=True)
    obj["model_state"]["extra.weight"] = torch.zeros(3)
    extra = os.path.join(tmp_path, "extra.pyth")
    torch.save(obj, extra)
    with pytest.raises(CheckpointError, match=r"extra\.weight \(not in the model\)"):
        load_for_resume(extra, TinyTestNet(cfg), construct_optimizer(TinyTestNet(cfg), cfg))

    # Same shapes, but frozen BN leaves the BN group out of the optimizer.
    frozen = tiny_cfg(tmp_path, "MODEL.FROZEN_BN", "True")
    model = TinyTestNet(frozen)
    opt = construct_optimizer(model, frozen)
    conv_before = model.conv.weight.clone()
    with pytest.raises(CheckpointError, match=r"optimizer state does not fit .*2 parameter groups in the file, "
                                              r"1 in the optimizer.*MODEL\.FROZEN_BN.*Use a new OUTPUT_DIR, with "
                                              rf"TRAIN\.CHECKPOINT_FILE_PATH '{path}'"):
        load_for_resume(path, model, opt)
    assert torch.equal(model.conv.weight, conv_before) and not opt.state_dict()["state"]

    adam = tiny_cfg(tmp_path, "SOLVER.OPTIMIZING_METHOD", "adam")
    model = TinyTestNet(adam)
    with pytest.raises(CheckpointError, match=r"group 'decay' was written by another optimizer"):
        load_for_resume(path, model, construct_optimizer(model, adam))


# ------------------------------------------------------------------------------------
# Model-family knowledge is reached through the registry
# ------------------------------------------------------------------------------------
class FilteredNet(TinyTestNet):
    """Its checkpoints once called the classifier `fc`; the filter renames it."""


class FilteredSubNet(FilteredNet):
    pass


@register_checkpoint_filter(FilteredNet)
def _rename_fc(state, model, path):
    if "refuse" in path:
        raise CheckpointError(f"'{path}' is refused by the family filter")
    return {k.replace("fc.", "head.projection."): v for k, v in state.items()}


def test_the_family_filter_runs_for_finetune_and_test_loads(tmp_path):
    cfg, model, _ = _trained_pair(tmp_path)
    old = {k.replace("head.projection.", "fc."): v for k, v in model.state_dict().items()}
    path = str(tmp_path / "old_names.pth")
    torch.save({"model_state": old}, path)
    assert checkpoint_filter(FilteredSubNet(cfg)) is _rename_fc  # inherited by subclasses
    assert checkpoint_filter(TinyTestNet(cfg))(old, None, path) is old  # no filter: unchanged
    for cls in (FilteredNet, FilteredSubNet):
        target = cls(cfg)
        assert load_for_test(path, target, cfg) is None
        assert torch.equal(target.head.projection.weight, model.head.projection.weight)
        target = cls(cfg)
        assert load_for_finetune(path, target, cfg) == -1
        assert torch.equal(target.head.projection.bias, model.head.projection.bias)
    with pytest.raises(CheckpointError, match="refused by the family filter"):
        refused = str(tmp_path / "refuse.pth")
        torch.save({"model_state": old}, refused)
        load_for_test(refused, FilteredNet(cfg), cfg)
    # The unfiltered family sees `fc.*` as foreign keys.
    with pytest.raises(CheckpointError, match=r"head\.projection\.weight \(missing from the checkpoint\)"):
        load_for_test(path, TinyTestNet(cfg), cfg)
    with pytest.raises(KeyError, match="has a checkpoint filter already"):
        register_checkpoint_filter(FilteredNet)(_rename_fc)
