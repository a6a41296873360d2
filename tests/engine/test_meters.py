import pytest
import torch

from vov3d.datasets.failures import DataLoadError
from vov3d.engine.meters import EpochMeter, VideoEnsembleMeter, topk_errors, topks_correct
from vov3d.engine.metrics import ensemble_views


def test_topk_on_hand_made_scores():
    preds = torch.tensor([[0.1, 0.5, 0.2, 0.15, 0.05, 0.0],
                          [0.3, 0.1, 0.2, 0.25, 0.1, 0.05],
                          [0.0, 0.1, 0.2, 0.3, 0.15, 0.25]])
    labels = torch.tensor([1, 2, 0])
    assert [int(c) for c in topks_correct(preds, labels, (1, 2, 5))] == [1, 1, 2]
    top1, top5 = topk_errors(preds, labels, (1, 5))
    assert float(top1) == pytest.approx(100 * 2 / 3) and float(top5) == pytest.approx(100 / 3)


def test_sum_and_max_ensembles():
    views = torch.tensor([[[0.6, 0.4, 0.0], [0.0, 0.45, 0.55], [0.0, 0.45, 0.55]]])
    assert torch.allclose(ensemble_views(views, "sum"), torch.tensor([[0.6, 1.3, 1.1]]))
    assert torch.allclose(ensemble_views(views, "max"), torch.tensor([[0.6, 0.45, 0.55]]))
    # The two rules disagree on the winner here: sum -> class 1, max -> class 0.
    with pytest.raises(NotImplementedError):
        ensemble_views(views, "mean")


def test_video_meter_counts_each_video_once_and_excludes_failures():
    meter = VideoEnsembleMeter(num_videos=4, num_classes=3)
    # Two "ranks" deliver disjoint, out-of-order videos.
    meter.add(torch.tensor([2, 0]), torch.tensor([[0.1, 0.2, 0.7], [0.9, 0.05, 0.05]]),
              torch.tensor([2, 1]), torch.tensor([0, 0]))
    meter.add(torch.tensor([3, 1]), torch.tensor([[0.2, 0.5, 0.3], [0.0, 0.0, 0.0]]),
              torch.tensor([1, 0]), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="twice"):
        meter.add(torch.tensor([3]), torch.tensor([[1.0, 0, 0]]), torch.tensor([1]), torch.tensor([0]))
    result = meter.finalize(ks=(1, 2))
    # videos 0 (wrong at top-1, right at top-2), 2 (right), 3 (right); video 1 failed.
    assert result["num_videos"] == 3 and result["num_failed"] == 1
    assert result["top1_acc"] == pytest.approx(100 * 2 / 3) and result["top2_acc"] == pytest.approx(100.0)
    assert meter.failed_indices() == [1]
    assert torch.equal(meter.preds[1], torch.zeros(3)) and meter.labels.tolist() == [1, 0, 2, 1]


def test_video_meter_reports_missing_videos():
    meter = VideoEnsembleMeter(num_videos=3, num_classes=2)
    meter.add(torch.tensor([0]), torch.tensor([[1.0, 0.0]]), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(RuntimeError, match="2 of 3 videos got no prediction"):
        meter.finalize()


def test_epoch_meter_medians_and_weighted_means():
    meter = EpochMeter("train", iters_per_epoch=4, max_epoch=2, log_period=2)
    for i, (err, n) in enumerate(((10.0, 2), (30.0, 2), (50.0, 4), (70.0, 4))):
        meter.update_time(0.1, 0.3)
        meter.update_stats(err, err, n, loss=err / 10, lr=0.1 * i)
    line = meter.iter_stats(0, 3)
    assert line["_type"] == "train_iter" and line["top1_err"] == 60.0 and line["iter"] == "4/4"
    assert meter.iter_stats(0, 2) is None  # only every LOG_PERIOD iterations
    epoch = meter.epoch_stats(0)
    assert epoch["top1_err"] == pytest.approx((20 + 60 + 200 + 280) / 12)
    assert epoch["lr"] == pytest.approx(0.3) and epoch["samples"] == 12
    assert meter.data_bound_fraction() == pytest.approx(0.25)


def _all_failed(meter):
    meter.add(torch.arange(len(meter.seen)), torch.ones(len(meter.seen), 2),
              torch.zeros(len(meter.seen), dtype=torch.long), torch.ones(len(meter.seen)))
    with pytest.raises(DataLoadError) as error:
        meter.finalize()
    return str(error.value)


def test_all_failed_names_count_first_paths_and_where_to_look():
    names = ["/data/a.mp4", "/data/b.mp4", "/data/c.mp4", "/data/d.mp4", "/data/e.mp4"]
    message = _all_failed(VideoEnsembleMeter(5, 2, video_path=names.__getitem__))
    assert "every test video failed to load (5 of 5; first: /data/a.mp4, /data/b.mp4, " \
           "/data/c.mp4 ...)" in message and "/data/d.mp4" not in message
    assert "DATA.PATH_TO_DATA_DIR / DATA.PATH_PREFIX" in message and "OUTPUT_DIR/bad_videos.txt" in message
    # Without names the count alone; the hint stays.
    bare = _all_failed(VideoEnsembleMeter(2, 2))
    assert "every test video failed to load (2 of 2)" in bare and "DATA.PATH_PREFIX" in bare


def test_topk_ties_count_exactly_k_classes():
    # Correct at k if the label is among the k highest scores, ties broken by torch.topk, so a tie never makes more than k classes "correct" (all-equal scores,
    # e.g. a collapsed model, must not score 100 % top-1).
    preds = torch.full((4, 4), 0.25)
    labels = torch.arange(4)
    assert [int(c) for c in topks_correct(preds, labels, (1, 2, 4))] == [1, 2, 4]
    partial = torch.tensor([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
    assert int(topks_correct(partial, torch.tensor([0, 1]), (1,))[0]) == 1


def test_a_video_twice_in_one_batch_is_refused_before_anything_is_stored():
    # Each video is counted once. A duplicate inside one gathered batch (e.g.
    # a padding sampler) must not silently overwrite or double-count.
    meter = VideoEnsembleMeter(num_videos=3, num_classes=2)
    with pytest.raises(RuntimeError, match="twice"):
        meter.add(torch.tensor([1, 1]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                  torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert not meter.seen.any() and not meter.preds.any()
