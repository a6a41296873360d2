"""The demo runs on the thread budget: set before the model loads (the environment wins, a
malformed value is refused before any decoding), and the model's own thread
(DEMO.NUM_CLIPS_SKIP -1) follows the process's threads when the load changes them."""
import cv2
import pytest
import torch

from tests.demo.test_run import demo_cfg, write_video
from vov3d.config import ConfigError
from vov3d.demo import run
from vov3d.utils import threads


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("demo") / "sweep.mp4", frames=12)


def test_the_demo_runs_on_its_share_of_the_cores(tmp_path, video, budget_state):
    budget_state.setattr(threads, "usable_cores", lambda: 2)
    seen = []
    budget_state.setattr(run, "load_inference_model", _recording(seen, run.load_inference_model))
    run.run_demo(demo_cfg(tmp_path, video))
    assert seen == [2]  # set before the model was loaded
    assert torch.get_num_threads() == 2 and cv2.getNumThreads() == 1


def test_the_environment_wins_and_a_malformed_value_is_refused(tmp_path, video, budget_state):
    budget_state.setattr(threads, "usable_cores", lambda: 2)
    budget_state.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    run.run_demo(demo_cfg(tmp_path, video))
    assert torch.get_num_threads() == 1
    budget_state.setenv("OMP_NUM_THREADS", "all")
    (tmp_path / "refused").mkdir()
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS='all' in the environment"):
        run.run_demo(demo_cfg(tmp_path / "refused", video))
    assert not (tmp_path / "refused" / "labelled.mp4").exists()


class ThreadsPredictor:
    """Every frame is a job; a job reports the torch threads of the thread that runs it."""

    def add(self, frame):
        return frame

    def run(self, job):
        return torch.get_num_threads()


def test_the_model_thread_follows_the_process_threads(budget_state):
    runner = run.Runner(ThreadsPredictor(), background=True)
    threads.set_process_threads(1)
    assert runner.feed(0) == []  # the model thread starts, on one thread
    runner._pending.result()
    threads.set_process_threads(2)  # what the governor does between frames
    assert runner.feed(1) == [1]
    assert runner.finish() == [2]  # the same model thread, now on two


def _recording(seen, load):
    def wrapped(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return load(*args, **kwargs)
    return wrapped
