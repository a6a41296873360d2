"""Gradient accumulation (TRAIN.GRAD_ACCUMULATION_STEPS): k micro-batches of b clips make
the optimiser step one batch of k*b clips makes, and the schedule, logs and epoch count
optimiser steps. (Under DDP: tests/engine/test_distributed_cpu.py.)"""
import pytest
import torch

from tests.conftest import metrics_records
from tests.engine.tiny_parts import make_fake_trainer_class, tiny_cfg
from vov3d.config import ConfigError
from vov3d.engine.runtime import setup_process
from vov3d.utils import checkpoint_io as cu

InMemoryTrainer = make_fake_trainer_class()


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the clips and the model are built in float64
    yield
    torch.set_default_dtype(previous)


def _train(out, *overrides):
    cfg = tiny_cfg(out, "MODEL.FROZEN_BN", "True", *overrides)
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    trainer.fit()
    state = torch.load(cu.list_checkpoints(str(out))[-1], weights_only=True)["model_state"]
    return trainer, state


def _close(a, b, atol=1e-12):
    return all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


def test_k_micro_batches_make_the_step_of_one_k_times_larger_batch(tmp_path, float64):
    # Clipping by norm is on and active: it must see the accumulated gradient, once per step.
    common = ("SOLVER.CLIP_GRAD_L2NORM", "0.05", "SOLVER.MAX_EPOCH", "2")
    _, accumulated = _train(tmp_path / "k2", "TRAIN.BATCH_SIZE", "2", "TRAIN.GRAD_ACCUMULATION_STEPS", "2", *common)
    _, large = _train(tmp_path / "b4", "TRAIN.BATCH_SIZE", "4", *common)
    _, small = _train(tmp_path / "b2", "TRAIN.BATCH_SIZE", "2", *common)
    _, unclipped = _train(tmp_path / "b4_free", "TRAIN.BATCH_SIZE", "4", "SOLVER.MAX_EPOCH", "2")
    assert accumulated["head.projection.weight"].dtype == torch.float64
    assert _close(accumulated, large)
    assert not _close(small, large, atol=1e-4) and not _close(unclipped, large, atol=1e-4)
    acc_iters, large_iters = (metrics_records(tmp_path / n, "train_iter") for n in ("k2", "b4"))
    assert len(acc_iters) == len(large_iters) == 8  # 4 optimiser steps per epoch in both
    for a, b in zip(acc_iters, large_iters):
        assert (a["iter"], a["lr"]) == (b["iter"], b["lr"])
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-9) and a["top1_err"] == b["top1_err"]
    assert [r["samples"] for r in metrics_records(tmp_path / "k2", "train_epoch")] == [16, 16]


def test_micro_batches_that_do_not_fill_a_step_are_left_out(tmp_path, float64):
    trainer, accumulated = _train(tmp_path / "k3", "TRAIN.BATCH_SIZE", "2", "TRAIN.GRAD_ACCUMULATION_STEPS", "3")
    _, large = _train(tmp_path / "b6", "TRAIN.BATCH_SIZE", "6")  # 16 clips: 2 batches of 6, 4 clips dropped
    assert trainer.steps_per_epoch == 2 and _close(accumulated, large)
    assert [r["samples"] for r in metrics_records(tmp_path / "k3", "train_epoch")] == [12, 12]
    assert [r["iter"] for r in metrics_records(tmp_path / "k3", "train_iter")] == ["1/2", "2/2"] * 2
    log = open(tmp_path / "k3" / "stdout.log").read()
    assert "Each epoch leaves out its last 2 of 8 micro-batches per process" in log
    assert "= global batch 2; x 3 micro-batches per optimiser step (TRAIN.GRAD_ACCUMULATION_STEPS) = " \
           "effective batch 6, 2 optimiser steps per epoch." in log


def test_an_epoch_without_a_whole_step_is_refused_before_training(tmp_path):
    cfg = tiny_cfg(tmp_path, "TRAIN.GRAD_ACCUMULATION_STEPS", "5")  # 16 clips in batches of 4
    setup_process(cfg)
    with pytest.raises(ConfigError, match=r"TRAIN.GRAD_ACCUMULATION_STEPS 5 needs 5 micro-batches per "
                                          r"optimiser step, but the train loader gives 4 per process"):
        InMemoryTrainer(cfg)
    assert cu.list_checkpoints(str(tmp_path)) == []


def test_gradients_are_pending_only_inside_a_step(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path, "TRAIN.BATCH_SIZE", "2", "TRAIN.GRAD_ACCUMULATION_STEPS", "3", "SOLVER.MAX_EPOCH", "1")
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    pending, steps = [], []
    check = trainer._check_loss
    monkeypatch.setattr(trainer, "_check_loss", lambda loss, epoch, it, lr: (
        pending.append(trainer.step.pending), steps.append(it), check(loss, epoch, it, lr)))
    trainer.fit()
    assert pending == [0, 1, 2, 0, 1, 2] and steps == [0, 0, 0, 1, 1, 1]
    assert trainer.step.at_step_boundary
