#!/usr/bin/env python3
"""Stream a video file through CoX3D frame by frame and print its top-k classes:

    python tools/stream_net.py --cfg configs/Kinetics/cox3d/cox3d_S.yaml --video clip.mp4 \
        [--checkpoint x3d_s.pyth] [--every N] [--topk K] [--labels classes.json] \
        [--predict-at F] [--threads N] [KEY VALUE ...]

Frames are taken every DATA.SAMPLING_RATE-th frame at DATA.TARGET_FPS (e.g. every 6th of a
30 fps video for X3D-S, the rate the weights were trained at), resized to a short side of
DATA.TEST_CROP_SIZE, centre-cropped to it and normalised with DATA.MEAN/STD. An X3D config
works too (CoX3D has X3D's weights). The first `delay` frames produce no output (warm-up);
set the start-of-stream fill with COX3D.TEMPORAL_FILL and the head window with
COX3D.TEMPORAL_WINDOW.

Output: one line per N-th output frame (`--every`), with the frame's time in the video, its
top-k classes and the model's frames per second so far; `--predict-at F` instead prints
only the output at sampled frame F (co3d's one-prediction-per-video protocol; a shorter
video repeats its last frame, and a line says from which frame on). Labels come from
--labels, a JSON list of names in label order or a {name: id} dict (the toy dataset's
classes.json); else from the class names stored in the checkpoint; else class ids are
printed.

Weights: --checkpoint, else TEST.CHECKPOINT_FILE_PATH (PySlowFast `model_state` files and
plain state dicts, read with torch.load(weights_only=True), loaded strictly); random
weights only with TEST.ALLOW_RANDOM_INIT True.
"""
import argparse
import json
import sys
import time
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from vov3d.config import ConfigError, load_config, parse_args
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


def read_labels(path: str, num_classes: int) -> List[str]:
    """Class names in label order from a JSON list or a {name: id} dict."""
    if not path:
        return [f"class {i}" for i in range(num_classes)]
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        names = [f"class {i}" for i in range(num_classes)]
        for name, index in data.items():
            if not isinstance(index, int) or not 0 <= index < num_classes:
                raise ValueError(f"{path}: label id {index!r} of {name!r} is not in "
                                 f"[0, MODEL.NUM_CLASSES={num_classes}).")
            names[index] = str(name)
        return names
    if isinstance(data, list):
        if len(data) != num_classes:
            raise ValueError(f"{path} lists {len(data)} class names; MODEL.NUM_CLASSES is "
                             f"{num_classes}.")
        return [str(name) for name in data]
    raise ValueError(f"{path} must hold a JSON list of class names or a {{name: id}} dict, "
                     f"got {type(data).__name__}.")


def sampled_frames(path: str, sampling_rate: int, target_fps: float
                   ) -> Iterator[tuple]:
    """(seconds, RGB uint8 [H, W, 3]) of every `sampling_rate`-th frame at `target_fps`:
    source frame i is taken when it reaches the next multiple of
    sampling_rate * fps / target_fps."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or target_fps)
        step = sampling_rate * fps / target_fps
        next_pick = 0.0
        for i, frame in enumerate(container.decode(stream)):
            if i + 1e-6 >= next_pick:
                next_pick += step
                yield i / fps, frame.to_ndarray(format="rgb24")


def preprocess(frame: np.ndarray, cfg) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, S, S] float: short side to TEST_CROP_SIZE, centre crop,
    DATA.MEAN/STD normalisation (the test-time pipeline of the clip datasets)."""
    from vov3d.datasets import sampling, transform

    size = cfg.DATA.TEST_CROP_SIZE
    frame = transform.resize_short_side(frame, size)
    y, x = sampling.uniform_crop_offsets(frame.shape[0], frame.shape[1], size, 1)
    patch = transform.crop(frame, y, x, size)[None]
    clip = transform.normalize(patch, cfg.DATA.MEAN, cfg.DATA.STD, cfg.DATA.REVERSE_INPUT_CHANNEL)
    return clip[:, 0][None]


def load_weights(model: torch.nn.Module, path: str, cfg) -> Optional[Dict]:
    """Strictly load `path` (or TEST.CHECKPOINT_FILE_PATH); returns the file's contents
    (for its stored class names), or None if no checkpoint is given.

    A file that does not fit raises one CheckpointError naming it and the first tensors that
    differ, with their shapes (run_net's summary, not load_state_dict's line per tensor).
    """
    from vov3d.engine import checkpoint as cu

    source = "--checkpoint" if path else "TEST.CHECKPOINT_FILE_PATH"
    path = path or cfg.TEST.CHECKPOINT_FILE_PATH
    if not path:
        return None
    obj = cu.read_checkpoint(path, unsafe=cfg.TEST.CHECKPOINT_UNSAFE_LOAD,
                             unsafe_flag="TEST.CHECKPOINT_UNSAFE_LOAD", source=source)
    usable, report = cu.match_state(cu.model_state_from(obj, path), model, path)
    problems = report.problems()
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else "")
        raise cu.CheckpointError(
            f"{source} '{path}' does not fit {cfg.MODEL.MODEL_NAME} from this config: "
            f"{len(report.skipped)} shape mismatches, {len(report.missing)} missing, "
            f"{len(problems) - len(report.skipped) - len(report.missing)} unexpected tensors "
            f"({shown}). Check MODEL.NUM_CLASSES and the X3D.* keys against the config it was "
            "trained with.")
    model.load_state_dict(usable, strict=False)
    return obj


