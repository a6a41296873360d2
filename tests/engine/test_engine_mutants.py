"""Training-loop rules that plausible one-line bugs broke without any other test failing
(found by a mutation check); expected values follow framework.md, not the code."""
import json
import math
import os

import pytest
import torch
import torch.nn as nn

from tests.engine.tiny_parts import make_fake_trainer_class, tiny_cfg
from vov3d.config import assert_and_infer_cfg, get_cfg, merge_overrides
from vov3d.engine.meters import VideoEnsembleMeter, topks_correct
from vov3d.engine.optimizer import construct_optimizer, param_groups
from vov3d.engine.runtime import setup_process

InMemoryTrainer = make_fake_trainer_class()


def _cfg(*overrides):
    cfg = get_cfg()
    merge_overrides(cfg, list(overrides))
    return assert_and_infer_cfg(cfg)


class BnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 1)
        self.bn = nn.BatchNorm3d(4)


def test_lr_moves_every_iteration_at_the_fractional_epoch(tmp_path):
    # framework.md 3.3: lr is evaluated at e = epoch + iter / iters_per_epoch before every
    # iteration. 16 clips / batch 4 = 4 iterations per epoch; warm-up over the first epoch.
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


def test_sgd_takes_momentum_dampening_and_nesterov_from_the_config():
    # framework.md 3.2: SGD(momentum=MOMENTUM, dampening=DAMPENING, nesterov=NESTEROV).
    opt = construct_optimizer(BnNet(), _cfg("SOLVER.MOMENTUM", "0.8", "SOLVER.DAMPENING", "0.1",
                                            "SOLVER.NESTEROV", "False", "SOLVER.BASE_LR", "0.3"))
    assert isinstance(opt, torch.optim.SGD)
    for group in opt.param_groups:
        assert (group["momentum"], group["dampening"], group["nesterov"], group["lr"]) == (0.8, 0.1, False, 0.3)


def test_bn_group_uses_bn_weight_decay():
    # framework.md 3.2: names containing "bn" get BN.WEIGHT_DECAY (0.0 by default, so a
    # non-default value is needed to tell it from a hard-coded zero).
    model = BnNet()
    groups = param_groups(model, _cfg("BN.WEIGHT_DECAY", "1e-4", "SOLVER.WEIGHT_DECAY", "5e-5"))
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert {n: wd[id(p)] for n, p in model.named_parameters()} == {
        "conv.weight": 5e-5, "conv.bias": 5e-5, "bn.weight": 1e-4, "bn.bias": 1e-4}


def test_adam_betas():
    # framework.md 3.2: adam uses betas (0.9, 0.999).
    opt = construct_optimizer(BnNet(), _cfg("SOLVER.OPTIMIZING_METHOD", "adam"))
    assert all(g["betas"] == (0.9, 0.999) for g in opt.param_groups)


@pytest.mark.parametrize("shards, factor", [(1, 0.25), (2, 0.5)])
def test_reference_batch_scaling_uses_the_global_batch(shards, factor):
    # framework.md 5.3: BASE_LR, WARMUP_START_LR and COSINE_END_LR are scaled by
    # global_batch / REFERENCE_BATCH_SIZE, global batch = TRAIN.BATCH_SIZE x NUM_SHARDS.
    cfg = _cfg("NUM_SHARDS", str(shards), "TRAIN.BATCH_SIZE", "8", "SOLVER.REFERENCE_BATCH_SIZE", "32",
               "SOLVER.BASE_LR", "0.4", "SOLVER.WARMUP_START_LR", "0.04", "SOLVER.COSINE_END_LR", "0.004")
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.4 * factor)
    assert cfg.SOLVER.WARMUP_START_LR == pytest.approx(0.04 * factor)
    assert cfg.SOLVER.COSINE_END_LR == pytest.approx(0.004 * factor)


def test_topk_ties_count_exactly_k_classes():
    # framework.md 3.13: correct at k if the label is among the k highest scores, ties broken
    # by torch.topk, so a tie never makes more than k classes "correct" (all-equal scores,
    # e.g. a collapsed model, must not score 100 % top-1).
    preds = torch.full((4, 4), 0.25)
    labels = torch.arange(4)
    assert [int(c) for c in topks_correct(preds, labels, (1, 2, 4))] == [1, 2, 4]
    partial = torch.tensor([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
    assert int(topks_correct(partial, torch.tensor([0, 1]), (1,))[0]) == 1


def test_a_video_twice_in_one_batch_is_refused_before_anything_is_stored():
    # framework.md 4.4: each video counted once. A duplicate inside one gathered batch (e.g.
    # a padding sampler) must not silently overwrite or double-count.
    meter = VideoEnsembleMeter(num_videos=3, num_classes=2)
    with pytest.raises(RuntimeError, match="twice"):
        meter.add(torch.tensor([1, 1]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                  torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert not meter.seen.any() and not meter.preds.any()
