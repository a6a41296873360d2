#!/usr/bin/env python3
"""Stream a video file through CoX3D frame by frame and print its top-k classes:

    python tools/stream_net.py --cfg configs/Kinetics/cox3d/cox3d_S.yaml --video clip.mp4 \
        [--checkpoint x3d_s.pyth] [--every N] [--topk K] [--labels classes.json] \
        [--predict-at F] [--threads N] [KEY VALUE ...]

Frames are taken every DATA.SAMPLING_RATE-th frame at DATA.TARGET_FPS (e.g. every 6th of a
30 fps video for X3D-S, the rate the weights were trained at), resized to a short side of
DATA.TEST_CROP_SIZE, centre-cropped to it and normalised by the input step of training and
testing (DATA.MEAN/STD, DATA.REVERSE_INPUT_CHANNEL) on the model's device. An X3D config
works too (CoX3D has X3D's weights). The first `delay` frames produce no output (warm-up);
set the start-of-stream fill with COX3D.TEMPORAL_FILL and the head window with
COX3D.TEMPORAL_WINDOW.

Output: one line per N-th output frame (`--every`), with the frame's time in the video, its
top-k classes and the model's frames per second so far; `--predict-at F` instead prints
only the output at sampled frame F (co3d's one-prediction-per-video protocol; a shorter
video repeats its last frame, and a line says from which frame on). Labels come from
--labels (a JSON list of names in label order, or PySlowFast's {name: id}, as the toy
dataset's classes.json); else from the class names stored in the checkpoint; else class
ids are printed.

Weights: --checkpoint, else as testing finds them (TEST.CHECKPOINT_FILE_PATH, the newest
checkpoint in OUTPUT_DIR, TRAIN.CHECKPOINT_FILE_PATH; loaded strictly, a file that does not
fit gets testing's one-line summary); random weights only with TEST.ALLOW_RANDOM_INIT True.
The frames, the input preparation and the weights are the demo's (tools/demo_net.py), which
also draws the labels on the video.
"""
import argparse
import sys
import time
from contextlib import closing
from typing import Iterator, List, Tuple

import numpy as np
import torch

from vov3d.config import ConfigError, load_config, parse_args
from vov3d.demo.inputs import centre_crop, frame_input
from vov3d.demo.sources import FileSource, FrameSampler
from vov3d.engine.input_step import InputStep
from vov3d.utils.threads import apply_budget, tool_budget

STREAMABLE = ("X3D", "CoX3D")


def add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="video file to stream")
    parser.add_argument("--checkpoint", default="", help="weights (else TEST.CHECKPOINT_FILE_PATH)")
    parser.add_argument("--every", type=int, default=1, help="print every N-th output frame")
    parser.add_argument("--topk", type=int, default=5, help="classes printed per line")
    parser.add_argument("--labels", default="",
                        help="classes.json: list of names or {name: id} (default: the checkpoint's "
                             "stored class names)")
    parser.add_argument("--predict-at", type=int, default=-1,
                        help="print only the output at this sampled frame (0-based)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = the thread budget: OMP_NUM_THREADS, else the usable "
                             "cores; 1 is fastest on a busy CPU)")


def sampled_frames(source, cfg) -> Iterator[Tuple[float, np.ndarray]]:
    """(seconds, RGB uint8 [H, W, 3]) of the frames the model sees (see FrameSampler)."""
    sampler = FrameSampler(cfg.DATA.SAMPLING_RATE, source.fps, cfg.DATA.TARGET_FPS)
    for frame in source:
        if sampler.take(frame.index):
            yield frame.seconds, frame.image


