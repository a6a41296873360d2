"""tools/submit_net.py: the sbatch script it writes, the flags it refuses before submitting,
and the job it submits, run end to end by submitit's local executor: preempted mid-epoch,
it requeues itself and finishes with the weights of an uninterrupted run."""
import os
import signal
import stat
import sys
import time

import cloudpickle
import psutil
import pytest
import torch

from tests.conftest import REPO_ROOT, import_tool, metrics_records, tiny_toy_run
from tests.tools.toy_model import TOY_CFG, ResumeDropoutNet, toy_model_registered
from vov3d.config import load_config, parse_args
from vov3d.engine.slurm import SlurmRun, rendezvous_port
from vov3d.utils import checkpoint_io as cu


@pytest.fixture(scope="module")
def submit_net():
    return import_tool("submit_net")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return tiny_toy_run(tmp_path_factory.mktemp("toy"), TOY_CFG)


@pytest.fixture(autouse=True)
def toy_model():
    with toy_model_registered():
        yield


def _sbatch_lines(text):
    """{option: value} of the script's `#SBATCH --option=value` lines."""
    options = [line[len("#SBATCH --"):] for line in text.splitlines() if line.startswith("#SBATCH --")]
    return {o.split("=", 1)[0]: o.split("=", 1)[1] if "=" in o else True for o in options}


def test_dry_run_prints_a_script_with_the_requested_resources_and_submits_nothing(toy, tmp_path, submit_net, capsys):
    out = tmp_path / "run"
    argv = ["--cfg", toy[0], "--partition", "video", "--nodes", "2", "--gpus-per-node", "0", "--cpus-per-task", "6",
            "--mem", "64G", "--time", "1-02:30", "--job-name", "k400", "--comment", "ddl Friday", "--constraint",
            "volta32gb", "--account", "vid", "--qos", "high", "--exclude", "node[1-3]", "--dry-run",
            "OUTPUT_DIR", str(out)]
    assert submit_net.main(argv) == 0
    captured = capsys.readouterr()
    lines = _sbatch_lines(captured.out)
    assert {k: lines[k] for k in ("partition", "nodes", "ntasks-per-node", "cpus-per-task", "mem", "time", "job-name",
                                  "constraint", "account", "qos", "signal")} == {
        "partition": "video", "nodes": "2", "ntasks-per-node": "1", "cpus-per-task": "6", "mem": "64G",
        "time": str(26 * 60 + 30), "job-name": "k400", "constraint": "volta32gb", "account": "vid", "qos": "high",
        "signal": "USR2@90"}
    assert lines["comment"] == "'ddl Friday'" and lines["exclude"] == "'node[1-3]'" and "gpus-per-node" not in lines
    assert lines["output"] == f"{out}/submitit/%j_0_log.out"  # submitit's files live in OUTPUT_DIR
    assert "srun --unbuffered" in captured.out and "-m submitit.core._submit" in captured.out
    assert not out.exists()  # nothing submitted, nothing written
    # The default: one task per GPU (here NUM_GPUS 2; a login node needs no GPU to submit), workers + 1 CPUs.
    assert submit_net.main(["--cfg", toy[0], "--dry-run", "OUTPUT_DIR", str(out), "NUM_GPUS", "2",
                            "DATA_LOADER.NUM_WORKERS", "7"]) == 0
    lines = _sbatch_lines(capsys.readouterr().out)
    assert (lines["gpus-per-node"], lines["ntasks-per-node"], lines["cpus-per-task"], lines["nodes"]) == ("2", "2", "8", "1")
    assert lines["time"] == str(72 * 60) and lines["job-name"] == "vov3d-tiny"


