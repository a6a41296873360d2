"""Every job process applies its thread budget at set-up and logs it once."""
import cv2
import pytest
import torch

from tests.engine.tiny_parts import tiny_cfg
from vov3d.config import ConfigError
from vov3d.engine import launch
from vov3d.engine.logging import setup_logging
from vov3d.engine.runtime import setup_process
from vov3d.utils import thread_governor, threads


@pytest.fixture(autouse=True)
def logging_reset():
    yield
    setup_logging(None)


def test_setup_applies_the_budget_and_logs_it_once(tmp_path, budget_state):
    budget_state.setattr(threads, "usable_cores", lambda: 3)
    cv2.setNumThreads(4)
    cfg = tiny_cfg(tmp_path, "DATA_LOADER.NUM_WORKERS", "1")
    setup_process(cfg)
    assert torch.get_num_threads() == 2  # 3 cores, one kept for the loader worker
    assert cv2.getNumThreads() == 1
    setup_process(cfg)  # the test phase of the same run
    log = (tmp_path / "stdout.log").read_text()
    assert log.count("Threads: ") == 1
    assert ("Threads: 3 usable core(s), 1 process(es) on this machine, 1 loader worker(s) each -> "
            "2 intra-op thread(s) per process, 1 per loader worker, 1 per video decode "
            "(main threads set by cores).") in log


def test_with_load_counters_the_log_says_the_threads_follow_the_load(tmp_path, budget_state):
    budget_state.setattr(threads, "usable_cores", lambda: 4)
    budget_state.setattr(thread_governor, "read_load",
                         lambda cpus: thread_governor.LoadSample(0.0, 0.0, 0, 100))
    setup_process(tiny_cfg(tmp_path, "DATA_LOADER.NUM_WORKERS", "2"))
    assert torch.get_num_threads() == 2
    assert ("-> 2 intra-op thread(s) per process (1 to 4 as the machine's load allows), 1 per loader "
            "worker") in (tmp_path / "stdout.log").read_text()


def test_the_environment_wins(tmp_path, budget_state):
    budget_state.setattr(threads, "usable_cores", lambda: 2)
    budget_state.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    setup_process(tiny_cfg(tmp_path))
    assert torch.get_num_threads() == 1
    assert "1 intra-op thread(s) per process" in (tmp_path / "stdout.log").read_text()
    assert "set by OMP_NUM_THREADS=1" in (tmp_path / "stdout.log").read_text()


def test_a_malformed_thread_variable_stops_the_job_before_any_work(tmp_path, budget_state):
    budget_state.setenv("MKL_NUM_THREADS", "two")

    def never(cfg):
        raise AssertionError("the job must not start")

    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="MKL_NUM_THREADS='two' in the environment"):
        launch.launch_job(tiny_cfg(out), "tcp://localhost:9999", never)
    assert not out.exists()