def class_names_for(args, obj: Optional[Dict], num_classes: int, path: str) -> List[str]:
    """--labels, else the class names stored in the checkpoint `path` (contents `obj`), else
    "class <id>"."""
    stored = obj.get("class_names") if obj is not None else None
    if stored is not None and (not isinstance(stored, (list, tuple)) or len(stored) != num_classes):
        count = len(stored) if isinstance(stored, (list, tuple)) else type(stored).__name__
        raise ValueError(f"checkpoint '{path}' stores {count} class names; MODEL.NUM_CLASSES is "
                         f"{num_classes}.")
    if args.labels:
        names = read_labels(args.labels, num_classes)
        if stored is not None and [str(n) for n in stored] != names:
            label = next(i for i, (a, b) in enumerate(zip(stored, names)) if str(a) != b)
            print(f"stream_net.py: warning: --labels {args.labels} differs from the class names stored in "
                  f"'{path}' (label {label} is {names[label]!r} in --labels, {str(stored[label])!r} in "
                  "the checkpoint); printing the --labels names.", file=sys.stderr)
        return names
    if stored is not None:
        print(f"class names: the {num_classes} stored in '{path}'")
        return [str(n) for n in stored]
    return read_labels("", num_classes)


def format_topk(scores: torch.Tensor, names: List[str], k: int) -> str:
    values, indices = scores.topk(min(k, scores.numel()))
    return "  ".join(f"{names[i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist()))


def stream_video(model, cfg, args, names: List[str]) -> int:
    device = next(model.parameters()).device
    model.reset()
    print(f"{args.video}: streaming frames {cfg.DATA.SAMPLING_RATE} apart at "
          f"{cfg.DATA.TARGET_FPS} fps, {cfg.DATA.TEST_CROP_SIZE} px; first output after "
          f"{model.delay} frames, steady state from frame {model.receptive_field}")
    model_seconds, count, outputs, last, decoded = 0.0, 0, 0, None, None
    start = time.perf_counter()
    frames = sampled_frames(args.video, cfg.DATA.SAMPLING_RATE, cfg.DATA.TARGET_FPS)
    with torch.inference_mode():
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
            x = preprocess(frame, cfg).to(device)
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


def main(argv=None) -> int:
    args = parse_args(argv, "Stream a video through CoX3D, printing top-k classes per frame.",
                      distributed=False, add_arguments=add_tool_arguments)
    if args.every < 1 or args.topk < 1:
        print("stream_net.py: --every and --topk must be >= 1.", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args)
        if cfg.MODEL.MODEL_NAME.lower() not in [n.lower() for n in STREAMABLE]:
            raise ConfigError(f"MODEL.MODEL_NAME is {cfg.MODEL.MODEL_NAME!r}; streaming runs "
                              f"CoX3D (or an X3D config, whose weights it shares).")
        from vov3d.models.cox3d import CoX3D
        model = CoX3D(cfg)
    except ConfigError as e:
        print(f"stream_net.py: config error: {e}", file=sys.stderr)
        return 2
    if cfg.NUM_GPUS > 0 and torch.cuda.is_available():
        model = model.cuda()
    try:
        apply_budget(tool_budget(args.threads), log=False)
    except ValueError as e:
        print(f"stream_net.py: {e}", file=sys.stderr)
        return 2
    try:
        if args.labels:  # a bad --labels file is reported before the checkpoint is read
            read_labels(args.labels, cfg.MODEL.NUM_CLASSES)
        obj = load_weights(model, args.checkpoint, cfg)
        if obj is None:
            if not cfg.TEST.ALLOW_RANDOM_INIT:
                print("stream_net.py: no weights: pass --checkpoint or TEST.CHECKPOINT_FILE_PATH "
                      "(or TEST.ALLOW_RANDOM_INIT True to stream random weights).", file=sys.stderr)
                return 2
            print("stream_net.py: no checkpoint, streaming randomly initialised weights.")
        names = class_names_for(args, obj, cfg.MODEL.NUM_CLASSES,
                                args.checkpoint or cfg.TEST.CHECKPOINT_FILE_PATH)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"stream_net.py: {e}", file=sys.stderr)
        return 1
    model.eval()
    import av

    try:
        return stream_video(model, cfg, args, names)
    except (OSError, ValueError, av.FFmpegError) as e:
        print(f"stream_net.py: failed to stream {args.video}: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
