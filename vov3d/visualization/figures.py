"""Figures of evaluation results, drawn with matplotlib's object API on the Agg canvas (no
display, no pyplot state): confusion matrices, top-k prediction histograms, per-class
accuracy, the multi-view gain and training curves.
"""
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Above this many classes a confusion matrix gets no per-cell numbers, and its tick labels
# are thinned to about this many, so a 400-class matrix stays readable and quick to draw.
MAX_CELL_TEXT = 20
MAX_TICK_LABELS = 40


def new_figure(figsize: Optional[Sequence[float]] = None) -> Figure:
    fig = Figure(figsize=tuple(figsize) if figsize else (6.4, 4.8))
    FigureCanvasAgg(fig)
    return fig


def figure_rgb(fig: Figure) -> np.ndarray:
    """uint8 [H, W, 3] pixels of a drawn figure."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure, path: str) -> str:
    fig.savefig(path, format="png", dpi=100)
    return path


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a true class predicted as each class);
    rows of classes without samples stay 0."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def _ticks(count: int) -> np.ndarray:
    step = max(1, math.ceil(count / MAX_TICK_LABELS))
    return np.arange(0, count, step)


def confusion_matrix_figure(rates: np.ndarray, names: Sequence[str], figsize=None,
                            title: str = "Confusion matrix") -> Figure:
    """A row-normalised confusion matrix [n, n] (rows: true class, columns: prediction)."""
    n = len(names)
    fig = new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, interpolation="nearest", cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = _ticks(n)
    size = 8 if n <= MAX_TICK_LABELS else 6
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=45, ha="right", fontsize=size)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=size)
    if n <= MAX_CELL_TEXT:
        for (i, j), value in np.ndenumerate(rates):
            ax.text(j, i, f"{value:.2f}" if value else ".", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.5 else "black")
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def topk_histogram_figure(class_name: str, rates: np.ndarray, k: int, names: Sequence[str],
                          figsize=None) -> Figure:
    """The k classes a true class is most often predicted as, with their frequencies."""
    k = min(k, len(rates))
    order = np.argsort(-rates, kind="stable")[:k]
    fig = new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    positions = np.arange(k)
    ax.bar(positions, rates[order], 0.75, color="orange", edgecolor="w")
    for x, value in zip(positions, rates[order]):
        ax.text(x, value + 0.02, f"{value:.2f}", ha="center", fontsize=7, color="darkorange")
    ax.set_xticks(positions, [names[i] for i in order], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("Frequency")
    ax.set_title(f"Top {k} predictions for {class_name}")
    fig.tight_layout()
    return fig


def class_accuracy_figure(accuracy: Sequence[Optional[float]], support: Sequence[int], names: Sequence[str],
                          k: int = 10) -> Figure:
    """The k best and k worst classes by accuracy (all classes when there are at most 2k);
    classes without test samples are left out."""
    scored = sorted((a, i) for i, a in enumerate(accuracy) if a is not None)
    groups = [("Classes by accuracy", scored)] if len(scored) <= 2 * k else \
        [(f"Best {k} classes", scored[-k:]), (f"Worst {k} classes", scored[:k])]
    rows = max(len(items) for _, items in groups)
    fig = new_figure((6.4 * len(groups), max(2.5, 0.3 * rows + 1.2)))
    for column, (title, items) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), column + 1)
        values = [a for a, _ in items]
        ax.barh(np.arange(len(items)), values, color="steelblue")
        ax.set_yticks(np.arange(len(items)), [f"{names[i]} (n={support[i]})" for _, i in items], fontsize=7)
        ax.set_xlim(0, 100)
        ax.set_xlabel("accuracy (%)")
        ax.set_title(title)
    fig.tight_layout()
    return fig


def multiview_gain_figure(gain: List[Dict]) -> Figure:
    """Top-1 (solid) and top-5 (dashed) accuracy against the number of temporal clips, one
    line per number of spatial crops."""
    fig = new_figure((6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for crops in sorted({row["spatial_crops"] for row in gain}):
        rows = sorted((r for r in gain if r["spatial_crops"] == crops), key=lambda r: r["temporal_clips"])
        clips = [r["temporal_clips"] for r in rows]
        line, = ax.plot(clips, [r["top1_acc"] for r in rows], marker="o", label=f"top-1, {crops} crop(s)")
        ax.plot(clips, [r["top5_acc"] for r in rows], marker=".", linestyle="--", color=line.get_color(),
                label=f"top-5, {crops} crop(s)")
    ax.set_xlabel("temporal clips per video")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(sorted({r["temporal_clips"] for r in gain}))
    ax.set_title("Multi-view gain")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _epoch_number(record: Dict) -> float:
    return float(str(record["epoch"]).split("/")[0])


def _iteration_position(record: Dict) -> float:
    it, iters = (int(v) for v in str(record["iter"]).split("/"))
    return _epoch_number(record) - 1 + it / iters


def training_curves_figure(records: Sequence[Dict]) -> Optional[Figure]:
    """Loss, top-1 error and learning rate against epochs from metrics.jsonl records; None
    when they hold no training epoch."""
    by_kind: Dict[str, List[Dict]] = {}
    for record in records:
        by_kind.setdefault(record.get("_type"), []).append(record)
    epochs = by_kind.get("train_epoch", [])
    if not epochs:
        return None
    iters, vals = by_kind.get("train_iter", []), by_kind.get("val_epoch", [])
    fig = new_figure((12.0, 3.6))
    panels = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    if iters:
        panels[0].plot([_iteration_position(r) for r in iters], [r["loss"] for r in iters], alpha=0.4,
                       label="iteration (window median)")
    panels[0].plot([_epoch_number(r) for r in epochs], [r["loss"] for r in epochs], marker="o", label="epoch mean")
    panels[1].plot([_epoch_number(r) for r in epochs], [r["top1_err"] for r in epochs], marker="o", label="train")
    if vals:
        panels[1].plot([_epoch_number(r) for r in vals], [r["top1_err"] for r in vals], marker="s", label="val")
    lr_rows = iters or epochs
    lr_x = [_iteration_position(r) for r in iters] if iters else [_epoch_number(r) for r in epochs]
    panels[2].plot(lr_x, [r["lr"] for r in lr_rows])
    for ax, title in zip(panels, ("loss", "top-1 error (%)", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    panels[0].legend(fontsize=7)
    panels[1].legend(fontsize=7)
    fig.tight_layout()
    return fig
