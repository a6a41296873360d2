"""The thread budget of a CPU process: how many threads it and its loader workers may run.

PyTorch starts one OpenMP thread per core in every process, and OpenMP threads that share
an operation wait for one another at its end: when more threads are busy than there are
cores (loader workers, other processes of the job, other jobs), every operation waits for
its slowest, descheduled thread. So each process of a job gets an equal share of the cores
it may use (its affinity mask), its loader workers one thread each, and the main process
the rest of its share. OMP_NUM_THREADS (else MKL_NUM_THREADS) in the environment sets the
main process's threads instead, as it would for any OpenMP program. Without such a variable
the main process's threads then follow the machine's load between one and its share
(thread_governor.py), between batches of the loops that iterate `governed(loader)`.
"""
import dataclasses
import logging
import os
from typing import FrozenSet, Iterable, Iterator, Mapping, Optional, Tuple

from yacs.config import CfgNode

from vov3d.utils.processes import processes_per_machine
from vov3d.utils.thread_governor import ThreadGovernor

logger = logging.getLogger(__name__)

ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclasses.dataclass(frozen=True)
class ThreadBudget:
    cores: int            # cores this process may run on
    processes: int        # processes of the job on this machine
    workers: int          # loader workers of each process
    share: int            # cores of each process (the most intra-op threads it may get)
    main_threads: int     # intra-op threads of each process at the start
    decode_threads: int   # FFmpeg threads per decoded video (in a worker, or the main process)
    source: str           # what set main_threads: "cores", or "OMP_NUM_THREADS=4"

    # A loader worker runs one thread (torch and OpenCV); loading throughput comes from
    # the number of workers, not from threads inside each.
    worker_threads = 1

    @property
    def adaptive(self) -> bool:
        """Whether the main threads may follow the machine's load (no user setting)."""
        return self.source == "cores" and self.share > 1

    def describe(self, governed: bool = False) -> str:
        main = f"{self.main_threads} intra-op thread(s) per process"
        if governed:
            main += f" (1 to {self.share} as the machine's load allows)"
        return (f"Threads: {self.cores} usable core(s), {self.processes} process(es) on this "
                f"machine, {self.workers} loader worker(s) each -> {main}, {self.worker_threads} "
                f"per loader worker, {self.decode_threads} per video decode (main threads set by "
                f"{self.source}).")


def usable_cpus() -> FrozenSet[int]:
    """The CPUs this process may run on: its affinity mask (taskset, cgroups cpusets, SLURM),
    which os.cpu_count() ignores."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return frozenset(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many CPUs this process may run on."""
    return len(usable_cpus())


def threads_from_env(environ: Mapping[str, str]) -> Optional[Tuple[str, int]]:
    """(variable, threads) of the first of OMP_NUM_THREADS, MKL_NUM_THREADS that is set;
    an OpenMP list such as "4,2" gives its first (outermost) level."""
    for key in ENV_KEYS:
        text = environ.get(key, "").strip()
        if not text:
            continue
        first = text.split(",")[0].strip()
        if not first.isdigit() or int(first) < 1:
            raise ValueError(f"{key}={text!r} in the environment: expected a whole number of "
                             f"threads >= 1 (e.g. {key}=1), or unset it to use the thread budget.")
        return key, int(first)
    return None


def plan_threads(cores: int, processes: int, workers: int, environ: Mapping[str, str],
                 multi_thread_decode: bool = False) -> ThreadBudget:
    """The budget of one process of `processes` on `cores` usable cores, with `workers`
    loader workers. Busy threads (main + workers) stay within the process's share of the
    cores whenever the share has room for them."""
    if cores < 1 or processes < 1 or workers < 0:
        raise ValueError(f"cores {cores} and processes {processes} must be >= 1 and workers "
                         f"{workers} >= 0.")
    share = max(1, cores // processes)
    override = threads_from_env(environ)
    if override is not None:
        main, source = override[1], f"{override[0]}={override[1]}"
    else:
        main, source = max(1, share - workers), "cores"
    # FFmpeg frame/slice threads only when asked for (DATA_LOADER.ENABLE_MULTI_THREAD_DECODE),
    # and then each worker's part of the share.
    decode = max(1, share // max(workers, 1)) if multi_thread_decode else 1
    return ThreadBudget(cores, processes, workers, share, main, decode, source)


def budget_for(cfg: CfgNode, environ: Optional[Mapping[str, str]] = None) -> ThreadBudget:
    """The budget of this process of the job `cfg` describes."""
    return plan_threads(usable_cores(), processes_per_machine(cfg), cfg.DATA_LOADER.NUM_WORKERS,
                        os.environ if environ is None else environ,
                        cfg.DATA_LOADER.ENABLE_MULTI_THREAD_DECODE)


def tool_budget(threads: int = 0, environ: Optional[Mapping[str, str]] = None) -> ThreadBudget:
    """The budget of a one-process tool without loader workers: its share of the usable
    cores, unless `threads` (the tool's --threads flag; 0 = not given) or the environment
    says otherwise."""
    if threads > 0:
        cores = usable_cores()
        return ThreadBudget(cores, 1, 0, cores, threads, 1, "--threads")
    return plan_threads(usable_cores(), 1, 0, os.environ if environ is None else environ)


_process_threads = 0  # intra-op threads last set for this process (0: not yet)


def set_process_threads(threads: int) -> None:
    """Intra-op threads of torch in this process; OpenCV runs one thread (its pool would
    compete with torch's for the same cores)."""
    import cv2
    import torch

    global _process_threads
    _process_threads = threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    cv2.setNumThreads(1)


def follow_process_threads() -> None:
    """In a helper thread that runs torch (the demo's model thread): take the process's
    current intra-op threads. Torch keeps a count per thread, fixed when the thread first
    runs an op, so a later change made in the loop's thread would not reach it."""
    import torch

    if _process_threads and torch.get_num_threads() != _process_threads:
        torch.set_num_threads(_process_threads)


_logged = set()
_governor: Optional[ThreadGovernor] = None


def apply_budget(budget: ThreadBudget, log: bool = True) -> None:
    """Set this (main) process's threads and, when the budget allows it, let them follow
    the machine's load in `governed` loops from now on; log the budget the first time."""
    global _governor
    set_process_threads(budget.main_threads)
    _governor = None
    if budget.adaptive:
        governor = ThreadGovernor(budget.main_threads, budget.share, usable_cpus(), set_process_threads)
        _governor = governor if governor.active else None
    if log and budget not in _logged:
        _logged.add(budget)
        logger.info("%s", budget.describe(governed=_governor is not None))


def governed(batches: Iterable) -> Iterator:
    """The items of `batches`; before each, this process's threads may follow the load."""
    for batch in batches:
        if _governor is not None:
            _governor.tick()
        yield batch


def apply_worker_budget() -> None:
    """Inside a loader worker: one thread for torch and OpenCV."""
    global _governor
    _governor = None  # a forked worker must not steer threads it does not have
    set_process_threads(ThreadBudget.worker_threads)