def format_topk(scores: torch.Tensor, names: List[str], k: int) -> str:
    values, indices = scores.topk(min(k, scores.numel()))
    return "  ".join(f"{names[i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist()))


def stream_video(model, cfg, args, names: List[str]) -> int:
    input_step = InputStep(cfg, next(model.parameters()).device)
    model.reset()
    print(f"{args.video}: streaming frames {cfg.DATA.SAMPLING_RATE} apart at "
          f"{cfg.DATA.TARGET_FPS} fps, {cfg.DATA.TEST_CROP_SIZE} px; first output after "
          f"{model.delay} frames, steady state from frame {model.receptive_field}")
    model_seconds, count, outputs, last, decoded = 0.0, 0, 0, None, None
    start = time.perf_counter()
    source = FileSource(args.video, "--video")
    frames = sampled_frames(source, cfg)
    with torch.inference_mode(), closing(source):
        while args.predict_at < 0 or count <= args.predict_at:
            item = next(frames, None)
            if item is None:
                if args.predict_at < 0 or last is None:
                    break
                if decoded is None:
                    decoded = count
                    print(f"{args.video} has {decoded} sampled frames (0-{decoded - 1}); frames "
                          f"{decoded}-{args.predict_at} repeat its last frame (t={last[0]:.2f}s).")
                item = last  # co3d protocol: a short video repeats its last frame
            last = item
            seconds, frame = item
            x = frame_input(centre_crop(frame, cfg.DATA.TEST_CROP_SIZE), input_step)
            tic = time.perf_counter()
            scores = model.forward_step(x)
            model_seconds += time.perf_counter() - tic
            count += 1
            if scores is None:
                continue
            outputs += 1
            if args.predict_at >= 0 and count - 1 != args.predict_at:
                continue
            if args.predict_at < 0 and (outputs - 1) % args.every:
                continue
            print(f"frame {count - 1:5d}  t={seconds:7.2f}s  {count / model_seconds:7.1f} fps  "
                  f"{format_topk(scores[0].float(), names, args.topk)}")
    total = time.perf_counter() - start
    if count == 0:
        print(f"stream_net.py: no frames decoded from {args.video}", file=sys.stderr)
        return 1
    if args.predict_at >= 0 and outputs == 0:
        print(f"--predict-at {args.predict_at} is inside the warm-up: the first output comes at "
              f"frame {model.delay}.")
    print(f"{count} frames, {outputs} outputs; model {count / model_seconds:.1f} frames/s, "
          f"with decoding {count / total:.1f} frames/s")
    return 0


def load_streaming_model(args, cfg):
    """CoX3D with the config's weights (an X3D config streams as CoX3D: same weights)."""
    from vov3d.engine.inference import load_inference_model, with_checkpoint

    cfg = with_checkpoint(cfg, args.checkpoint)
    if cfg.MODEL.MODEL_NAME != "CoX3D":
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.MODEL_NAME = "CoX3D"
        cfg.freeze()
    return load_inference_model(cfg, args.labels, "--labels")


def main(argv=None) -> int:
    args = parse_args(argv, "Stream a video through CoX3D, printing top-k classes per frame.",
                      distributed=False, add_arguments=add_tool_arguments)
    if args.every < 1 or args.topk < 1:
        print("stream_net.py: --every and --topk must be >= 1.", file=sys.stderr)
        return 2
    try:
        apply_budget(tool_budget(args.threads), log=False)
    except ValueError as e:
        print(f"stream_net.py: {e}", file=sys.stderr)
        return 2
    from vov3d.engine.checkpointer import NoCheckpointError
    from vov3d.utils.errors import UserError

    try:
        cfg = load_config(args)
        if cfg.MODEL.MODEL_NAME.lower() not in [n.lower() for n in STREAMABLE]:
            raise ConfigError(f"MODEL.MODEL_NAME is {cfg.MODEL.MODEL_NAME!r}; streaming runs "
                              f"CoX3D (or an X3D config, whose weights it shares).")
        loaded = load_streaming_model(args, cfg)
    except (ConfigError, NoCheckpointError) as e:
        print(f"stream_net.py: config error: {e}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"stream_net.py: {e}", file=sys.stderr)
        return 1
    if loaded.loaded.path is None:
        print("stream_net.py: no checkpoint, streaming randomly initialised weights.")
    print(f"class names: {loaded.names_origin}")
    if loaded.names_warning:
        print(f"stream_net.py: warning: {loaded.names_warning}", file=sys.stderr)
    import av

    try:
        return stream_video(loaded.model, cfg, args, loaded.class_names)
    except (OSError, ValueError, ConfigError, av.FFmpegError) as e:
        print(f"stream_net.py: failed to stream {args.video}: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
