#!/usr/bin/env python3
"""Data-loading benchmark, side by side with the reference's own Kinetics dataset path on
the same files: ms per training clip and per multi-view test video, bytes handed to the
model and the input step that normalises them, a loader worker's memory per test batch,
loader throughput and decoded frames per test video.

The reference path (Kinetics) reopens the video for every clip and every test view, converts
every frame of the window to RGB, normalises the full-size frames to float, resizes and crops;
its loader then stacks the views. Ours decodes all views of a video in one pass, resizes each
distinct frame once and writes uint8 views into one preallocated output; the engine's input
step then normalises on the model's device (host->device copy times are shown where CUDA
exists). With `AUG.ENABLE True` the first rows time RandAugment's cost per clip against the
plain clip. Rerun on the synthetic videos of tools/make_benchmark_videos.py:

    python tools/make_benchmark_videos.py --out /tmp/bench
    python tools/benchmark_data.py --cfg configs/Kinetics/vov3d/vov3d_M.yaml NUM_GPUS 0 \\
        TRAIN.BATCH_SIZE 8 DATA.PATH_TO_DATA_DIR /tmp/bench/h264_340x256_gop250 \\
        DATA.PATH_PREFIX /tmp/bench/h264_340x256_gop250
"""
import argparse
import ctypes
import multiprocessing
import random
import statistics
import sys
import time
from typing import Callable, List, Optional, Tuple

import av
import numpy as np
import torch
from torch.utils.data import default_collate

from vov3d.config.load import load_config, parse_args
from vov3d.datasets import build_dataset, sampling
from vov3d.datasets.clip_dataset import MissingSampleError
from vov3d.datasets.decoder import DecodeError
from vov3d.datasets.failures import DataLoadError
from vov3d.datasets.lists import ListFormatError
from vov3d.datasets.loader import construct_loader, set_epoch, videos_per_test_batch
from vov3d.engine.input_step import InputStep
from vov3d.utils.errors import describe
from vov3d.utils.processes import per_process_batch
from vov3d.utils.threads import apply_worker_budget


class LoaderSetupError(ValueError):
    """construct_loader refused the config for this data (e.g. a batch bigger than the split)."""


# Problems with the data, its paths or the loader settings (each message names the file or
# key): reported in one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (MissingSampleError, DecodeError, DataLoadError, ListFormatError, FileNotFoundError,
               av.FFmpegError, LoaderSetupError)
ROW_WIDTH = 50


# ----------------------------------------------------------------------------------------
# The reference's own Kinetics dataset path (PySlowFast / VoV3D), written out for comparison:
# every clip (every test view) reopens the video, seeks, converts every frame of its window
# to RGB, normalises the full-size frames to float, resizes, crops; the loader then stacks.
# ----------------------------------------------------------------------------------------
def baseline_window(path: str, cfg, clip_idx: int, num_clips: int) -> torch.Tensor:
    """[T, H, W, 3] uint8 frames of clip `clip_idx` of `num_clips` (-1: random), decoded
    the reference's way from a freshly opened video."""
    data = cfg.DATA
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps, frames, duration = float(stream.average_rate), stream.frames, stream.duration
        size = sampling.clip_size(data.NUM_FRAMES, data.SAMPLING_RATE, fps, data.TARGET_FPS)
        decoded = []
        if duration and frames > 0:
            start, end = sampling.window_start_end(frames, size, clip_idx, num_clips)
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
            start, end = sampling.window_start_end(len(decoded), size, clip_idx, num_clips)
    video = torch.as_tensor(np.stack(decoded))
    index = torch.clamp(torch.linspace(start, end, data.NUM_FRAMES), 0, video.shape[0] - 1).long()
    return video.index_select(0, index)


def baseline_float_clip(frames: torch.Tensor, data, short_side: int) -> torch.Tensor:
    """Full-size frames normalised to float, [C, T, H, W], resized to `short_side`."""
    clip = frames.float() / 255.0
    clip = ((clip - torch.tensor(data.MEAN)) / torch.tensor(data.STD)).permute(3, 0, 1, 2)
    new_h, new_w = sampling.short_side_shape(clip.shape[2], clip.shape[3], short_side)
    if (new_h, new_w) == tuple(clip.shape[2:]):
        return clip
    return torch.nn.functional.interpolate(clip, size=(new_h, new_w), mode="bilinear", align_corners=False)