@pytest.mark.parametrize("flags,message", [
    (["--gpus-per-node", "8"], "--gpus-per-node 8 but the config has NUM_GPUS 0: one process runs per GPU, so they "
                               "must agree. Add NUM_GPUS 8 to the overrides, or leave out --gpus-per-node."),
    (["--time", "2h"], "--time '2h' is not minutes, HH:MM:SS or D-HH:MM:SS."),
    (["--mem", "lots"], "--mem 'lots' is not a size like 400G, 64000M or 0."),
    (["--nodes", "0"], "--nodes must be >= 1, got 0."),
])
def test_flags_that_conflict_with_the_config_are_refused_before_submitting(toy, tmp_path, submit_net, capsys, flags,
                                                                           message):
    assert submit_net.main(["--cfg", toy[0], *flags, "OUTPUT_DIR", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"submit_net.py: {message}"]
    assert not (tmp_path / "run").exists()


def test_config_errors_and_a_missing_submitit_are_one_line(toy, tmp_path, submit_net, capsys, monkeypatch):
    assert submit_net.main(["--cfg", toy[0], "--dry-run", "MODEL.MODEL_NAME", "ResumeDropoutNot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("submit_net.py: config error: MODEL.MODEL_NAME: unknown model "
                                               "'ResumeDropoutNot'")
    monkeypatch.setitem(sys.modules, "submitit", None)  # what an environment without it gives
    assert submit_net.main(["--cfg", toy[0], "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "submit_net.py: submitit is not installed; install the cluster extra: pip install 'vov3d[cluster]' (or pip "
        "install submitit)."]


def test_several_nodes_on_a_machine_local_output_dir_are_warned_about(toy, tmp_path, submit_net, capsys):
    local = "/tmp/vov3d-test-not-shared/run"
    assert submit_net.main(["--cfg", toy[0], "--nodes", "2", "--dry-run", "OUTPUT_DIR", local]) == 0
    assert (f"submit_net.py: warning: OUTPUT_DIR {local} is private to each machine (it is under /tmp): the 2 "
            "nodes will not see each other's checkpoints") in capsys.readouterr().err
    assert submit_net.main(["--cfg", toy[0], "--nodes", "1", "--dry-run", "OUTPUT_DIR", local]) == 0
    assert "warning" not in capsys.readouterr().err  # one node sees its own files


def test_machine_local_is_decided_by_the_deepest_mount(submit_net, tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text("overlay / overlay rw 0 0\n"
                      "server:/export /shared nfs4 rw 0 0\n"
                      "tmpfs /shared/scratch tmpfs rw 0 0\n", encoding="utf-8")
    monkeypatch.setattr(submit_net, "MOUNTS_FILE", str(mounts))
    assert submit_net.is_machine_local("/shared/runs/x3d") is None
    assert submit_net.is_machine_local("/shared/scratch/x3d") == "it is on a tmpfs file system"
    assert submit_net.is_machine_local("/shared") is None
    assert submit_net.is_machine_local("/var/tmp/run") == "it is under /var/tmp"


def _fake_slurm(folder, monkeypatch):
    """sbatch / srun on PATH: sbatch keeps the script it was given and answers like SLURM."""
    os.makedirs(folder)
    for name, body in (("sbatch", f'cp "$1" {folder}/submitted.sh\necho "Submitted batch job 4242"\n'),
                       ("srun", "exit 1\n")):
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", folder + os.pathsep + os.environ["PATH"])


def test_a_submission_pickles_the_loaded_config_and_hands_the_script_to_sbatch(toy, tmp_path, submit_net, capsys,
                                                                             monkeypatch):
    _fake_slurm(str(tmp_path / "bin"), monkeypatch)
    monkeypatch.chdir(tmp_path)
    argv = ["--cfg", toy[0], "--nodes", "3", "--time", "90", "SOLVER.BASE_LR_SCALE_NUM_SHARDS", "True",
            "OUTPUT_DIR", "relative/run"]
    assert submit_net.main(argv) == 0
    out = tmp_path / "relative" / "run"
    assert capsys.readouterr().out.strip() == (
        f"submit_net.py: submitted job 4242 (3 node(s) x 1 task(s)); its output: {out}/submitit; training logs: "
        f"{out}/stdout.log.")
    script = (tmp_path / "bin" / "submitted.sh").read_text()
    assert _sbatch_lines(script)["nodes"] == "3" and _sbatch_lines(script)["time"] == "90"
    pickles = [p for p in os.listdir(out / "submitit") if p.endswith("_submitted.pkl")]
    assert pickles == ["4242_submitted.pkl"]
    with open(out / "submitit" / pickles[0], "rb") as f:
        job = cloudpickle.load(f).function
    assert isinstance(job, SlurmRun)
    # The config as loaded at submission: three machines (LR scaled by them), an absolute OUTPUT_DIR.
    assert job.cfg.NUM_SHARDS == 3 and job.cfg.OUTPUT_DIR == str(out)
    assert job.cfg.SOLVER.BASE_LR == pytest.approx(3 * 0.05)


def test_each_task_takes_its_place_from_the_slurm_environment(toy, tmp_path, monkeypatch):
    class Task:  # what submitit's JobEnvironment says in task 5 of 2 nodes x 4 GPUs
        job_id, num_tasks, num_nodes, global_rank, local_rank, node = "991_3", 8, 2, 5, 1, 1
        hostnames, hostname = ["gpu-a17", "gpu-a18"], "gpu-a18"

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "set before")  # restored (removed) after the test, whatever the job sets
    monkeypatch.delenv("MASTER_PORT")
    cfg = load_config(parse_args(["--cfg", toy[0], "OUTPUT_DIR", str(tmp_path)], distributed=False))
    task = SlurmRun(cfg).task_config(Task())
    assert (task.NUM_SHARDS, task.SHARD_ID) == (2, 1) and cfg.SHARD_ID == 0
    assert {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")} == {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "gpu-a17"}
    assert os.environ["MASTER_PORT"] == str(rendezvous_port("991_3")) and 20000 <= rendezvous_port("991_3") < 40000
    assert rendezvous_port("991_3") != rendezvous_port("991_4")


# ------------------------------------------------------------------------------------
# submitit's local executor: a job preempted mid-epoch requeues itself and finishes exactly
# ------------------------------------------------------------------------------------
class SlowToyRun(SlurmRun):
    """The submitted job with the toy model registered in the task, each training iteration
    taking 0.3 s more, so that the test's signal lands in the middle of an epoch."""

    def __call__(self):
        forward = ResumeDropoutNet.forward

        def slow(model, x):
            if model.training and torch.is_grad_enabled():
                time.sleep(0.3)
            return forward(model, x)

        ResumeDropoutNet.forward = slow
        with toy_model_registered():
            super().__call__()


def _wait_for_iteration(out, epoch, job, timeout=120):
    """Until rank 0 has recorded an iteration of `epoch` (e.g. "2/3")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not job.done():
        if (out / "metrics.jsonl").exists() and any(r["epoch"] == epoch for r in metrics_records(out, "train_iter")):
            return
        time.sleep(0.05)
    pytest.fail(f"the job never reached epoch {epoch}: {job.stderr()}")


@pytest.mark.slow
def test_a_preempted_job_requeues_itself_and_ends_with_the_uninterrupted_weights(toy, tmp_path, monkeypatch):
    import submitit

    cfg_file, data = toy
    overrides = ["DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data, "TEST.ENABLE", "False"]
    whole, job_out = tmp_path / "whole", tmp_path / "job"
    run_net = import_tool("run_net")
    assert run_net.main(["--cfg", cfg_file, *overrides, "OUTPUT_DIR", str(whole)]) == 0

    cfg = load_config(parse_args(["--cfg", cfg_file, *overrides, "OUTPUT_DIR", str(job_out)], distributed=False))
    monkeypatch.setenv("PYTHONPATH", REPO_ROOT)  # the tasks import this module to unpickle the job
    executor = submitit.LocalExecutor(folder=str(job_out / "submitit"))
    executor.update_parameters(timeout_min=30, tasks_per_node=1)
    job = executor.submit(SlowToyRun(cfg))
    _wait_for_iteration(job_out, "2/3", job)
    task = psutil.Process(job._process.pid).children()[0]
    os.kill(task.pid, signal.SIGUSR2)  # what SLURM sends every task before the time limit
    job.wait()
    assert job.state == "FINISHED", job.stderr()

    log = (job_out / "stdout.log").read_text()
    assert "Training stopped by SIGUSR2 in epoch 2/3 after iteration " in log
    stopped_at = int(log.split("in epoch 2/3 after iteration ")[1].split("/")[0])
    assert "Requeued job" in job.stderr() or "Requeued job" in log
    assert f"Continuing epoch 2 of a run stopped after iteration {stopped_at}/4." in log
    assert sorted(os.listdir(cu.checkpoint_dir(str(job_out)))) == [f"checkpoint_epoch_0000{e}.pyth" for e in (1, 2, 3)]
    a = torch.load(cu.checkpoint_path(str(whole), 2), weights_only=True)["model_state"]
    b = torch.load(cu.checkpoint_path(str(job_out), 2), weights_only=True)["model_state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [(r["epoch"], r["iter"], r["loss"]) for r in metrics_records(whole, "train_iter")]
    assert [(r["epoch"], r["iter"], r["loss"]) for r in metrics_records(job_out, "train_iter")] == losses
