"""Writing figures, tensors and videos to a TensorBoard SummaryWriter.

Evaluation plots follow PySlowFast's TENSORBOARD.CONFUSION_MATRIX / HISTOGRAM / CATEGORIES_PATH
switches; their tags start with the split ("Val/", "Test/") so the validation and test plots
of one run stay apart. Videos are written as animated GIF image summaries (what
`add_video` writes, encoded with Pillow instead of moviepy).
"""
import io
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from vov3d.visualization import figures
from vov3d.visualization.class_names import default_names, read_categories, read_class_subset


class EvalPlots:
    """Confusion matrices (all classes, SUBSET_PATH, one per parent category) and top-k
    prediction histograms of one evaluation, as configured under TENSORBOARD."""

    def __init__(self, cfg, class_names: Optional[Sequence[str]]):
        tb = cfg.TENSORBOARD
        self.cfg = tb
        self.names = list(class_names) if class_names is not None else default_names(cfg.MODEL.NUM_CLASSES)
        matrix = tb.CONFUSION_MATRIX
        self.cm_subset = (read_class_subset(matrix.SUBSET_PATH, class_names, "TENSORBOARD.CONFUSION_MATRIX.SUBSET_PATH")
                          if matrix.ENABLE and matrix.SUBSET_PATH else None)
        self.parents = (read_categories(tb.CATEGORIES_PATH, class_names)
                        if matrix.ENABLE and tb.CATEGORIES_PATH else None)
        hist = tb.HISTOGRAM
        self.hist_subset = (read_class_subset(hist.SUBSET_PATH, class_names, "TENSORBOARD.HISTOGRAM.SUBSET_PATH")
                            if hist.ENABLE and hist.SUBSET_PATH else None)

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.CONFUSION_MATRIX.ENABLE or self.cfg.HISTOGRAM.ENABLE)

    def write(self, writer, confusion: torch.Tensor, step: int, prefix: str) -> List[str]:
        """Draw the configured plots of a confusion matrix (counts) under `prefix`; the tags written."""
        rates = figures.row_normalised(confusion.cpu().numpy())
        tags = []
        if self.cfg.CONFUSION_MATRIX.ENABLE:
            groups = [("Confusion Matrix", None)]
            if self.cm_subset is not None:
                groups.append(("Confusion Matrix Subset", self.cm_subset))
            for parent, children in (self.parents or {}).items():
                groups.append((f"Confusion Matrices Grouped by Parent Classes/{parent}", children))
            for tag, ids in groups:
                ids = list(range(len(self.names))) if ids is None else ids
                if ids:
                    fig = figures.confusion_matrix_figure(rates[np.ix_(ids, ids)], [self.names[i] for i in ids],
                                                          self.cfg.CONFUSION_MATRIX.FIGSIZE, tag.split("/")[-1])
                    tags.append(add_figure(writer, f"{prefix}/{tag}", fig, step))
        if self.cfg.HISTOGRAM.ENABLE:
            k = self.cfg.HISTOGRAM.TOPK
            for i in self.hist_subset if self.hist_subset is not None else range(len(self.names)):
                fig = figures.topk_histogram_figure(self.names[i], rates[i], k, self.names, self.cfg.HISTOGRAM.FIGSIZE)
                tags.append(add_figure(writer, f"{prefix}/Top {k} predictions by classes/{self.names[i]}", fig, step))
        return tags


def add_figure(writer, tag: str, fig, step: int) -> str:
    writer.add_image(tag, figures.figure_rgb(fig), global_step=step, dataformats="HWC")
    return tag


def add_scalars(writer, scalars: Dict[str, float], step: int) -> None:
    for tag, value in scalars.items():
        if value is not None and math.isfinite(value):
            writer.add_scalar(tag, value, global_step=step)


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """An animated GIF of uint8 frames [T, H, W, 3], looping."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(int(round(1000 / fps)), 20))
    return out.getvalue()


def add_gif(writer, tag: str, frames: np.ndarray, step: int = 0, fps: float = 4.0) -> str:
    """uint8 frames [T, H, W, 3] as an animated image summary (TensorBoard's video format)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width = frames.shape[1:3]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encode_gif(frames, fps))
    # SummaryWriter has no public call for an encoded image; its file writer takes the summary.
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
    return tag


def tile(planes: torch.Tensor, columns: Optional[int] = None, pad: int = 1) -> np.ndarray:
    """2-D planes [N, h, w] laid out in a grid [rows*(h+pad)-pad, columns*(w+pad)-pad], NaN between."""
    n, h, w = planes.shape
    columns = columns or max(1, int(math.sqrt(n)))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad), np.nan, dtype=np.float32)
    for i, plane in enumerate(planes.float().cpu().numpy()):
        r, c = divmod(i, columns)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = plane
    return grid


def heatmap_rgb(values: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """Values scaled to [0, 1] over their finite range and coloured; NaN (grid gaps) white."""
    from matplotlib import colormaps

    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 1.0)
    scaled = np.where(finite, (values - low) / (high - low if high > low else 1.0), 0.0)
    rgb = colormaps[colormap](scaled)[..., :3]
    rgb[~finite] = 1.0
    return (rgb * 255).astype(np.uint8)


def add_tensor_grid(writer, tag: str, tensor: torch.Tensor, step: int = 0, heat_map: bool = True) -> str:
    """Weights or activations as one image: their last two dimensions are planes, tiled in a
    grid (a vector becomes a square-ish plane), coloured with viridis or kept grey."""
    tensor = tensor.detach().float().cpu()
    if tensor.ndim <= 1:
        flat = tensor.reshape(-1)
        side = max(1, int(math.sqrt(flat.numel())))
        tensor = torch.nn.functional.pad(flat, (0, (-flat.numel()) % side)).reshape(-1, side)
    grid = tile(tensor.reshape(-1, *tensor.shape[-2:]))
    if heat_map:
        writer.add_image(tag, heatmap_rgb(grid), global_step=step, dataformats="HWC")
    else:
        finite = np.nan_to_num(grid, nan=float(np.nanmin(grid)) if np.isfinite(grid).any() else 0.0)
        span = finite.max() - finite.min()
        writer.add_image(tag, (finite - finite.min()) / (span if span > 0 else 1.0), global_step=step,
                         dataformats="HW")
    return tag