def baseline_train_clip(path: str, cfg) -> torch.Tensor:
    data = cfg.DATA
    scale = sampling.jitter_size(data.TRAIN_JITTER_SCALES[0], data.TRAIN_JITTER_SCALES[1],
                                 data.INV_UNIFORM_SAMPLE)
    clip = baseline_float_clip(baseline_window(path, cfg, -1, 1), data, scale)
    y, x = sampling.random_crop_offsets(clip.shape[2], clip.shape[3], data.TRAIN_CROP_SIZE)
    clip = clip[:, :, y:y + data.TRAIN_CROP_SIZE, x:x + data.TRAIN_CROP_SIZE]
    if data.RANDOM_FLIP and np.random.uniform() < 0.5:
        clip = clip.flip(-1)
    return clip.contiguous()


def baseline_test_video(path: str, cfg) -> torch.Tensor:
    """All K views of a test video, one reference dataset item each, stacked by the loader."""
    data, test = cfg.DATA, cfg.TEST
    resize, crop = sampling.test_resize_and_crop(data.TEST_CROP_SIZE, data.TRAIN_JITTER_SCALES[0],
                                                 test.NUM_SPATIAL_CROPS)
    views = []
    for view in range(test.NUM_ENSEMBLE_VIEWS * test.NUM_SPATIAL_CROPS):
        temporal, spatial = sampling.view_indices(view, test.NUM_SPATIAL_CROPS)
        clip = baseline_float_clip(baseline_window(path, cfg, temporal, test.NUM_ENSEMBLE_VIEWS), data, resize)
        y, x = sampling.uniform_crop_offsets(clip.shape[2], clip.shape[3], crop,
                                             sampling.spatial_index(spatial, test.NUM_SPATIAL_CROPS))
        views.append(clip[:, :, y:y + crop, x:x + crop])
    return torch.stack(views)


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


