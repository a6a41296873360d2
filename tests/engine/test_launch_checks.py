"""launch_job refuses unusable devices, batch splits and OUTPUT_DIRs before any work, and a
job's fatal error reaches OUTPUT_DIR/stdout.log."""
import argparse
import logging
import os
import socket

import pytest
import torch

from tests.engine.tiny_parts import tiny_cfg
from vov3d.config import ConfigError, load_config
from vov3d.datasets.failures import DataLoadError
from vov3d.engine import distributed as du
from vov3d.engine import launch, preflight
from vov3d.engine.logging import setup_logging, start_logging
from vov3d.engine.runtime import setup_process
from vov3d.utils import comm
from vov3d.utils.checkpoint_io import CheckpointError
from vov3d.utils.errors import UserError, describe


def _never(cfg):
    raise AssertionError("the job must not start")


def train_cfg(out, *overrides):
    """A training-only job: no test lists to read before it starts."""
    return tiny_cfg(out, "TEST.ENABLE", "False", *overrides)


def _log(out):
    with open(os.path.join(str(out), "stdout.log")) as f:
        return f.read()


def test_gpus_on_a_machine_without_cuda_are_refused_before_any_work(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        launch.launch_job(tiny_cfg(out, "NUM_GPUS", "1"), "tcp://localhost:9999", _never)
    msg = str(err.value)
    assert "NUM_GPUS is 1" in msg and "CUDA is not available" in msg and "use NUM_GPUS 0 for the CPU" in msg
    assert not out.exists()


def test_more_gpus_than_the_machine_has_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="NUM_GPUS is 4 but this machine has 2 CUDA device"):
        launch.launch_job(tiny_cfg(tmp_path / "out", "NUM_GPUS", "4"), "tcp://localhost:9999", _never)
    assert not (tmp_path / "out").exists()
    preflight.check_devices(tiny_cfg(tmp_path, "NUM_GPUS", "2"))  # as many as there are: fine


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(ConfigError, match="OUTPUT_DIR '.*out' exists and is not a directory"):
        launch.launch_job(train_cfg(tmp_path / "out"), "tcp://localhost:9999", _never)
    with pytest.raises(ConfigError, match="OUTPUT_DIR '.*sub': cannot create"):
        launch.launch_job(train_cfg(tmp_path / "out" / "sub"), "tcp://localhost:9999", _never)


def _torchrun_env(monkeypatch, local_size, world_size):
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", str(world_size)),
                       ("LOCAL_WORLD_SIZE", str(local_size))):
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("opts,key", [
    (("TRAIN.BATCH_SIZE", "3"), "TRAIN.BATCH_SIZE 3"),
    (("TRAIN.ENABLE", "False", "TEST.BATCH_SIZE", "5"), "TEST.BATCH_SIZE 5"),
])
def test_torchrun_cpu_batches_must_split_over_the_processes(tmp_path, monkeypatch, opts, key):
    _torchrun_env(monkeypatch, local_size=2, world_size=4)
    with pytest.raises(ConfigError) as err:
        launch.launch_job(tiny_cfg(tmp_path / "out", *opts), "env://", _never)
    assert key in str(err.value) and "2 processes (LOCAL_WORLD_SIZE 2)" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_batch_check_counts_only_enabled_phases_and_this_machine(tmp_path, monkeypatch):
    _torchrun_env(monkeypatch, local_size=2, world_size=4)
    preflight.check_process_batches(tiny_cfg(tmp_path, "TRAIN.BATCH_SIZE", "6", "TEST.BATCH_SIZE", "2"))
    preflight.check_process_batches(tiny_cfg(tmp_path, "TEST.ENABLE", "False", "TEST.BATCH_SIZE", "3"))
    with pytest.raises(ConfigError, match=r"TRAIN.BATCH_SIZE 3 .* its 2 processes \(LOCAL_WORLD_SIZE 2\); "
                                          r"e.g. TRAIN.BATCH_SIZE 2"):
        preflight.check_process_batches(tiny_cfg(tmp_path, "TRAIN.BATCH_SIZE", "3"))
    monkeypatch.delenv("LOCAL_WORLD_SIZE")  # launcher and loaders then take all 4 as one machine
    preflight.check_process_batches(tiny_cfg(tmp_path, "TRAIN.BATCH_SIZE", "8", "TEST.BATCH_SIZE", "4"))
    with pytest.raises(ConfigError, match=r"its 4 processes"):
        preflight.check_process_batches(tiny_cfg(tmp_path, "TRAIN.BATCH_SIZE", "6"))


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise DataLoadError("every attempt to read videos/a.mp4 failed; check DATA.PATH_PREFIX")


