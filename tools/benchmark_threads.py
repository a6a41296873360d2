#!/usr/bin/env python3
"""Time one training step under thread policies, on an idle CPU and next to competing
CPU-bound processes, and print one table:

    python tools/benchmark_threads.py --cfg configs/Toy/vov3d_M_toy.yaml [--data DIR]
        [--threads torch,budget,1] [--wait default,passive] [--workers 0,1,2]
        [--competitors 0,1,2] [--steps 6] [--warmup-seconds 6] [--repeats 1] [KEY VALUE ...]

A step is one optimiser step as the trainer runs it (engine/train_step.py): the next
batch from the train loader (real videos, --workers loader workers), the input step,
forward, loss, backward, optimiser step.
Each cell runs in a fresh process, so that OMP_NUM_THREADS and OMP_WAIT_POLICY take effect
before torch starts its threads; the competing processes (`while True: pass`, one core
each) are started before the cell and stopped after it.

Threads: "torch" = torch's default, one thread per core, as before the thread budget;
"budget" = vov3d's budget for the config, following the load between batches as run_net
does; N = OMP_NUM_THREADS=N. Wait: "default" = the OpenMP runtime's default; "passive" =
OMP_WAIT_POLICY=PASSIVE; a number N = GOMP_SPINCOUNT=N (how long a GNU OpenMP thread
spins before it sleeps). Cells report the median step time (seconds) of --steps steps
after --warmup-seconds of untimed steps (at least one; the budget's governor decides
every 2 s), the median over --repeats runs (interleaved, so slow phases of a shared
machine spread over all cells), the ratio to the same policy on an idle machine, and the
torch threads at the end of the cell. Without --data a toy dataset is generated into a
temporary folder.
"""
import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

from vov3d.config import ConfigError, load_config, parse_args
from vov3d.utils.errors import report_user_error

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPIN = "while True: pass"
Policy = Tuple[str, str, int]  # (threads, wait, workers)


def comma_list(kind, allowed=None):
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",")]
        except ValueError:
            values = []
        bad = [v for v in values if allowed is not None and not allowed(v)]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return values
    return parse


def thread_choice(text: str) -> str:
    if text in ("torch", "budget") or (text.isdigit() and int(text) >= 1):
        return text
    raise ValueError(text)


def add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="", help="toy dataset folder (default: generate one)")
    parser.add_argument("--threads", type=comma_list(thread_choice), default="torch,budget,1",
                        help="thread policies: torch, budget or a number (OMP_NUM_THREADS)")
    parser.add_argument("--wait", type=comma_list(str, lambda v: v in ("default", "passive") or v.isdigit()),
                        default="default",
                        help="OpenMP wait policies: default, passive, or a number N (GOMP_SPINCOUNT=N)")
    parser.add_argument("--workers", type=comma_list(int, lambda v: v >= 0), default=None,
                        help="DATA_LOADER.NUM_WORKERS values (default: the config's)")
    parser.add_argument("--competitors", type=comma_list(int, lambda v: v >= 0), default="0,1,2",
                        help="numbers of competing CPU-bound processes")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per cell")
    parser.add_argument("--warmup-seconds", type=float, default=6.0,
                        help="untimed steps first, for at least this long (at least one step)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every cell")
    parser.add_argument("--cell", default="", help=argparse.SUPPRESS)  # internal: one cell


# ----------------------------------------------------------------------------------------
# One cell, in its own process
# ----------------------------------------------------------------------------------------
def run_cell(cfg, threads: str, steps: int, warmup_seconds: float) -> Dict[str, object]:
    import torch

    from vov3d.datasets.loader import construct_loader, set_epoch
    from vov3d.engine.input_step import InputStep
    from vov3d.engine.losses import get_loss_func
    from vov3d.engine.mixup import MixUp
    from vov3d.engine.optimizer import construct_optimizer
    from vov3d.engine.train_step import TrainStep
    from vov3d.models import build_model
    from vov3d.utils.threads import apply_budget, budget_for, governed

    if threads != "torch":
        apply_budget(budget_for(cfg), log=False)
    torch.manual_seed(cfg.RNG_SEED)
    model = build_model(cfg)
    model.train()
    optimizer = construct_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    step = TrainStep(cfg, model, optimizer, scaler, get_loss_func(cfg.MODEL.LOSS_FUNC),
                     InputStep(cfg, torch.device("cpu")), amp=False, mixup=MixUp.from_cfg(cfg))
    loader = construct_loader(cfg, "train")
    per_epoch = step.steps_per_epoch(len(loader))
    times: List[float] = []
    warm_until = None
    for epoch in itertools.count():
        set_epoch(loader, cfg.RNG_SEED, epoch)
        batches = governed(loader)
        for _ in range(per_epoch):
            start = time.perf_counter()
            step.run(batches, lambda loss: None)
            end = time.perf_counter()
            if warm_until is None:
                warm_until = start + warmup_seconds
            if end >= warm_until:
                times.append(end - start)
            if len(times) == steps:
                return {"median": statistics.median(times), "threads": torch.get_num_threads()}


