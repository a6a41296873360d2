"""Figures: what they show, and that a 400-class confusion matrix stays cheap and legible."""
import io
import time

import numpy as np
import pytest
from PIL import Image

from vov3d.visualization import figures


def _tick_labels(ax, axis):
    return [t.get_text() for t in getattr(ax, f"get_{axis}ticklabels")()]


def test_row_normalised_rates_keep_empty_rows_at_zero():
    rates = figures.row_normalised(np.array([[3, 1], [0, 0]]))
    assert rates.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_small_confusion_matrix_names_every_class_and_cell():
    names = ["a", "b", "c"]
    fig = figures.confusion_matrix_figure(figures.row_normalised(np.eye(3) * 2 + 1), names, (4, 4))
    ax = fig.axes[0]
    assert _tick_labels(ax, "x") == names and _tick_labels(ax, "y") == names
    assert len(ax.texts) == 9 and ax.texts[0].get_text() == "0.60"
    assert figures.figure_rgb(fig).shape == (400, 400, 3)


def test_400_class_confusion_matrix_is_quick_with_sparse_labels_and_no_cell_text(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(400, 400)) + np.eye(400, dtype=np.int64) * 40
    names = [f"class number {i}" for i in range(400)]
    start = time.perf_counter()
    fig = figures.confusion_matrix_figure(figures.row_normalised(counts), names, (8, 8))
    path = figures.save_png(fig, str(tmp_path / "cm.png"))
    seconds = time.perf_counter() - start
    ax = fig.axes[0]
    assert len(ax.texts) == 0
    labels = _tick_labels(ax, "x")
    assert len(labels) <= figures.MAX_TICK_LABELS and labels[:2] == ["class number 0", "class number 10"]
    assert seconds < 20, f"drawing took {seconds:.1f} s"  # about 1 s on an idle core
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (800, 800)


def test_topk_histogram_shows_the_most_frequent_predictions():
    fig = figures.topk_histogram_figure("b", np.array([0.1, 0.6, 0.0, 0.3]), 3, ["a", "b", "c", "d"])
    ax = fig.axes[0]
    assert _tick_labels(ax, "x") == ["b", "d", "a"]
    assert [round(p.get_height(), 2) for p in ax.patches] == [0.6, 0.3, 0.1]


def test_class_accuracy_bars_show_best_and_worst_and_skip_classes_without_videos():
    accuracy = [float(i) for i in range(30)] + [None]
    fig = figures.class_accuracy_figure(accuracy, [5] * 31, [f"c{i}" for i in range(31)], k=3)
    best, worst = fig.axes
    assert [round(p.get_width()) for p in best.patches] == [27, 28, 29]
    assert [round(p.get_width()) for p in worst.patches] == [0, 1, 2]
    assert _tick_labels(worst, "y")[0] == "c0 (n=5)"


def test_gain_and_training_curves_plot_the_given_points():
    gain = [{"temporal_clips": t, "spatial_crops": s, "views": t * s, "top1_acc": 50.0 + t + s, "top5_acc": 90.0}
            for t in (1, 2) for s in (1, 3)]
    ax = figures.multiview_gain_figure(gain).axes[0]
    lines = {line.get_label(): line.get_ydata().tolist() for line in ax.get_lines()}
    assert lines["top-1, 3 crop(s)"] == [54.0, 55.0] and lines["top-1, 1 crop(s)"] == [52.0, 53.0]
    records = [{"_type": "train_iter", "epoch": "1/2", "iter": "1/2", "loss": 2.0, "lr": 0.1},
               {"_type": "train_iter", "epoch": "1/2", "iter": "2/2", "loss": 1.5, "lr": 0.1},
               {"_type": "train_epoch", "epoch": "1/2", "loss": 1.7, "top1_err": 60.0, "lr": 0.1},
               {"_type": "train_epoch", "epoch": "2/2", "loss": 1.2, "top1_err": 40.0, "lr": 0.05},
               {"_type": "val_epoch", "epoch": "2/2", "top1_err": 45.0}]
    loss, error, _ = figures.training_curves_figure(records).axes
    assert loss.get_lines()[0].get_xdata().tolist() == [0.5, 1.0]
    assert [line.get_ydata().tolist() for line in error.get_lines()] == [[60.0, 40.0], [45.0]]
    assert figures.training_curves_figure(records[-1:]) is None
    buffer = io.BytesIO()
    figures.multiview_gain_figure(gain).savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("shape", [(7,), (4, 6), (2, 3, 3, 3, 3)])
def test_tensor_grids_tile_every_plane(shape):
    import torch

    from vov3d.visualization.tensorboard import heatmap_rgb, tile

    tensor = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    planes = tensor.reshape(-1, *tensor.shape[-2:]) if tensor.ndim > 1 else tensor.reshape(1, 1, -1)
    grid = tile(planes)
    assert np.nansum(grid) == pytest.approx(float(tensor.sum()))
    rgb = heatmap_rgb(grid)
    assert rgb.dtype == np.uint8 and rgb.shape == grid.shape + (3,)
