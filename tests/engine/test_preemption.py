"""Stopping training on a signal: which signals are caught and given back, the stop of all
processes of a job at the same iteration, and the launcher passing signals to its children
(the mid-epoch resumes themselves are in tests/tools/test_run_net_restarts.py)."""
import os
import pickle
import signal
import socket
import threading
import time

import pytest

from tests.conftest import metrics_records
from tests.engine.tiny_parts import make_fake_trainer_class, stoppable_training, tiny_cfg
from vov3d.engine import launch
from vov3d.engine.preemption import StopSignals, TrainingStopped
from vov3d.engine.runtime import setup_process
from vov3d.utils import checkpoint_io as cu


def test_stop_signals_are_recorded_while_active_and_handed_back_after():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == [signal.SIGUSR1, signal.SIGTERM] and stop.describe() == "SIGUSR1 and SIGTERM"
    assert signal.getsignal(signal.SIGUSR1) == before and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_the_same_signal_twice_does_what_it_did_before():
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        with StopSignals([signal.SIGUSR2]) as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.received == [signal.SIGUSR2] and seen == []
            os.kill(os.getpid(), signal.SIGUSR2)  # the stop hangs: the user insists
            assert seen == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_training_stopped_travels_between_processes_with_its_exit_status():
    error = TrainingStopped("stopped in epoch 2", [signal.SIGUSR2, signal.SIGTERM])
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == "stopped in epoch 2" and again.signals == (signal.SIGUSR2, signal.SIGTERM)
    assert again.exit_code == 128 + signal.SIGUSR2 and TrainingStopped("another rank").exit_code == 143


def test_a_signal_during_validation_stops_after_the_epoch_with_its_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, "TRAIN.CHECKPOINT_PERIOD", "5", "SOLVER.MAX_EPOCH", "3")
    setup_process(cfg)
    with StopSignals() as stop:
        trainer = make_fake_trainer_class()(cfg, stop)
        validate = trainer.validate

        def signalled(epoch):
            os.kill(os.getpid(), signal.SIGTERM)
            validate(epoch)

        trainer.validate = signalled
        with pytest.raises(TrainingStopped, match=r"^Training stopped by SIGTERM at the end of epoch 1/3; saved "):
            trainer.fit()
    # Epoch 1 is no checkpoint epoch (CHECKPOINT_PERIOD 5), but the stop saves where it is.
    assert [os.path.basename(p) for p in cu.list_checkpoints(str(tmp_path))] == ["checkpoint_epoch_00001.pyth"]
    assert [r["epoch"] for r in metrics_records(tmp_path, "val_epoch")] == ["1/3"]


@pytest.mark.slow
def test_the_launcher_passes_sigterm_to_its_processes_which_stop_at_the_same_iteration(tmp_path):
    # What a multi-GPU run does, on the CPU: one spawned process per "GPU", the launcher killed.
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "20", "TRAIN.BATCH_SIZE", "4", "DIST_TIMEOUT", "60")
    cfg.freeze()

    def send_sigterm_once_training():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if os.path.exists(tmp_path / "metrics.jsonl") and metrics_records(tmp_path, "train_iter"):
                os.kill(os.getpid(), signal.SIGTERM)  # to the launcher only, as `kill <pid>` would
                return
            time.sleep(0.05)

    sender = threading.Thread(target=send_sigterm_once_training, daemon=True)
    sender.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        init = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(TrainingStopped) as stopped:
        launch.spawn_processes(cfg, init, stoppable_training, 2)
    sender.join()
    assert "Training stopped by SIGTERM in epoch" in str(stopped.value) or "another rank" in str(stopped.value)
    saved = [p for p in cu.list_checkpoints(str(tmp_path)) if cu.is_mid_epoch(p)]
    assert len(saved) == 1  # rank 0 saved the one iteration both stopped after
    epoch, iteration = cu.progress(saved[0])
    records = metrics_records(tmp_path, "train_iter")
    assert (records[-1]["epoch"], records[-1]["iter"]) == (f"{epoch + 1}/20", f"{iteration}/2")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
