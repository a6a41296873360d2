"""Two CPU processes (gloo) train exactly like one process with the same global batch."""
import os
import socket
import subprocess
import time

import psutil
import torch

from tests.conftest import PYTHON, REPO_ROOT, run_tool_env
from tests.engine.tiny_parts import TinyTestNet, tiny_cfg

DRIVER = os.path.join(REPO_ROOT, "tests", "engine", "dist_driver.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmds, timeout=120):
    procs = [subprocess.Popen(c, env=run_tool_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in cmds]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


def _weights(out, rank):
    return torch.load(os.path.join(out, f"rank{rank}.pt"), weights_only=True)


def test_two_gloo_processes_match_one_process(tmp_path):
    single, multi, shards = (str(tmp_path / n) for n in ("single", "torchrun", "shards"))
    port = _free_port()
    init = f"tcp://127.0.0.1:{port}"
    outs = _run([
        [PYTHON, DRIVER, single, "env-unused"],
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", DRIVER, multi, "env://"],
    ] + [
        # NUM_GPUS 0 x NUM_SHARDS 2: one process per "machine", still one process group.
        [PYTHON, DRIVER, shards, init, "NUM_SHARDS", "2", "SHARD_ID", str(i), "TRAIN.BATCH_SIZE", "8"]
        for i in range(2)
    ])

    ref = _weights(single, 0)
    assert ref["world"] == 1 and not ref["ddp"]
    for out in (multi, shards):
        r0, r1 = _weights(out, 0), _weights(out, 1)
        assert (r0["rank"], r1["rank"], r0["world"], r1["world"]) == (0, 1, 2, 2)
        assert r0["ddp"] and r0["gathered"] == [0, 10] and r0["mean_rank"] == 0.5
        for key, value in ref["state"].items():
            assert torch.equal(r0["state"][key], r1["state"][key]), key  # ranks identical
            assert torch.allclose(r0["state"][key], value, rtol=1e-5, atol=1e-6), key  # == one process
    # The weights moved, so the comparison is not between two untouched initialisations.
    torch.manual_seed(0)
    initial = TinyTestNet(tiny_cfg(tmp_path / "init")).state_dict()
    assert not torch.allclose(initial["head.projection.weight"], ref["state"]["head.projection.weight"], atol=1e-3)
    assert _weights(multi, 1)["local_rank"] == 1 and _weights(shards, 1)["local_rank"] == 0
    assert "rank 1/2 local_rank 1/2" in outs[1]
    # Only global rank 0 writes checkpoints.
    assert os.listdir(os.path.join(multi, "checkpoints")) == ["checkpoint_epoch_00003.pyth"]


def test_accumulating_ranks_all_reduce_once_per_step_and_match_one_process(tmp_path):
    # Two ranks of 4 clips x 2 micro-batches: the effective batch of the single process's 16.
    single, accumulated = str(tmp_path / "single"), str(tmp_path / "accumulated")
    port = _free_port()
    _run([[PYTHON, DRIVER, single, "env-unused"]] + [
        [PYTHON, DRIVER, accumulated, f"tcp://127.0.0.1:{port}", "NUM_SHARDS", "2", "SHARD_ID", str(i),
         "TRAIN.BATCH_SIZE", "4", "TRAIN.GRAD_ACCUMULATION_STEPS", "2"] for i in range(2)])
    ref = _weights(single, 0)
    for rank in (0, 1):
        r = _weights(accumulated, rank)
        assert r["ddp"] and r["world"] == 2
        assert r["syncs"] == 3  # 3 epochs x 1 optimiser step: the first micro-batch of each ran in no_sync
        for key, value in ref["state"].items():
            assert torch.allclose(r["state"][key], value, rtol=1e-5, atol=1e-6), key


def test_rendezvous_names_the_missing_shard_every_period_and_gives_up_after_dist_init_timeout(tmp_path):
    # Shard 1 of 2 never starts: shard 0 says so while waiting, then fails after
    # DIST_INIT_TIMEOUT (not DIST_TIMEOUT, the collectives' 60 s here), saying what to check.
    port = _free_port()
    start = time.monotonic()
    proc = subprocess.run([PYTHON, DRIVER, str(tmp_path), f"tcp://127.0.0.1:{port}", "--wait-log-period", "1",
                           "NUM_SHARDS", "2", "SHARD_ID", "0", "DIST_INIT_TIMEOUT", "4"], env=run_tool_env(),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and time.monotonic() - start < 40
    waits = [line for line in proc.stderr.splitlines() if "rank 0 of 2: waiting at" in line]
    assert len(waits) >= 2, proc.stderr[-3000:]
    assert f"waiting at 127.0.0.1:{port} for rank(s) 1 (--shard_id 1)" in waits[0]
    assert "RendezvousError: rank 0 of 2" in proc.stderr and "could not join the process group" in proc.stderr
    assert "--init_method" in proc.stderr and "--shard_id" in proc.stderr and "DIST_INIT_TIMEOUT" in proc.stderr


def test_a_rank_lost_mid_run_is_named_by_the_survivor(tmp_path):
    port = _free_port()
    procs = [subprocess.Popen([PYTHON, DRIVER, str(tmp_path), f"tcp://127.0.0.1:{port}", "--die", "1",
                               "NUM_SHARDS", "2", "SHARD_ID", str(i), "TRAIN.BATCH_SIZE", "8"],
                              env=run_tool_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    dead_out = procs[1].communicate(timeout=120)
    died = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    assert procs[1].returncode == 9, dead_out[1][-3000:]
    assert procs[0].returncode != 0 and time.monotonic() - died < 15
    pid = procs[1].pid
    line = (f"RankLostError: rank 1 (host {socket.gethostname()}, pid {pid}) stopped in the middle of the run; "
            "rank 0 lost its connection to it")
    assert line in err, err[-3000:]
    log = open(os.path.join(tmp_path, "stdout.log")).read()
    assert log.count(line) == 1 and "Traceback" not in log
    assert "run the same command again: auto-resume continues from the last checkpoint" in log


def test_a_rank_that_stops_answering_is_named_within_dist_timeout_and_the_roll_call(tmp_path):
    # SIGSTOP, not death: no connection breaks, gloo only times out, naming nobody.
    port = _free_port()
    procs = [subprocess.Popen([PYTHON, DRIVER, str(tmp_path), f"tcp://127.0.0.1:{port}", "--freeze", "1",
                               "--roll-call", "2", "NUM_SHARDS", "2", "SHARD_ID", str(i), "TRAIN.BATCH_SIZE", "8",
                               "DIST_TIMEOUT", "5"],
                              env=run_tool_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    frozen = psutil.Process(procs[1].pid)
    try:
        deadline = time.monotonic() + 120
        while frozen.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped = time.monotonic()
        _, err = procs[0].communicate(timeout=120)
        waited = time.monotonic() - stopped
    finally:
        procs[1].kill()
        procs[1].communicate()
    assert procs[0].returncode != 0 and 4 < waited < 25, (waited, err[-3000:])  # DIST_TIMEOUT 5 s + roll call 2 s
    line = (f"RankLostError: rank 1 (host {socket.gethostname()}, pid {procs[1].pid}) does not answer: rank 0 waited "
            f"DIST_TIMEOUT 5 s for it in a collective, and it missed the roll call at 127.0.0.1:{port}")
    assert line in err, err[-3000:]
    assert open(os.path.join(tmp_path, "stdout.log")).read().count(line) == 1


def test_elastic_torchrun_restarts_a_group_that_lost_a_worker_from_the_newest_checkpoint(tmp_path):
    single, elastic = str(tmp_path / "single"), str(tmp_path / "elastic")
    more = ["TRAIN.CHECKPOINT_PERIOD", "1"]
    port = _free_port()
    outs = _run([
        [PYTHON, DRIVER, single, "env-unused", *more],
        # Rank 1 dies in epoch 3 of the first attempt; the agent restarts both workers.
        [PYTHON, "-m", "torch.distributed.run", "--nnodes", "1:2", "--nproc-per-node", "2", "--max-restarts", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "vov3d-elastic",
         DRIVER, elastic, "env://", "--die", "1", *more],
    ], timeout=240)
    log = open(os.path.join(elastic, "stdout.log")).read()
    assert log.count("Weights source: random initialisation") == 1
    assert f"Weights source: auto-resume from {elastic}/checkpoints/checkpoint_epoch_00002.pyth" in log
    assert "RankLostError: rank 1" in outs[1]  # what the surviving worker said before the restart
    ref, r0, r1 = _weights(single, 0), _weights(elastic, 0), _weights(elastic, 1)
    for key, value in ref["state"].items():
        assert torch.equal(r0["state"][key], r1["state"][key]), key
        assert torch.allclose(r0["state"][key], value, rtol=1e-5, atol=1e-6), key
