import json
import math
import os

import pytest

from tests.engine.tiny_parts import make_fake_trainer_class, tiny_cfg
from vov3d.config import assert_and_infer_cfg, get_cfg, merge_overrides
from vov3d.engine.runtime import setup_process
from vov3d.engine.schedule import lr_at_epoch

InMemoryTrainer = make_fake_trainer_class()


def _cfg(*overrides):
    cfg = get_cfg()
    merge_overrides(cfg, list(overrides))
    return assert_and_infer_cfg(cfg)


def test_vov3d_l_kinetics_cosine_reference_values():
    cfg = _cfg("SOLVER.BASE_LR", "0.1", "SOLVER.LR_POLICY", "cosine", "SOLVER.MAX_EPOCH", "256",
               "SOLVER.WARMUP_EPOCHS", "35.0", "SOLVER.WARMUP_START_LR", "0.01")
    assert lr_at_epoch(cfg, 0.0) == pytest.approx(0.01, abs=1e-12)
    assert lr_at_epoch(cfg, 17.5) == pytest.approx(0.052729, abs=1e-6)
    assert lr_at_epoch(cfg, 35.0) == pytest.approx(0.095458, abs=1e-6)
    assert lr_at_epoch(cfg, 128.0) == pytest.approx(0.05, abs=1e-12)
    assert lr_at_epoch(cfg, 200.0) == pytest.approx(0.011349, abs=1e-6)
    # Fractional epochs: warm-up is linear inside an epoch and continuous at its end.
    assert lr_at_epoch(cfg, 0.5) == pytest.approx(0.01 + 0.5 * (0.095458 - 0.01) / 35, abs=1e-7)
    assert lr_at_epoch(cfg, 35.0 - 1e-9) == pytest.approx(lr_at_epoch(cfg, 35.0), abs=1e-8)


def test_cosine_after_warmup_starts_at_base_lr():
    cfg = _cfg("SOLVER.BASE_LR", "0.1", "SOLVER.MAX_EPOCH", "100", "SOLVER.WARMUP_EPOCHS", "10.0",
               "SOLVER.COSINE_AFTER_WARMUP", "True", "SOLVER.COSINE_END_LR", "0.001")
    assert lr_at_epoch(cfg, 10.0) == pytest.approx(0.1)
    assert lr_at_epoch(cfg, 55.0) == pytest.approx(0.001 + 0.099 * 0.5)
    assert lr_at_epoch(cfg, 100.0) == pytest.approx(0.001)


def test_ssv2_finetune_steps_with_warmup():
    cfg = _cfg("SOLVER.BASE_LR", "0.05", "SOLVER.LR_POLICY", "steps_with_relative_lrs",
               "SOLVER.STEPS", "[0, 35, 45]", "SOLVER.LRS", "[1, 0.1, 0.01, 0.001, 0.0001, 0.00001]",
               "SOLVER.MAX_EPOCH", "50", "SOLVER.WARMUP_EPOCHS", "0.19", "SOLVER.WARMUP_START_LR", "0.0001")
    assert lr_at_epoch(cfg, 0.0) == pytest.approx(1e-4)
    assert lr_at_epoch(cfg, 0.095) == pytest.approx(1e-4 + (0.05 - 1e-4) / 2)
    for e, want in ((0.19, 0.05), (1.0, 0.05), (34.99, 0.05), (35.0, 0.005), (44.5, 0.005),
                    (45.0, 5e-4), (49.99, 5e-4), (50.0, 5e-4), (60.0, 5e-4)):
        assert lr_at_epoch(cfg, e) == pytest.approx(want), e


def test_lr_moves_every_iteration_at_the_fractional_epoch(tmp_path):
    # The LR is evaluated at e = epoch + iter / iters_per_epoch before every iteration, as in
    # PySlowFast. 16 clips / batch 4 = 4 iterations per epoch; warm-up over the first epoch.
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "1.0",
                   "SOLVER.WARMUP_START_LR", "0.01", "SOLVER.LR_POLICY", "cosine",
                   "TRAIN.EVAL_PERIOD", "5", "TRAIN.CHECKPOINT_PERIOD", "5")
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    trainer.fit()

    def cosine(e):
        return 0.1 * (1 + math.cos(math.pi * e / 2)) / 2

    def spec_lr(e):
        return 0.01 + e * (cosine(1.0) - 0.01) / 1.0 if e < 1.0 else cosine(e)

    expected = [spec_lr(epoch + it / 4) for epoch in range(2) for it in range(4)]
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        logged = [r["lr"] for r in map(json.loads, f) if r.get("_type") == "train_iter"]
    assert logged == pytest.approx(expected, abs=1e-5)  # the json log keeps 5 decimals
    assert expected[:4] == pytest.approx([0.01, 0.02, 0.03, 0.04])  # warm-up ends at cosine(1) = 0.05
    # The LR of the last iteration is the one the optimizer actually used.
    assert all(g["lr"] == pytest.approx(expected[-1]) for g in trainer.optimizer.param_groups)


@pytest.mark.parametrize("shards, factor", [(1, 0.25), (2, 0.5)])
def test_reference_batch_scaling_uses_the_global_batch(shards, factor):
    # BASE_LR, WARMUP_START_LR and COSINE_END_LR are scaled by global_batch /
    # REFERENCE_BATCH_SIZE, global batch = TRAIN.BATCH_SIZE x NUM_SHARDS.
    cfg = _cfg("NUM_SHARDS", str(shards), "TRAIN.BATCH_SIZE", "8", "SOLVER.REFERENCE_BATCH_SIZE", "32",
               "SOLVER.BASE_LR", "0.4", "SOLVER.WARMUP_START_LR", "0.04", "SOLVER.COSINE_END_LR", "0.004")
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.4 * factor)
    assert cfg.SOLVER.WARMUP_START_LR == pytest.approx(0.04 * factor)
    assert cfg.SOLVER.COSINE_END_LR == pytest.approx(0.004 * factor)