def paired_median_ms(ours: Callable[[int], object], reference: Callable[[int], object],
                     indices: List[int]) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    """Median ms of two ways of loading the same items, timed alternately item by item so
    that a change in the machine's load affects both alike: ((ours, reference) wall time,
    (ours, reference) CPU time of this process). On a shared machine the CPU times are the
    steadier measure of the work (both paths run one thread)."""
    wall: Tuple[List[float], List[float]] = ([], [])
    cpu: Tuple[List[float], List[float]] = ([], [])
    for i in indices:
        for k, fn in enumerate((ours, reference)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(i)
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
    return tuple(tuple(1000 * statistics.median(t) for t in pair) for pair in (wall, cpu))


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
    set_epoch(loader, cfg.RNG_SEED, 0)
    count, start = 0, time.perf_counter()
    for batch in loader:
        count += len(batch[2])
        if count >= max_items:
            break
    return count / (time.perf_counter() - start), loader.batch_size


def input_step_ms(cfg, pathways: List[torch.Tensor], device: torch.device, runs: int = 5) -> float:
    """Median ms of the engine's input step on a collated batch (uint8 -> normalised float32)."""
    step = InputStep(cfg, device)

    def run(_):
        step.inputs(pathways)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(0)
    return median_ms(run, list(range(runs)))


def copy_ms(batch: torch.Tensor, device: torch.device, runs: int = 5) -> float:  # pragma: no cover - CUDA
    """Median ms of a non-blocking host-to-device copy of a pinned batch."""
    pinned = batch.pin_memory()

    def run(_):
        pinned.to(device, non_blocking=True)
        torch.cuda.synchronize(device)

    run(0)
    return median_ms(run, list(range(runs)))


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _batch_peak(dataset, indices: List[int], send) -> None:
    try:
        dataset[indices[0]]  # warm-up: codecs, caches and lazy imports are not the batch's
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # free heap pages go back: none is reused unseen
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS := current RSS
        start = _status_bytes("VmRSS")
        default_collate([dataset[i] for i in indices])
        send.send(_status_bytes("VmHWM") - start)
    except Exception:  # not Linux, or /proc not writable: no measurement
        send.send(None)


def worker_peak_bytes(dataset, indices: List[int]) -> Optional[int]:
    """Peak memory added by building one batch of items `indices` (the items, then their
    collation) in a forked process, as a loader worker does; None where Linux's peak-RSS
    reset is not available."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_batch_peak, args=(dataset, indices, send))
    child.start()
    send.close()
    try:
        return receive.recv()
    except EOFError:  # the child died (e.g. out of memory)
        return None
    finally:
        child.join()


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
    """`Type: message` of a user error, on one line (the worker's own message when a loader
    worker raised it)."""
    return " ".join(describe(error).split())


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
    # One thread for torch and OpenCV, as in a loader worker (and the reference's torch
    # resize here); the loaders' own workers set their budget themselves.
    apply_worker_budget()
    random.seed(cfg.RNG_SEED)
    np.random.seed(cfg.RNG_SEED)
    try:
        train = build_dataset(cfg.TRAIN.DATASET, cfg, "train")
        test = build_dataset(cfg.TEST.DATASET, cfg, "test")
        check_loader_batch(cfg, len(train))
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


def check_loader_batch(cfg, train_videos: int) -> None:
    """The loader rows need one full training batch: say so before anything is measured."""
    batch = per_process_batch(cfg, "train")
    if train_videos < batch:
        raise LoaderSetupError(f"the train split has {train_videos} videos, fewer than the per-process batch "
                               f"{batch} the loader rows need (TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE}); add "
                               f"TRAIN.BATCH_SIZE {train_videos} (or less) to the overrides, or list more videos.")


def measurements(cfg, train, test, args):
    """(row name, value) pairs, each yielded once measured."""
    n_train = min(args.clips, len(train))
    train_idx = [i % len(train) for i in range(n_train)]
    yield from train_rows(cfg, train, train_idx, args)
    n_test = min(args.videos, len(test))
    yield from test_rows(cfg, test, list(range(n_test)), args)


def augmentation_rows(cfg, train, train_idx: List[int]):
    """With AUG.ENABLE: the training clip with RandAugment against the same dataset without
    it, timed alternately item by item, both seeded per item so they decode the same window
    (per clip: an item holds AUG.NUM_SAMPLE clips)."""
    plain_cfg = cfg.clone()
    plain_cfg.AUG.ENABLE = False
    plain = build_dataset(cfg.TRAIN.DATASET, plain_cfg, "train")
    for dataset in (train, plain):  # item i: the same window and crop in both
        dataset.seed_samples(cfg.RNG_SEED, 0, "loader")
    (aug, base), (aug_cpu, base_cpu) = paired_median_ms(lambda i: train[i], lambda i: plain[i], train_idx)
    copies = train.samples_per_item
    yield f"train clip with RandAugment {cfg.AUG.AA_TYPE} (ms/clip)", f"{aug / copies:.1f}"
    yield "  the plain clip (ms/clip)", f"{base:.1f}"
    yield "  RandAugment's cost, wall / CPU time", f"{100 * (aug / copies / base - 1):+.0f}% / " \
                                                  f"{100 * (aug_cpu / copies / base_cpu - 1):+.0f}%"
    if copies > 1:
        yield f"  one decode for AUG.NUM_SAMPLE {copies} clips (ms/item)", f"{aug:.1f}"


def train_rows(cfg, train, train_idx: List[int], args):
    if cfg.AUG.ENABLE:
        yield from augmentation_rows(cfg, train, train_idx)
    if type(train).__name__ == "Kinetics":
        (ours, base), (ours_cpu, base_cpu) = paired_median_ms(
            lambda i: train[i], lambda i: baseline_train_clip(train.video_path(i), cfg), train_idx)
        yield "train clip, one process (ms/clip, median)", f"{ours:.1f}"
        yield "  reference dataset path (ms/clip)", f"{base:.1f}"
        yield "  speed-up", f"{base / ours:.2f}x"
        yield "  CPU time, ours / reference (ms/clip)", f"{ours_cpu:.0f}/{base_cpu:.0f}"
        yield "  speed-up in CPU time", f"{base_cpu / ours_cpu:.2f}x"
    else:
        yield "train clip, one process (ms/clip, median)", f"{median_ms(lambda i: train[i], train_idx):.1f}"
    clip = train[train_idx[0]][0][0]
    yield f"train clip handed to the model ({str(clip.dtype)[6:]}, MB)", f"{clip.nbytes / 1e6:.2f}"
    yield "  as float32 (MB)", f"{clip.numel() * 4 / 1e6:.2f}"
    size = per_process_batch(cfg, "train")
    inputs = default_collate([train[i % len(train)] for i in range(size)])[0]
    cpu = input_step_ms(cfg, inputs, torch.device("cpu"))
    yield f"input step on the CPU, batch of {size} (ms/batch)", f"{cpu:.2f}"
    if torch.cuda.is_available():  # pragma: no cover - no CUDA on the test machines
        gpu = torch.device("cuda", torch.cuda.current_device())
        yield "host->device copy of the batch, uint8 (ms)", f"{copy_ms(inputs[0], gpu):.2f}"
        yield "host->device copy of the batch, float32 (ms)", f"{copy_ms(inputs[0].float(), gpu):.2f}"
        yield f"input step on the GPU, batch of {size} (ms/batch)", f"{input_step_ms(cfg, inputs, gpu):.2f}"
    for w in args.workers:
        rate, batch = loader_rate(cfg, "train", w, len(train_idx))
        yield f"train loader, {w} worker(s), batch {batch} (clips/s)", f"{rate:.1f}"


def test_rows(cfg, test, test_idx: List[int], args):
    once = median_ms(lambda i: test[i], test_idx)
    yield f"test video, decode once ({test.num_views} views, ms/video)", f"{once:.1f}"
    per_view = median_ms(lambda i: [test.get_view(i, v) for v in range(test.num_views)], test_idx)
    yield "test video, one decode per view (ms/video)", f"{per_view:.1f}"
    yield "  speed-up", f"{per_view / once:.2f}x"
    kinetics = type(test).__name__ == "Kinetics"
    if kinetics:
        (once, ref), (once_cpu, ref_cpu) = paired_median_ms(
            lambda i: test[i], lambda i: baseline_test_video(test.video_path(i), cfg), test_idx)
        yield "test video, reference dataset path (ms/video)", f"{ref:.1f}"
        yield "  decode once, timed alongside (ms/video)", f"{once:.1f}"
        yield "  speed-up of decode once", f"{ref / once:.1f}x"
        yield "  CPU time, ours / reference (ms/video)", f"{once_cpu:.0f}/{ref_cpu:.0f}"
        yield "  speed-up in CPU time", f"{ref_cpu / once_cpu:.1f}x"
    views = test[test_idx[0]][0][0]
    yield f"test video handed to the model ({str(views.dtype)[6:]}, MB)", f"{views.nbytes / 1e6:.1f}"
    videos = videos_per_test_batch(cfg, test.num_views)
    peak = worker_peak_bytes(test, [test_idx[i % len(test_idx)] for i in range(videos)])
    if peak is not None:
        yield f"loader worker memory, test batch of {videos} (MB)", f"{peak / 1e6:.0f}"
    for w in args.workers:
        rate, _ = loader_rate(cfg, "test", w, len(test_idx))
        yield f"test loader, {w} worker(s) (videos/s)", f"{rate:.2f}"

    decoded_once = statistics.mean(test.decoded_frames(i) for i in test_idx)
    yield "decoded frames per test video, decode once", f"{decoded_once:.0f}"
    decoded_view = statistics.mean(test.decoded_frames(i, per_view=True) for i in test_idx)
    yield "decoded frames per test video, per view", f"{decoded_view:.0f}"
    if kinetics:
        ref = statistics.mean(baseline_test_frames(test.video_path(i), cfg) for i in test_idx)
        yield "decoded frames per test video, reference", f"{ref:.0f}"
        yield "  reduction", f"{ref / max(decoded_once, 1):.1f}x"
    elif not cfg.DATA.SSV2_VIDEO_EXT:
        yield "  (frame folders: JPEG files read)", ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
