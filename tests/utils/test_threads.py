"""The thread budget: cores, processes per machine and loader workers -> threads, and the
environment variables that override it."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from vov3d.config import get_cfg
from vov3d.utils import threads
from vov3d.utils.threads import budget_for, plan_threads, threads_from_env, tool_budget, usable_cores

OMP, MKL = "OMP_NUM_THREADS", "MKL_NUM_THREADS"


@pytest.mark.parametrize("cores, procs, workers, env, main, source", [
    (2, 1, 1, {}, 1, "cores"),     # the toy demo: the worker keeps the second core
    (2, 1, 0, {}, 2, "cores"),     # loading in the main process: all cores compute
    (2, 1, 2, {}, 1, "cores"),     # more workers than the share: never below one
    (8, 2, 2, {}, 2, "cores"),     # torchrun x2 on 8 cores: 4 each, 2 of them for workers
    (64, 8, 8, {}, 1, "cores"),    # PySlowFast's 8 GPUs x 8 workers on 64 cores
    (3, 2, 0, {}, 1, "cores"),     # an odd core is left idle rather than shared
    (1, 4, 0, {}, 1, "cores"),     # more processes than cores
    (16, 1, 3, {OMP: "4"}, 4, "OMP_NUM_THREADS=4"),
    (16, 1, 3, {MKL: "6"}, 6, "MKL_NUM_THREADS=6"),
    (16, 1, 3, {OMP: "5", MKL: "6"}, 5, "OMP_NUM_THREADS=5"),    # OpenMP's own variable first
    (16, 1, 3, {OMP: "3,1"}, 3, "OMP_NUM_THREADS=3"),          # nested levels: the outer one
    (2, 1, 1, {OMP: "8"}, 8, "OMP_NUM_THREADS=8"),             # the user's word, even above the cores
    (16, 1, 3, {OMP: "  ", MKL: ""}, 13, "cores"),             # set but empty: not an override
])
def test_main_threads(cores, procs, workers, env, main, source):
    budget = plan_threads(cores, procs, workers, env)
    assert (budget.main_threads, budget.source) == (main, source)
    assert (budget.cores, budget.processes, budget.workers) == (cores, procs, workers)
    assert budget.worker_threads == 1 and budget.decode_threads == 1
    assert budget.share == max(1, cores // procs)
    assert budget.adaptive == (source == "cores" and budget.share > 1)


@pytest.mark.parametrize("cores, procs, workers, decode", [
    (8, 1, 2, 4), (2, 1, 0, 2), (2, 1, 1, 2), (64, 8, 8, 1), (16, 2, 3, 2),
])
def test_multi_thread_decode_shares_the_process_cores_among_its_workers(cores, procs, workers, decode):
    assert plan_threads(cores, procs, workers, {}, multi_thread_decode=True).decode_threads == decode
    assert plan_threads(cores, procs, workers, {}).decode_threads == 1


@pytest.mark.parametrize("env", [{OMP: "abc"}, {OMP: "0"}, {OMP: "-2"}, {OMP: "2.5"},
                                 {MKL: "many"}, {OMP: ",4"}])
def test_malformed_environment_is_refused_naming_the_variable(env):
    (key, value), = env.items()
    with pytest.raises(ValueError, match=rf"{key}='{value}' in the environment: expected a whole number"):
        threads_from_env(env)


def test_impossible_counts_are_refused():
    with pytest.raises(ValueError, match="cores 0"):
        plan_threads(0, 1, 0, {})
    with pytest.raises(ValueError, match="workers -1"):
        plan_threads(4, 1, -1, {})


def test_usable_cores_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7})
    assert usable_cores() == 3


def test_a_real_affinity_mask_limits_the_budget():
    """taskset / cgroup cpusets restrict the cores; os.cpu_count() would not see it."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from vov3d.utils.threads import plan_threads, usable_cores; "
            "print(usable_cores(), plan_threads(usable_cores(), 1, 0, {}).main_threads)")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_budget_of_a_job_counts_its_processes_and_workers(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    for key in (OMP, MKL, "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cfg = get_cfg()
    cfg.NUM_GPUS, cfg.DATA_LOADER.NUM_WORKERS = 0, 1
    budget = budget_for(cfg)
    assert (budget.cores, budget.processes, budget.workers, budget.main_threads) == (8, 2, 1, 3)
    cfg.NUM_GPUS = 4  # GPU runs: one process per GPU, whatever torchrun says
    assert budget_for(cfg).main_threads == 1
    monkeypatch.setenv(OMP, "2")
    assert budget_for(cfg).source == "OMP_NUM_THREADS=2"


def test_tools_take_their_flag_then_the_environment_then_the_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 6)
    assert (tool_budget(0, {}).main_threads, tool_budget(0, {}).source) == (6, "cores")
    assert tool_budget(0, {OMP: "2"}).main_threads == 2
    flagged = tool_budget(3, {OMP: "2"})
    assert (flagged.main_threads, flagged.source) == (3, "--threads")


def test_the_log_line_says_every_number_and_the_source():
    line = plan_threads(8, 2, 1, {MKL: "2"}).describe()
    assert line == ("Threads: 8 usable core(s), 2 process(es) on this machine, 1 loader worker(s) each -> "
                    "2 intra-op thread(s) per process, 1 per loader worker, 1 per video decode "
                    "(main threads set by MKL_NUM_THREADS=2).")
