#!/usr/bin/env python3
"""Submit a run_net job (train, then test) to SLURM through submitit:

    python tools/submit_net.py --cfg configs/Kinetics/vov3d/vov3d_L.yaml --partition PART \
        --nodes 2 [--gpus-per-node NUM_GPUS] [--time 72:00:00] [--dry-run] [KEY VALUE ...]

One task per GPU on every node (one per node for NUM_GPUS 0); ranks, world size and the
rendezvous host come from SLURM, NUM_SHARDS is --nodes. Preempted or out of time, the job
saves a mid-epoch checkpoint and requeues itself; the requeued job resumes there. submitit's
files (the sbatch script, pickles, each task's output) go to OUTPUT_DIR/submitit.
--dry-run prints the sbatch script and submits nothing.
"""
import os
import re
import sys
from typing import Dict, Optional

from vov3d.config import ConfigError, load_config, parse_args
from vov3d.engine import preflight
from vov3d.engine.logging import start_logging

# OUTPUT_DIR places that are private to each machine: the ranks of a multi-node job would
# not see each other's checkpoints there.
_LOCAL_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
_LOCAL_FILE_SYSTEMS = ("tmpfs", "ramfs")
MOUNTS_FILE = "/proc/mounts"
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEMORY = re.compile(r"^\d+[KMGT]?B?$", re.IGNORECASE)


class SubmitError(Exception):
    """A flag that cannot be used as given; reported in one line before anything is submitted."""


def add_slurm_arguments(parser) -> None:
    group = parser.add_argument_group("SLURM")
    group.add_argument("--partition", help="SLURM partition")
    group.add_argument("--nodes", type=int, default=1, help="machines (NUM_SHARDS)")
    group.add_argument("--gpus-per-node", type=int, help="GPUs (= tasks) per machine; default NUM_GPUS")
    group.add_argument("--cpus-per-task", type=int, help="CPUs per task; default DATA_LOADER.NUM_WORKERS + 1")
    group.add_argument("--mem", help="memory per node in sbatch's syntax, e.g. 400G (0: all of it)")
    group.add_argument("--time", default="72:00:00", help="time limit: minutes, HH:MM:SS or D-HH:MM:SS")
    group.add_argument("--job-name", help="default: vov3d-<config name>")
    for flag in ("--comment", "--constraint", "--account", "--qos", "--exclude"):
        group.add_argument(flag, help=f"sbatch {flag}")
    group.add_argument("--dry-run", action="store_true", help="print the sbatch script, submit nothing")


def minutes(text: str) -> int:
    """sbatch's --time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in minutes."""
    match = _TIME.match(text.strip())
    if not match:
        raise SubmitError(f"--time {text!r} is not minutes, HH:MM:SS or D-HH:MM:SS.")
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        total = days * 1440 + first * 60 + (second or 0) + (1 if third else 0)
    elif third is not None:  # HH:MM:SS
        total = first * 60 + second + (1 if third else 0)
    else:  # MM[:SS]
        total = first + (1 if second else 0)
    if total <= 0:
        raise SubmitError(f"--time {text!r} is no time at all.")
    return total