def test_data_errors_from_loader_workers_are_reduced_to_their_own_line():
    with pytest.raises(DataLoadError) as err:
        next(iter(torch.utils.data.DataLoader(_Unreadable(), num_workers=1)))
    assert "DataLoader worker process" in str(err.value)  # what PyTorch makes of it
    assert describe(err.value) == (
        "DataLoadError: every attempt to read videos/a.mp4 failed; check DATA.PATH_PREFIX")


def _refuse_checkpoint(cfg):
    setup_process(cfg)
    if comm.get_rank() == comm.get_world_size() - 1:
        raise CheckpointError(f"rank {comm.get_rank()}: cannot resume: OUTPUT_DIR holds another model")
    du.barrier()  # the others wait for the failed rank until the launcher stops them


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_user_errors_from_real_spawned_processes_are_raised_as_themselves_and_logged_once(tmp_path):
    # One process: global rank 0 logs its own failure.
    with pytest.raises(CheckpointError) as err:
        launch.spawn_processes(tiny_cfg(tmp_path / "one"), "tcp://127.0.0.1:1", _refuse_checkpoint, nprocs=1)
    assert type(err.value) is CheckpointError
    assert describe(err.value) == "CheckpointError: rank 0: cannot resume: OUTPUT_DIR holds another model"
    assert _log(tmp_path / "one").count("cannot resume") == 1
    # Two CPU processes (as NUM_GPUS 2 starts them): rank 1 fails, and its launcher logs it.
    out = tmp_path / "two"
    out.mkdir()
    with pytest.raises(CheckpointError, match="^rank 1: cannot resume: OUTPUT_DIR holds another model$"):
        launch.spawn_processes(tiny_cfg(out), f"tcp://127.0.0.1:{_free_port()}", _refuse_checkpoint, nprocs=2)
    assert _log(out).count("Rank 1 (local process 1) failed: CheckpointError: rank 1: cannot resume") == 1


def _bug(cfg):
    setup_process(cfg)
    raise KeyError("missing_layer")


def test_bugs_in_spawned_processes_keep_their_traceback(tmp_path):
    with pytest.raises(torch.multiprocessing.ProcessRaisedException) as err:
        launch.spawn_processes(tiny_cfg(tmp_path), "tcp://127.0.0.1:1", _bug, nprocs=1)
    assert "Traceback" in str(err.value) and "KeyError: 'missing_layer'" in str(err.value)
    assert not isinstance(err.value, UserError)
    log = _log(tmp_path)
    assert log.count("KeyError: 'missing_layer'") == 1 and "The job failed with KeyError" in log


def test_a_failing_job_writes_its_traceback_to_stdout_log(tmp_path):
    def job(cfg):
        setup_process(cfg)
        raise RuntimeError("disk on fire")

    cfg = train_cfg(tmp_path)
    with pytest.raises(RuntimeError, match="disk on fire"):
        launch.launch_job(cfg, "tcp://localhost:9999", job)
    text = _log(tmp_path)
    assert "Traceback (most recent call last)" in text and "RuntimeError: disk on fire" in text
    assert text.count("RuntimeError: disk on fire") == 1
    # A second report of the same exception (run_net after launch_job) adds nothing.
    with pytest.raises(RuntimeError):
        launch.launch_job(cfg, "tcp://localhost:9999", job)
    assert _log(tmp_path).count("RuntimeError: disk on fire") == 2  # once per failure


def test_user_errors_are_one_line_in_stdout_log(tmp_path):
    def job(cfg):
        setup_process(cfg)
        raise CheckpointError("cannot resume from /x.pyth")

    with pytest.raises(CheckpointError):
        launch.launch_job(train_cfg(tmp_path), "tcp://localhost:9999", job)
    text = _log(tmp_path)
    assert "CheckpointError: cannot resume from /x.pyth" in text and "Traceback" not in text


