#!/usr/bin/env python3
"""Data-loading benchmark: training clips/s with 0, 1 and 2 workers, test videos/s with
decode-once vs one decode per view, decoded frames per test video, and a PySlowFast-style
baseline clip loader (selective PyAV decoding converting every window frame to RGB,
normalising full frames to float before a torch bilinear resize) on the same files.

    python tools/benchmark_data.py --cfg configs/Kinetics/vov3d/vov3d_M.yaml \
        DATA.PATH_TO_DATA_DIR /data/k400 NUM_GPUS 0 TRAIN.BATCH_SIZE 8
"""
import argparse
import random
import statistics
import sys
import time
from typing import Callable, List, Tuple

import av
import numpy as np
import torch

from vov3d.config.load import load_config, parse_args
from vov3d.datasets import build_dataset, sampling
from vov3d.datasets.clip_dataset import MissingSampleError
from vov3d.datasets.decoder import DecodeError
from vov3d.datasets.failures import DataLoadError
from vov3d.datasets.lists import ListFormatError
from vov3d.datasets.loader import construct_loader, shuffle_dataset
from vov3d.engine.launch import quoted_exception
from vov3d.utils.threads import apply_worker_budget


class LoaderSetupError(ValueError):
    """construct_loader refused the config for this data (e.g. a batch bigger than the split)."""


# Problems with the data, its paths or the loader settings (each message names the file or
# key): reported in one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (MissingSampleError, DecodeError, DataLoadError, ListFormatError, FileNotFoundError,
               av.FFmpegError, LoaderSetupError)
ROW_WIDTH = 50


# ----------------------------------------------------------------------------------------
# PySlowFast-style baseline (Kinetics): the reference pipeline, written out for comparison
# ----------------------------------------------------------------------------------------
def baseline_train_clip(path: str, cfg) -> torch.Tensor:
    data = cfg.DATA
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps, frames, duration = float(stream.average_rate), stream.frames, stream.duration
        size = sampling.clip_size(data.NUM_FRAMES, data.SAMPLING_RATE, fps, data.TARGET_FPS)
        decoded = []
        if duration and frames > 0:
            start, end = sampling.window_start_end(frames, size, -1, 1)
            timebase = duration / frames
            start_pts, end_pts = int(start * timebase), int(end * timebase)
            container.seek(max(start_pts - 1024, 0), any_frame=False, backward=True, stream=stream)
            for frame in container.decode(stream):
                if frame.pts < start_pts:
                    continue
                decoded.append(frame.to_rgb().to_ndarray())  # every window frame converted
                if frame.pts > end_pts:
                    break
            start, end = 0, size - 1
        else:
            decoded = [f.to_rgb().to_ndarray() for f in container.decode(stream)]
            start, end = sampling.window_start_end(len(decoded), size, -1, 1)
    video = torch.as_tensor(np.stack(decoded))
    index = torch.clamp(torch.linspace(start, end, data.NUM_FRAMES), 0, video.shape[0] - 1).long()
    clip = video.index_select(0, index).float() / 255.0
    clip = (clip - torch.tensor(data.MEAN)) / torch.tensor(data.STD)  # full-size frames
    clip = clip.permute(3, 0, 1, 2)
    scale = sampling.jitter_size(data.TRAIN_JITTER_SCALES[0], data.TRAIN_JITTER_SCALES[1],
                                 data.INV_UNIFORM_SAMPLE)
    new_h, new_w = sampling.short_side_shape(clip.shape[2], clip.shape[3], scale)
    clip = torch.nn.functional.interpolate(clip, size=(new_h, new_w), mode="bilinear",
                                           align_corners=False)
    y, x = sampling.random_crop_offsets(new_h, new_w, data.TRAIN_CROP_SIZE)
    clip = clip[:, :, y:y + data.TRAIN_CROP_SIZE, x:x + data.TRAIN_CROP_SIZE]
    if data.RANDOM_FLIP and np.random.uniform() < 0.5:
        clip = clip.flip(-1)
    return clip.contiguous()


def baseline_test_frames(path: str, cfg) -> int:
    """Frames the reference decodes for one video's K test views (one decode per view)."""
    data, test = cfg.DATA, cfg.TEST
    total = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps, frames, duration = float(stream.average_rate), stream.frames, stream.duration
    if not duration or frames <= 0:
        return frames * test.NUM_ENSEMBLE_VIEWS * test.NUM_SPATIAL_CROPS
    size = sampling.clip_size(data.NUM_FRAMES, data.SAMPLING_RATE, fps, data.TARGET_FPS)
    timebase = duration / frames
    for temporal in range(test.NUM_ENSEMBLE_VIEWS):
        start, end = sampling.window_start_end(frames, size, temporal, test.NUM_ENSEMBLE_VIEWS)
        start_pts, end_pts = int(start * timebase), int(end * timebase)
        with av.open(path) as container:
            stream = container.streams.video[0]
            container.seek(max(start_pts - 1024, 0), any_frame=False, backward=True, stream=stream)
            count = 0
            for frame in container.decode(stream):
                count += 1
                if frame.pts > end_pts:
                    break
        total += count * test.NUM_SPATIAL_CROPS  # each crop decodes its clip again
    return total


