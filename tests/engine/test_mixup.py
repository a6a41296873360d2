"""Mixup / CutMix / label smoothing: targets against the formulas, cutmix boxes against the
label weights, the draws, the training top-1, and a run with nothing to mix that repeats
plain training bit for bit."""
import io

import numpy as np
import pytest
import torch

from tests.conftest import metrics_records
from tests.engine.tiny_parts import make_fake_trainer_class, tiny_cfg
from vov3d.engine.mixup import MixedBatch, MixUp, cutmix_box, mixed_targets, smoothed_one_hot
from vov3d.engine.runtime import setup_process
from vov3d.utils import checkpoint_io as cu

InMemoryTrainer = make_fake_trainer_class()


def _mixup(alpha=0.8, cutmix=1.0, prob=1.0, switch=0.5, smoothing=0.0, classes=4, seed=0):
    m = MixUp(alpha, cutmix, prob, switch, smoothing, classes)
    m.seed(seed)
    return m


def test_label_smoothing_follows_the_formula():
    labels = torch.tensor([0, 2, 1, 2])
    targets = smoothed_one_hot(labels, 5, 0.2)
    off, on = 0.2 / 5, 1 - 0.2 + 0.2 / 5  # 0.04, 0.84
    expected = torch.full((4, 5), off)
    expected[torch.arange(4), labels] = on
    assert torch.allclose(targets, expected) and torch.allclose(targets.sum(1), torch.ones(4))
    assert torch.equal(smoothed_one_hot(labels, 5, 0.0), torch.nn.functional.one_hot(labels, 5).float())
    mixed = mixed_targets(labels, 5, 0.7, 0.2)
    assert torch.allclose(mixed, 0.7 * expected + 0.3 * expected.flip(0))


def test_mixup_blends_each_clip_with_its_mirror_and_weights_the_labels_alike():
    x = torch.randn(4, 3, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3])
    out = _mixup(alpha=0.8, cutmix=0.0, smoothing=0.1, seed=5)([x.clone()], labels)
    rng = np.random.default_rng(5)
    assert rng.random() < 1.0  # the PROB draw
    lam = float(rng.beta(0.8, 0.8))
    assert out.lam == pytest.approx(lam) and 0 < lam < 1
    assert torch.allclose(out.inputs[0], lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert torch.allclose(out.targets, mixed_targets(labels, 4, lam, 0.1))
    assert torch.equal(out.labels, labels)


@pytest.mark.parametrize("seed", range(12))
def test_cutmix_pastes_one_box_through_all_frames_and_weights_labels_by_its_area(seed):
    n, h, w = 4, 10, 14
    # Clip i holds the value i + 1 everywhere: every pixel tells which clip it came from.
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1, 1).expand(n, 3, 5, h, w).contiguous()
    labels = torch.tensor([3, 1, 0, 2])
    out = _mixup(alpha=0.0, cutmix=1.0, seed=seed)([x], labels)
    mixed = out.inputs[0]
    for i in range(n):
        foreign = mixed[i] != x[i]
        assert torch.all(mixed[i][foreign] == n - i)  # pasted from the mirror clip only
        area = foreign[0, 0]
        assert torch.equal(foreign, area.expand_as(foreign))  # the same box in every frame and channel
        rows, cols = area.any(1).nonzero().flatten(), area.any(0).nonzero().flatten()
        if len(rows):
            assert bool(area[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all())  # a rectangle
        share_foreign = float(area.sum()) / (h * w)
        assert out.lam == pytest.approx(1 - share_foreign)
        assert float(out.targets[i, labels[i]]) == pytest.approx(1 - share_foreign)
        assert float(out.targets[i, labels[n - 1 - i]]) == pytest.approx(share_foreign)
    assert torch.equal(x, torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1, 1).expand_as(x))


def test_cutmix_box_geometry_and_clipping():
    # lam 0.19: sides int(10 * 0.9) = 9 and int(20 * 0.9) = 18, halved on each side of the centre.
    for seed in range(50):
        centre = np.random.default_rng(seed)
        cy, cx = int(centre.integers(0, 10)), int(centre.integers(0, 20))
        (y0, y1, x0, x1), lam = cutmix_box(10, 20, 0.19, np.random.default_rng(seed))
        assert (y0, y1, x0, x1) == (max(cy - 4, 0), min(cy + 4, 10), max(cx - 9, 0), min(cx + 9, 20))
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 200)


