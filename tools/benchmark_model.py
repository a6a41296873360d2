#!/usr/bin/env python3
"""Time a config's model on the CPU and print a table:

    python tools/benchmark_model.py --cfg configs/Kinetics/vov3d/vov3d_M.yaml \
        [--threads N] [--mode clip|stream] [--batch-sizes 1 2] [--runs 5] [--warmup 2] \
        [KEY VALUE ...]

Mode "clip": one training-size clip (NUM_FRAMES x TRAIN_CROP_SIZE^2) per sample; forward
(eval, no grad) and forward+backward (train mode, cross-entropy) seconds per clip, the
median of --runs timed runs after --warmup untimed ones, for each batch size, in the
default (contiguous) and channels_last_3d memory formats.
Mode "stream" (CoX3D, or an X3D config run as CoX3D with the same weights): seconds per
clip of the clip forward (X3D) against seconds per frame of `forward_step` in steady state
(after the warm-up), eval and no grad, with conv+linear GMACs per clip and per frame and
the speed-up of one frame over one clip, for each batch size. A stream step is hundreds of
small ops: on a CPU shared with other jobs use --threads 1 (with more, each op's threads
wait for one another; measured 100x slower per frame under contention).
With --runtime eager onnxruntime torchscript (any of them): inference only, batch 1 (the
first --batch-sizes), in each runtime: milliseconds per clip (mode clip, NUM_FRAMES x
TRAIN_CROP_SIZE^2) or, in mode stream, per clip of the X3D clip graph and per frame of CoX3D's
per-frame step (exported as tools/export_model.py does; the same graph every frame). Each
row is the median of --runs after --warmup, with its speed-up over eager; on a shared CPU
compare rows of one run only (the runtimes are timed in turns, one call of each per round).
A mode is a function `(model, cfg, args) -> rows`; add one to MODES to time another way
of running a model.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from vov3d.config import ConfigError, load_config, parse_args
from vov3d.utils.errors import UserError, report_user_error
from vov3d.utils.threads import apply_budget, tool_budget

MEMORY_FORMATS = {"default": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}


def median_seconds(fn: Callable[[], None], warmup: int, runs: int) -> float:
    """Median wall time of `fn` over `runs` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_forward(model: torch.nn.Module, x: torch.Tensor, warmup: int, runs: int) -> float:
    model.eval()

    def step():
        with torch.no_grad():
            model(x)

    return median_seconds(step, warmup, runs)


def time_forward_backward(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor,
                          warmup: int, runs: int) -> float:
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()

    return median_seconds(step, warmup, runs)


def clip_mode(model: torch.nn.Module, cfg, args) -> List[Dict[str, object]]:
    shape = (cfg.DATA.INPUT_CHANNEL_NUM[0], cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE,
             cfg.DATA.TRAIN_CROP_SIZE)
    rows = []
    for batch in args.batch_sizes:
        x = torch.randn(batch, *shape)
        labels = torch.randint(cfg.MODEL.NUM_CLASSES, (batch,))
        for name, fmt in MEMORY_FORMATS.items():
            model.to(memory_format=fmt)
            xf = x.contiguous(memory_format=fmt)
            fwd = time_forward(model, xf, args.warmup, args.runs)
            fwd_bwd = time_forward_backward(model, xf, labels, args.warmup, args.runs)
            rows.append({"mode": "clip", "input": "x".join(map(str, (batch,) + shape)),
                         "batch": batch, "memory format": name,
                         "fwd s/clip": fwd / batch, "fwd+bwd s/clip": fwd_bwd / batch})
    model.to(memory_format=torch.contiguous_format)
    return rows


def stream_mode(model: torch.nn.Module, cfg, args) -> List[Dict[str, object]]:
    from vov3d.models.complexity import conv_linear_flops
    from vov3d.models.cox3d import CoX3D, stream_macs_per_frame
    from vov3d.models.x3d import X3D

    if not isinstance(model, CoX3D):
        if type(model) is not X3D:
            raise ConfigError(f"--mode stream needs MODEL.MODEL_NAME CoX3D or X3D, got "
                              f"{cfg.MODEL.MODEL_NAME!r}.")
        weights = model.state_dict()
        model = CoX3D(cfg)
        model.load_state_dict(weights)
    model.eval()
    channels, frames = cfg.DATA.INPUT_CHANNEL_NUM[0], cfg.DATA.NUM_FRAMES
    crop = cfg.DATA.TRAIN_CROP_SIZE
    clip_shape = (channels, frames, crop, crop)
    rows = []
    for batch in args.batch_sizes:
        clip = torch.randn(batch, *clip_shape)
        per_clip = time_forward(model, clip, args.warmup, args.runs) / batch
        # Enough distinct frames for every timed step after the warm-up.
        stream = torch.randn(batch, channels, model.delay + args.warmup + args.runs, crop, crop)
        model.reset()
        with torch.no_grad():
            model.forward_steps(stream[:, :, :model.delay])
        position = [model.delay]

        def step():
            with torch.no_grad():
                model.forward_step(stream[:, :, position[0]])
            position[0] += 1

        per_frame = median_seconds(step, args.warmup, args.runs) / batch
        clip_macs = conv_linear_flops(model, (1,) + clip_shape) / 1e9
        frame_macs = stream_macs_per_frame(model, crop, crop) / 1e9
        rows.append({"mode": "clip (X3D)", "input": "x".join(map(str, (batch,) + clip_shape)),
                     "batch": batch, "s/eval": per_clip, "GMAC/eval": clip_macs,
                     "speed-up": "1.0x"})
        rows.append({"mode": f"stream (CoX3D, window {model.temporal_window})",
                     "input": "x".join(map(str, (batch, channels, crop, crop))), "batch": batch,
                     "s/eval": per_frame, "GMAC/eval": frame_macs,
                     "speed-up": f"{per_clip / per_frame:.1f}x"})
    model.reset()
    return rows