def cell_env(threads: str, wait: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if threads.isdigit():
        env["OMP_NUM_THREADS"] = threads
    if wait == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif wait.isdigit():
        env["GOMP_SPINCOUNT"] = wait
    return env


def measure(policy: Policy, competitors: int, args, data: str) -> Dict[str, object]:
    threads, wait, workers = policy
    command = [sys.executable, os.path.abspath(__file__), "--cfg", args.cfg_file, "--cell", threads,
               "--steps", str(args.steps), "--warmup-seconds", str(args.warmup_seconds)]
    command += list(args.opts) + ["DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data,
                                  "DATA_LOADER.NUM_WORKERS", str(workers), "NUM_GPUS", "0"]
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(competitors)]
    try:
        done = subprocess.run(command, env=cell_env(threads, wait), capture_output=True, text=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    if done.returncode != 0:
        raise RuntimeError(f"cell {policy} with {competitors} competitor(s) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------
def format_table(policies: List[Policy], competitors: List[int],
                 results: Dict[Tuple[Policy, int], List[dict]]) -> str:
    """One row per policy; a cell per number of competitors: median step seconds, its ratio
    to the same policy idle, and the torch threads at the end of the cell (of every run)."""
    head = ["threads", "wait", "workers"] + ["idle" if c == 0 else f"+{c} busy" for c in competitors]
    rows = []
    for policy in policies:
        idle = statistics.median(r["median"] for r in results[(policy, 0)]) if 0 in competitors else None
        cells = [policy[0], policy[1], str(policy[2])]
        for c in competitors:
            runs = results[(policy, c)]
            value = statistics.median(r["median"] for r in runs)
            ratio = "" if c == 0 or idle is None else f", {value / idle:.1f}x"
            threads = "/".join(str(t) for t in sorted({r["threads"] for r in runs}))
            cells.append(f"{value:.3f} s{ratio}, {threads} thr")
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def make_data(folder: str) -> str:
    data = os.path.join(folder, "toy")
    subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "make_toy_dataset.py"), "--out", data],
                   check=True, capture_output=True)
    return data


def main(argv=None) -> int:
    args = parse_args(argv, "Time the training step under thread policies, idle and busy.",
                      distributed=False, add_arguments=add_tool_arguments)
    if args.steps < 1 or args.warmup_seconds < 0 or args.repeats < 1:
        print("benchmark_threads.py: --steps and --repeats must be >= 1, --warmup-seconds >= 0.",
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(args)
    except ConfigError as e:
        return report_user_error("benchmark_threads.py", e)
    if args.cell:
        print(json.dumps(run_cell(cfg, args.cell, args.steps, args.warmup_seconds)))
        return 0
    workers = args.workers if args.workers is not None else [cfg.DATA_LOADER.NUM_WORKERS]
    policies = list(itertools.product(args.threads, args.wait, workers))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        data = os.path.abspath(args.data) if args.data else make_data(scratch)
        results: Dict[Tuple[Policy, int], List[dict]] = {}
        for _ in range(args.repeats):
            for competitors in args.competitors:
                for policy in policies:
                    result = measure(policy, competitors, args, data)
                    results.setdefault((policy, competitors), []).append(result)
                    print(f"threads {policy[0]}, wait {policy[1]}, {policy[2]} worker(s), {competitors} "
                          f"competitor(s): {result['median']:.3f} s", file=sys.stderr, flush=True)
    print(f"{cfg.MODEL.MODEL_NAME} from {args.cfg_file}, batch {cfg.TRAIN.BATCH_SIZE}, "
          f"{cfg.DATA.NUM_FRAMES}x{cfg.DATA.TRAIN_CROP_SIZE}^2; {len(os.sched_getaffinity(0))} usable cores; "
          f"median step of {args.steps} after {args.warmup_seconds:g} s of warm-up, median of {args.repeats} "
          f"run(s); 1-minute load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print(format_table(policies, args.competitors, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