def test_spawned_gpu_workers_log_their_failure_too(tmp_path, monkeypatch):
    # One spawned worker run in this process: its parent never sets up logging, so the
    # worker itself must write why it died.
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)

    def job(cfg):
        setup_process(cfg)
        raise KeyError("missing_layer")

    cfg = tiny_cfg(tmp_path, "NUM_GPUS", "1")
    with pytest.raises(KeyError):
        launch._spawned_worker(0, 1, job, cfg, "tcp://localhost:9999", str(tmp_path))
    assert "KeyError: 'missing_layer'" in _log(tmp_path)


def _load_with_a_warning(tmp_path, *opts):
    path = tmp_path / "w.yaml"
    path.write_text(f"NUM_GPUS: 0\nOUTPUT_DIR: {tmp_path / 'out'}\nSOLVER:\n  GAMMA: 0.5\n"
                    "MODEL:\n  MODEL_NAME: TinyTestNet\nTEST:\n  ENABLE: False\n")  # no test lists to read
    start_logging()  # as run_net does, before the config is read
    return load_config(argparse.Namespace(cfg_file=str(path), opts=list(opts), num_shards=1, shard_id=0))


def test_config_warnings_reach_stdout_log(tmp_path):
    try:
        cfg = _load_with_a_warning(tmp_path)
        setup_process(cfg)
        setup_process(cfg)  # the test phase after training, in the same process
        text = _log(tmp_path / "out")
        assert text.count("SOLVER.GAMMA") == 1 and "no effect" in text and "[WARNING]" in text
    finally:
        setup_logging(None)


def test_spawned_processes_find_the_config_warnings_in_stdout_log(tmp_path, monkeypatch, capsys):
    # The launcher writes them before it spawns; a spawned process starts with empty logging.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    seen = []

    class Finished:  # the context of processes that already ended
        def pids(self):
            return []

        def join(self):
            return True

    def start_processes(worker, nprocs, args, daemon, join, start_method):
        seen.append(_log(tmp_path / "out"))
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
        setup_process(args[2])  # what rank 0 does first (args: nprocs, func, cfg, ...)
        return Finished()

    monkeypatch.setattr(torch.multiprocessing, "start_processes", start_processes)
    try:
        cfg = _load_with_a_warning(tmp_path, "NUM_GPUS", "2")
        launch.launch_job(cfg, "tcp://localhost:9999", _never)
        launch.launch_job(cfg, "tcp://localhost:9999", _never)  # the test phase
        assert seen[0].count("SOLVER.GAMMA") == 1
        assert _log(tmp_path / "out").count("SOLVER.GAMMA") == 1
        assert capsys.readouterr().out.count("SOLVER.GAMMA") == 1
    finally:
        setup_logging(None)


def test_only_the_launcher_of_rank_0_writes_the_start_up_records(tmp_path, monkeypatch):
    _torchrun_env(monkeypatch, local_size=1, world_size=1)
    monkeypatch.setenv("RANK", "1")
    try:
        cfg = _load_with_a_warning(tmp_path)
        launch.launch_job(cfg, "env://", lambda c: None)
        assert not os.path.exists(tmp_path / "out" / "stdout.log")
    finally:
        setup_logging(None)


@pytest.mark.parametrize("opts,needle", [
    (("MODEL.MODEL_NAME", "VoV3DD"), "MODEL.MODEL_NAME: unknown model 'VoV3DD'; registered: "),
    (("TRAIN.DATASET", "kinetcs"), "TRAIN.DATASET: unknown dataset 'kinetcs'; registered: "),
    (("TRAIN.ENABLE", "False", "TEST.DATASET", "ssv3"), "TEST.DATASET: unknown dataset 'ssv3'; registered: "),
])
def test_unknown_model_or_dataset_names_are_config_errors_before_any_work(tmp_path, opts, needle):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        launch.launch_job(tiny_cfg(out, *opts), "tcp://localhost:9999", _never)
    msg = str(err.value)
    assert msg.startswith(needle) and "Did you mean" in msg
    assert not out.exists()


def test_a_disabled_phase_may_name_any_dataset(tmp_path):
    preflight.check_registered_names(tiny_cfg(tmp_path, "TEST.ENABLE", "False", "TEST.DATASET", "none"))
    preflight.check_registered_names(tiny_cfg(tmp_path, "TRAIN.DATASET", "none"), datasets=False)
