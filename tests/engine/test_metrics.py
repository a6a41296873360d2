"""engine/metrics.py against hand-computed values, and the multi-view gain of a test."""
import pytest
import torch

from vov3d.engine.meters import VideoEnsembleMeter
from vov3d.engine.metrics import (class_accuracy, confusion_matrix, ensemble_views, evaluate, label_ranks,
                                  multiview_gain, spread, subset_hits, view_subsets)

# Six videos, four classes. Video 0 ties classes 0 and 1 (the lower index wins, so it is
# predicted 0 and its label 1 is second); video 2's label ties two lower classes behind a
# higher one (rank 3); video 4 failed to load (its scores would be wrong); no video is of
# class 3.
SCORES = torch.tensor([[0.5, 0.5, 0.0, 0.0],
                       [0.1, 0.7, 0.2, 0.0],
                       [0.2, 0.2, 0.2, 0.4],
                       [0.0, 0.0, 0.9, 0.1],
                       [0.9, 0.0, 0.0, 0.0],
                       [0.3, 0.3, 0.4, 0.0]])
LABELS = torch.tensor([1, 1, 2, 2, 1, 0])
FAILED = torch.tensor([False, False, False, False, True, False])


def test_ranks_break_ties_towards_the_lower_class_index():
    assert label_ranks(SCORES, LABELS).tolist() == [1, 0, 3, 0, 1, 1]


def test_metrics_by_hand_with_ties_an_empty_class_and_a_failed_video():
    metrics, confusion = evaluate(SCORES, LABELS, FAILED, ks=(1, 2, 4))
    assert confusion.tolist() == [[0, 0, 1, 0],
                                  [1, 1, 0, 0],
                                  [0, 0, 1, 1],
                                  [0, 0, 0, 0]]
    assert metrics["num_videos"] == 5 and metrics["num_failed"] == 1
    assert metrics["top1_acc"] == pytest.approx(40.0)  # videos 1 and 3
    assert metrics["top2_acc"] == pytest.approx(80.0)  # all but video 2
    assert metrics["top4_acc"] == pytest.approx(100.0)
    per = metrics["per_class"]
    assert per["support"] == [1, 2, 2, 0] and per["correct"] == [0, 1, 1, 0]
    assert per["accuracy"][:3] == pytest.approx([0.0, 50.0, 50.0]) and per["accuracy"][3] is None
    assert per["classes_without_support"] == [3]
    # The class without videos is listed, not averaged in as 0 %.
    assert metrics["mean_class_acc"] == pytest.approx(100 / 3)


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(torch.tensor([2, 2, 0]), torch.tensor([0, 2, 0]), 3).tolist() == [
        [1, 0, 1], [0, 0, 0], [0, 0, 1]]
    assert class_accuracy(torch.zeros(2, 2, dtype=torch.int64))["accuracy"] == [None, None]


def test_view_subsets_spread_clips_and_take_the_centre_crop():
    assert spread(1, 10) == [5] and spread(2, 10) == [2, 7] and spread(10, 10) == list(range(10))
    subsets = [(s.temporal, s.spatial, s.views) for s in view_subsets(2, 3)]
    assert subsets == [(1, 1, (4,)), (1, 3, (3, 4, 5)), (2, 1, (1, 4)), (2, 3, (0, 1, 2, 3, 4, 5))]
    assert [(s.temporal, s.spatial) for s in view_subsets(3, 1)] == [(1, 1), (2, 1), (3, 1)]
    assert view_subsets(10, 3)[-1].views == tuple(range(30))


def test_subset_hits_by_hand():
    # Two videos of class 0, 2 clips x 1 crop. The 1-clip subset is clip 1: right for video 0,
    # wrong for video 1; summed over both clips both are right.
    views = torch.tensor([[[0.3, 0.7, 0.0], [0.6, 0.0, 0.4]],
                          [[0.9, 0.1, 0.0], [0.3, 0.7, 0.0]]])
    subsets = view_subsets(2, 1)
    hits = subset_hits(views, torch.tensor([0, 0]), subsets, "sum", ks=(1, 2))
    assert hits[:, :, 0].tolist() == [[True, True], [False, True]]
    assert hits[:, :, 1].all()
    gain = multiview_gain(hits, subsets, ks=(1, 2))
    assert [(r["temporal_clips"], r["views"], r["top1_acc"], r["top2_acc"]) for r in gain] == [
        (1, 1, 50.0, 100.0), (2, 2, 100.0, 100.0)]
    # max instead of sum: video 0's 0.7 for class 1 beats its best class-0 score, 0.6.
    assert subset_hits(views, torch.tensor([0, 0]), subsets, "max", ks=(1,))[:, 1, 0].tolist() == [False, True]


def test_full_ensemble_of_the_gain_table_is_the_tests_top1():
    """Random scores with exact ties between views: the full-set row of the gain table
    and the test's top-1 come from the same numbers, however the videos are batched."""
    g = torch.Generator().manual_seed(0)
    views = (torch.rand(40, 6, 5, generator=g) * 4).round() / 4  # many exact ties
    labels = torch.randint(0, 5, (40,), generator=g)
    failed = torch.zeros(40, dtype=torch.bool)
    failed[[3, 17]] = True
    subsets = view_subsets(2, 3)
    meter = VideoEnsembleMeter(40, 5, subsets=subsets)
    for start in range(0, 40, 7):  # uneven batches, as ranks deliver them
        idx = torch.arange(start, min(start + 7, 40))
        probs = ensemble_views(views[idx], "sum")
        meter.add(idx, probs, labels[idx], failed[idx], subset_hits(views[idx], labels[idx], subsets, "sum"))
    metrics = meter.finalize()
    full = metrics["multiview"][-1]
    assert full["views"] == 6 and full["temporal_clips"] == 2 and full["spatial_crops"] == 3
    assert full["top1_acc"] == metrics["top1_acc"] and full["top5_acc"] == metrics["top5_acc"]
    assert metrics["num_videos"] == 38
    assert 0.0 < metrics["top1_acc"] < 100.0
    # The single centre view (clip 1, crop 1 = view 4) is scored on its own.
    single = (label_ranks(views[~failed][:, 4], labels[~failed]) == 0).double().mean() * 100
    assert metrics["multiview"][0]["top1_acc"] == pytest.approx(float(single))