def test_the_draws_follow_prob_and_switch_prob():
    def draws(m, count=400):
        return [m.draw(8, 8) for _ in range(count)]

    assert all(lam == 1.0 for lam, _ in draws(_mixup(prob=0.0)))
    assert all(lam == 1.0 for lam, _ in draws(_mixup(alpha=0.0, cutmix=0.0, smoothing=0.1)))
    assert all(box is not None for _, box in draws(_mixup(switch=1.0)))
    assert all(box is None and lam < 1 for lam, box in draws(_mixup(switch=0.0)))
    assert all(box is not None for _, box in draws(_mixup(alpha=0.0)))
    mixed = sum(lam != 1.0 for lam, _ in draws(_mixup(alpha=0.8, cutmix=0.0, prob=0.3), 4000)) / 4000
    assert mixed == pytest.approx(0.3, abs=0.03)
    boxes = sum(box is not None for _, box in draws(_mixup(switch=0.25), 4000)) / 4000
    assert boxes == pytest.approx(0.25, abs=0.03)


def test_the_generator_state_round_trips_through_a_checkpoint_file_and_seeds_repeat():
    m = _mixup(seed=3)
    m.draw(8, 8)
    buffer = io.BytesIO()
    torch.save({"mixup": m.state_dict()}, buffer)
    buffer.seek(0)
    other = _mixup(seed=99)
    other.load_state_dict(torch.load(buffer, weights_only=True)["mixup"])
    assert [m.draw(8, 8) for _ in range(20)] == [other.draw(8, 8) for _ in range(20)]
    assert [_mixup(seed=4).draw(8, 8) for _ in range(2)] == [_mixup(seed=4).draw(8, 8)] * 2
    assert _mixup(seed=4).draw(8, 8) != _mixup(seed=5).draw(8, 8)


def test_nothing_to_mix_or_smooth_passes_the_batch_and_integer_labels_through():
    x, labels = torch.randn(3, 3, 2, 4, 4), torch.tensor([0, 1, 2])
    out = _mixup(prob=0.0)([x], labels)
    assert out.inputs[0] is x and out.targets is labels and out.lam == 1.0
    smoothed = _mixup(prob=0.0, smoothing=0.3)([x], labels)
    assert torch.allclose(smoothed.targets, smoothed_one_hot(labels, 4, 0.3))


def test_training_top1_counts_the_dominant_label_with_the_other_score_folded_in():
    preds = torch.tensor([[0.1, 0.5, 0.3, 0.1], [0.6, 0.1, 0.2, 0.1], [0.2, 0.2, 0.5, 0.1]])
    labels = torch.tensor([2, 0, 1])  # clip 0 is mixed with clip 2, clip 1 with itself
    scores, dominant = MixedBatch([], None, labels, lam=0.7).for_top_k(preds)
    assert dominant.tolist() == [2, 0, 1]
    assert torch.allclose(scores, torch.tensor([[0.1, 0.0, 0.8, 0.1], [0.6, 0.1, 0.2, 0.1], [0.2, 0.7, 0.0, 0.1]]))
    scores, dominant = MixedBatch([], None, labels, lam=0.3).for_top_k(preds)
    assert dominant.tolist() == [1, 0, 2]  # lam < 0.5: the partner's label dominates
    assert torch.allclose(scores, torch.tensor([[0.1, 0.8, 0.0, 0.1], [0.6, 0.1, 0.2, 0.1], [0.2, 0.0, 0.7, 0.1]]))
    same = torch.tensor([2, 0, 2])  # a pair of one class: nothing to fold
    assert torch.equal(MixedBatch([], None, same, lam=0.3).for_top_k(preds)[0], preds)
    assert MixedBatch([], None, labels).for_top_k(preds)[0] is preds


def _run(tmp_path, name, *overrides):
    out = tmp_path / name
    cfg = tiny_cfg(out, "SOLVER.MAX_EPOCH", "2", *overrides)
    setup_process(cfg)
    InMemoryTrainer(cfg).fit()
    state = torch.load(cu.list_checkpoints(str(out))[-1], weights_only=True)["model_state"]
    return state, [r["loss"] for r in metrics_records(out, "train_iter")]


def test_mixup_with_nothing_to_mix_repeats_plain_training_bit_for_bit(tmp_path):
    plain, plain_losses = _run(tmp_path, "plain")
    for name, overrides in (("alphas0", ("MIXUP.ALPHA", "0.0", "MIXUP.CUTMIX_ALPHA", "0.0")),
                            ("prob0", ("MIXUP.PROB", "0.0"))):
        state, losses = _run(tmp_path, name, "MIXUP.ENABLE", "True", "MIXUP.LABEL_SMOOTH_VALUE", "0.0", *overrides)
        assert losses == plain_losses, name
        assert all(torch.equal(state[k], plain[k]) for k in plain), name
    mixed, mixed_losses = _run(tmp_path, "mixed", "MIXUP.ENABLE", "True")
    assert mixed_losses != plain_losses and not torch.equal(mixed["head.projection.weight"],
                                                            plain["head.projection.weight"])
