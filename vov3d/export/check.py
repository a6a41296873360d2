"""Exported outputs against the eager model's (float32, relative to the largest eager value).

* clip graphs: random clips, at the exported batch size, and at 1 and 3 when the batch
  axis is dynamic;
* the CoX3D step: a stream of random frames fed to the exported step (its state threaded
  through its own outputs) and to the eager `forward_step`, frame by frame through the
  warm-up and the steady state; the warm-up flags must agree exactly.
"""
from dataclasses import dataclass
from typing import List

import numpy as np
import torch

from vov3d.export.formats import Runner
from vov3d.export.graphs import ExportGraph

TOLERANCE = 1e-4
STREAM_FRAMES = 120


class ExportCheckError(RuntimeError):
    """The exported file does not reproduce the eager model."""


@dataclass
class CheckReport:
    cases: int  # clips compared, or stream frames fed
    max_relative: float  # the largest |exported - eager| / max|eager| seen

    def describe(self, mode: str) -> str:
        what = "clips" if mode == "clip" else "stream frames (warm-up included)"
        return f"{self.cases} {what}, max relative difference {self.max_relative:.2e} (<= {TOLERANCE:g})"


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def check_clip(graph: ExportGraph, run: Runner, dynamic_batch: bool, seed: int = 0) -> CheckReport:
    generator = torch.Generator().manual_seed(seed)
    shape = graph.example[0].shape
    batches = sorted({shape[0], 1, 3}) if dynamic_batch else [shape[0]]
    worst = 0.0
    for batch in batches:
        clip = torch.randn((batch,) + tuple(shape[1:]), generator=generator)
        with torch.no_grad():
            want = graph.module(clip).numpy()
        got = run([clip.numpy()])[0]
        if got.shape != want.shape:
            raise ExportCheckError(f"the exported model returns {list(got.shape)} for a batch of {batch}, "
                                   f"the eager model {list(want.shape)}.")
        worst = max(worst, _relative(got, want))
    if worst > TOLERANCE:
        raise ExportCheckError(f"exported scores differ from the eager model's by {worst:.2e} (relative), "
                               f"more than {TOLERANCE:g}.")
    return CheckReport(len(batches), worst)


def check_step(graph: ExportGraph, run: Runner, frames: int = STREAM_FRAMES, seed: int = 0) -> CheckReport:
    model = graph.module.model
    generator = torch.Generator().manual_seed(seed)
    frame_shape = tuple(graph.example[0].shape)
    state: List[np.ndarray] = [s.numpy() for s in model.initial_state(*frame_shape[:1], *frame_shape[2:])]
    model.reset()
    worst = 0.0
    for t in range(frames):
        frame = torch.randn(frame_shape, generator=generator)
        want = model.forward_step(frame)
        scores, valid, *state = run([frame.numpy(), *state])
        if bool(valid) != (want is not None):
            raise ExportCheckError(f"at stream frame {t} the exported step says valid={bool(valid)}, the "
                                   f"eager model {'gives' if want is not None else 'gives no'} output "
                                   f"(warm-up {model.delay} frames).")
        if want is not None:
            worst = max(worst, _relative(scores, want.numpy()))
    model.reset()
    if worst > TOLERANCE:
        raise ExportCheckError(f"the exported step's scores differ from forward_step's by {worst:.2e} "
                               f"(relative) over {frames} frames, more than {TOLERANCE:g}.")
    return CheckReport(frames, worst)


def check_export(graph: ExportGraph, run: Runner, dynamic_batch: bool) -> CheckReport:
    if graph.mode == "step":
        return check_step(graph, run)
    return check_clip(graph, run, dynamic_batch)