# ----------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------
def median_ms(fn: Callable[[int], object], indices: List[int]) -> float:
    times = []
    for i in indices:
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def loader_rate(cfg, split: str, workers: int, max_items: int) -> Tuple[float, int]:
    """Items (clips for train, videos for test) per second through a DataLoader, and the
    loader's per-process batch size."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATA_LOADER.NUM_WORKERS = workers
    try:
        loader = construct_loader(cfg, split)
    except ListFormatError:
        raise
    except ValueError as error:  # its only ValueErrors are settings that cannot work
        raise LoaderSetupError(str(error)) from error
    shuffle_dataset(loader, 0)
    count, start = 0, time.perf_counter()
    for batch in loader:
        count += len(batch[2])
        if count >= max_items:
            break
    return count / (time.perf_counter() - start), loader.batch_size


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def worker_counts(text: str) -> List[int]:
    """`--workers 0,1,2`: comma-separated DataLoader worker counts, each >= 0."""
    try:
        counts = [int(w) for w in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated worker counts >= 0 (e.g. 0,1,2), got {text!r}")
    return counts


def one_line(error: BaseException) -> str:
    """`Type: message` of a user error, on one line (the worker's own error when a loader
    worker re-raised it with its traceback)."""
    name, message = quoted_exception(str(error)) or (type(error).__name__, str(error))
    return f"{name}: {' '.join(message.split())}"


def print_row(name: str, value: str) -> None:
    # Printed as measured: a run stopped by a bad file keeps the rows it already measured.
    print(f"{name:<{ROW_WIDTH}}  {value:>9}", flush=True)


def main(argv=None) -> int:
    def add_tool_arguments(parser):
        parser.add_argument("--clips", type=positive_int, default=40,
                            help="training clips per measurement")
        parser.add_argument("--videos", type=positive_int, default=6,
                            help="test videos per measurement")
        parser.add_argument("--workers", type=worker_counts, default="0,1,2",
                            help="comma-separated DataLoader worker counts to measure")

    args = parse_args(argv, __doc__.split("\n\n")[0], distributed=False,
                      add_arguments=add_tool_arguments)
    cfg = load_config(args)
    cfg.defrost()
    # This process loads as one loader worker does (one thread); the loaders' workers set
    # their own budget.
    apply_worker_budget()
    random.seed(cfg.RNG_SEED)
    np.random.seed(cfg.RNG_SEED)
    try:
        train = build_dataset(cfg.TRAIN.DATASET, cfg, "train")
        test = build_dataset(cfg.TEST.DATASET, cfg, "test")
        print(f"dataset {cfg.TRAIN.DATASET}: {len(train)} train / {len(test)} test videos; clip "
              f"{cfg.DATA.NUM_FRAMES}x{cfg.DATA.SAMPLING_RATE}, crop {cfg.DATA.TRAIN_CROP_SIZE}, "
              f"test {cfg.TEST.NUM_ENSEMBLE_VIEWS}x{cfg.TEST.NUM_SPATIAL_CROPS} views at "
              f"{cfg.DATA.TEST_CROP_SIZE}; one thread per process")
        print("-" * (ROW_WIDTH + 11), flush=True)
        for name, value in measurements(cfg, train, test, args):
            print_row(name, value)
    except USER_ERRORS as error:
        print(f"benchmark_data: error: {one_line(error)}", file=sys.stderr)
        return 1
    print("-" * (ROW_WIDTH + 11))
    return 0


def measurements(cfg, train, test, args):
    """(row name, value) pairs, each yielded once measured."""
    n_train = min(args.clips, len(train))
    n_test = min(args.videos, len(test))
    train_idx = [i % len(train) for i in range(n_train)]
    test_idx = list(range(n_test))

    ours = median_ms(lambda i: train[i], train_idx)
    yield "train clip, one process (ms/clip, median)", f"{ours:.1f}"
    if type(train).__name__ == "Kinetics":
        base = median_ms(lambda i: baseline_train_clip(train.video_path(i), cfg), train_idx)
        yield "  PySlowFast-style baseline (ms/clip)", f"{base:.1f}"
        yield "  speed-up", f"{base / ours:.2f}x"
    for w in args.workers:
        rate, batch = loader_rate(cfg, "train", w, n_train)
        yield f"train loader, {w} worker(s), batch {batch} (clips/s)", f"{rate:.1f}"

    once = median_ms(lambda i: test[i], test_idx)
    yield f"test video, decode once ({test.num_views} views, ms/video)", f"{once:.1f}"
    per_view = median_ms(lambda i: [test.get_view(i, v) for v in range(test.num_views)], test_idx)
    yield "test video, one decode per view (ms/video)", f"{per_view:.1f}"
    yield "  speed-up", f"{per_view / once:.2f}x"
    for w in args.workers:
        rate, _ = loader_rate(cfg, "test", w, n_test)
        yield f"test loader, {w} worker(s) (videos/s)", f"{rate:.2f}"

    decoded_once = statistics.mean(test.decoded_frames(i) for i in test_idx)
    yield "decoded frames per test video, decode once", f"{decoded_once:.0f}"
    decoded_view = statistics.mean(test.decoded_frames(i, per_view=True) for i in test_idx)
    yield "decoded frames per test video, per view", f"{decoded_view:.0f}"
    if type(test).__name__ == "Kinetics":
        ref = statistics.mean(baseline_test_frames(test.video_path(i), cfg) for i in test_idx)
        yield "decoded frames per test video, PySlowFast-style", f"{ref:.0f}"
        yield "  reduction", f"{ref / max(decoded_once, 1):.1f}x"
    elif not cfg.DATA.SSV2_VIDEO_EXT:
        yield "  (frame folders: JPEG files read)", ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