def is_machine_local(path: str) -> Optional[str]:
    """Why `path` is private to one machine (by place or file system type), else None."""
    real = os.path.realpath(path)
    for place in _LOCAL_DIRS:
        if real == place or real.startswith(place + os.sep):
            return f"it is under {place}"
    best, kind = "", ""
    try:
        with open(MOUNTS_FILE, encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and (real == fields[1] or real.startswith(fields[1].rstrip("/") + "/")) \
                        and len(fields[1]) >= len(best):
                    best, kind = fields[1], fields[2]
    except OSError:
        return None
    return f"it is on a {kind} file system" if kind in _LOCAL_FILE_SYSTEMS else None


def slurm_parameters(args, cfg) -> Dict:
    """submitit's SlurmExecutor parameters for the flags, checked against the config."""
    gpus = cfg.NUM_GPUS if args.gpus_per_node is None else args.gpus_per_node
    if gpus != cfg.NUM_GPUS:
        raise SubmitError(f"--gpus-per-node {gpus} but the config has NUM_GPUS {cfg.NUM_GPUS}: one process runs per "
                          f"GPU, so they must agree. Add NUM_GPUS {gpus} to the overrides, or leave out "
                          "--gpus-per-node.")
    if args.mem is not None and not _MEMORY.match(args.mem):
        raise SubmitError(f"--mem {args.mem!r} is not a size like 400G, 64000M or 0.")
    params = {"nodes": args.nodes, "ntasks_per_node": max(gpus, 1), "time": minutes(args.time),
              "cpus_per_task": args.cpus_per_task or cfg.DATA_LOADER.NUM_WORKERS + 1,
              "job_name": args.job_name or "vov3d-" + os.path.splitext(os.path.basename(args.cfg_file))[0]}
    if gpus > 0:
        params["gpus_per_node"] = gpus
    for key in ("partition", "mem", "comment", "constraint", "account", "qos", "exclude"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return params


def executor(folder: str, params: Dict, dry_run: bool):
    """submitit's SLURM executor; for a dry run one that only writes scripts (it needs no
    `srun` on this machine)."""
    from submitit import SlurmExecutor

    cls = SlurmExecutor
    if dry_run:
        class ScriptOnly(SlurmExecutor):
            @classmethod
            def affinity(cls):  # SlurmExecutor refuses to exist where srun is missing
                return 1
        cls = ScriptOnly
    ex = cls(folder=folder)
    ex.update_parameters(**params)
    return ex


def main(argv=None) -> int:
    args = parse_args(argv, "Submit a vov3d job to SLURM (through submitit).", distributed=False,
                      add_arguments=add_slurm_arguments)
    start_logging()
    try:
        import submitit  # noqa: F401 - only this tool needs it
    except ImportError:
        print("submit_net.py: submitit is not installed; install the cluster extra: pip install 'vov3d[cluster]' "
              "(or pip install submitit).", file=sys.stderr)
        return 2
    args.num_shards = args.nodes  # validation scales the LR by the machines, as for --num_shards
    try:
        if args.nodes < 1:
            raise SubmitError(f"--nodes must be >= 1, got {args.nodes}.")
        cfg = load_config(args)
        params = slurm_parameters(args, cfg)
        preflight.check_registered_names(cfg)  # a queued job should not fail on a misspelt name
        preflight.check_output_dir(cfg)
    except (ConfigError, SubmitError) as e:
        print(f"submit_net.py: {'config error: ' if isinstance(e, ConfigError) else ''}{e}", file=sys.stderr)
        return 2
    if not (cfg.TRAIN.ENABLE or cfg.TEST.ENABLE or preflight.visualization_job_enabled(cfg)):
        print("submit_net.py: config error: TRAIN.ENABLE and TEST.ENABLE are both False: nothing would run.",
              file=sys.stderr)
        return 2
    return submit(args, cfg, params)


def submit(args, cfg, params: Dict) -> int:
    from vov3d.engine.slurm import SlurmRun

    cfg = cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = os.path.abspath(cfg.OUTPUT_DIR)  # the job may start elsewhere
    cfg.freeze()
    local = is_machine_local(cfg.OUTPUT_DIR) if args.nodes > 1 else None
    if local:
        print(f"submit_net.py: warning: OUTPUT_DIR {cfg.OUTPUT_DIR} is private to each machine ({local}): the "
              f"{args.nodes} nodes will not see each other's checkpoints, and a resume would not find them. Use "
              "a shared file system.", file=sys.stderr)
    folder = os.path.join(cfg.OUTPUT_DIR, "submitit")
    ex = executor(folder, params, args.dry_run)
    if args.dry_run:
        print(ex._make_submission_file_text(ex._submitit_command_str, "dry-run"))
        return 0
    job = ex.submit(SlurmRun(cfg))
    print(f"submit_net.py: submitted job {job.job_id} ({params['nodes']} node(s) x {params['ntasks_per_node']} "
          f"task(s)); its output: {folder}; training logs: {os.path.join(cfg.OUTPUT_DIR, 'stdout.log')}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