MODES: Dict[str, Callable] = {"clip": clip_mode, "stream": stream_mode}
RUNTIMES = ("eager", "onnxruntime", "torchscript")
_RUNTIME_FORMAT = {"onnxruntime": "onnx", "torchscript": "torchscript"}


def runtime_runner(graph, runtime: str, folder: str):
    """`inputs -> outputs` (numpy) for `graph` in `runtime`; the export formats' own loaders."""
    import numpy as np

    from vov3d.export.formats import export_graph, load_runner

    if runtime == "eager":
        def run(inputs):
            with torch.no_grad():
                out = graph.module(*[torch.from_numpy(np.asarray(x)) for x in inputs])
            return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
        return run
    fmt = _RUNTIME_FORMAT[runtime]
    path = os.path.join(folder, f"{graph.mode}.{fmt}")
    export_graph(graph, path, fmt, dynamic_batch=False)
    return load_runner(path, fmt, threads=torch.get_num_threads())


def one_eval(graph, run) -> Callable[[], None]:
    """A call that runs one clip, or one stream step after the warm-up (state threaded)."""
    inputs = [x.numpy() for x in graph.example]
    if graph.mode == "clip":
        return lambda: run(inputs)
    frames = [torch.randn(graph.example[0].shape).numpy() for _ in range(8)]
    state = inputs[1:]
    for t in range(graph.module.model.delay):
        state = run([frames[t % 8], *state])[2:]
    position = [0]

    def step():
        state[:] = run([frames[position[0] % 8], *state])[2:]
        position[0] += 1

    return step


def interleaved_medians(calls: Dict[str, Callable[[], None]], warmup: int, runs: int) -> Dict[str, float]:
    """Median seconds of each call, timed in turns (one of each per round), so that a
    neighbour's load on a shared CPU weighs on every runtime alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def runtime_rows(model: torch.nn.Module, cfg, args) -> List[Dict[str, object]]:
    from vov3d.export.graphs import clip_graph, step_graph
    from vov3d.models.cox3d import CoX3D
    from vov3d.models.x3d import X3D

    crop, names = cfg.DATA.TRAIN_CROP_SIZE, [str(i) for i in range(cfg.MODEL.NUM_CLASSES)]
    batch = args.batch_sizes[0]
    graphs = [clip_graph(model.eval(), cfg, names, batch, crop)]
    if args.mode == "stream":
        if not isinstance(model, CoX3D):
            if type(model) is not X3D:
                raise ConfigError(f"--mode stream needs MODEL.MODEL_NAME CoX3D or X3D, got "
                                  f"{cfg.MODEL.MODEL_NAME!r}.")
            weights, model = model.state_dict(), CoX3D(cfg)
            model.load_state_dict(weights)
        graphs = [clip_graph(model.eval(), cfg, names, batch, crop), step_graph(model, cfg, names, batch, crop)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vov3d-benchmark-") as folder:
        for graph in graphs:
            calls = {rt: one_eval(graph, runtime_runner(graph, rt, folder)) for rt in args.runtime}
            seconds = interleaved_medians(calls, args.warmup, args.runs)
            eager = seconds.get("eager")
            for runtime in args.runtime:
                rows.append({"graph": "clip" if graph.mode == "clip" else "frame (CoX3D step)",
                             "input": "x".join(map(str, graph.example[0].shape)), "runtime": runtime,
                             "ms/eval": seconds[runtime] * 1e3,
                             "vs eager": f"{eager / seconds[runtime]:.2f}x" if eager else "-"})
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    cols = list(rows[0])
    cells = [[f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = the thread budget: OMP_NUM_THREADS, else the usable cores)")
    parser.add_argument("--mode", choices=sorted(MODES), default="clip")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=10, help="timed runs (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--runtime", nargs="+", choices=RUNTIMES, default=None,
                        help="time inference in these runtimes (exported files for onnxruntime and "
                             "torchscript) instead of eager forward/backward")


def main(argv=None) -> int:
    args = parse_args(argv, "Time a model's forward and forward+backward passes.",
                      distributed=False, add_arguments=add_tool_arguments)
    if args.runs < 1 or args.warmup < 0 or min(args.batch_sizes) < 1:
        print("benchmark_model.py: --runs and --batch-sizes must be >= 1, --warmup >= 0.",
              file=sys.stderr)
        return 2
    args.opts = list(args.opts) + ["NUM_GPUS", "0"]
    try:
        cfg = load_config(args)
        from vov3d.engine.preflight import check_registered_names
        from vov3d.models import build_model
        check_registered_names(cfg, datasets=False)
        model = build_model(cfg)
    except ConfigError as e:
        return report_user_error("benchmark_model.py", e)
    try:
        budget = tool_budget(args.threads)
    except ValueError as e:
        print(f"benchmark_model.py: {e}", file=sys.stderr)
        return 2
    apply_budget(budget, log=False)

    try:
        if args.runtime and "onnxruntime" in args.runtime:
            from vov3d.export.formats import require_onnx
            require_onnx()
        rows = runtime_rows(model, cfg, args) if args.runtime else MODES[args.mode](model, cfg, args)
    except UserError as e:
        return report_user_error("benchmark_model.py", e)
    print(f"{cfg.MODEL.MODEL_NAME} from {args.cfg_file}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads (set by {budget.source}); median of {args.runs} runs after {args.warmup} warm-up")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
