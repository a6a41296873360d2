"""Two CPU processes (gloo) train exactly like one process with the same global batch."""
import os
import socket
import subprocess

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


def test_rendezvous_timeout_gives_an_actionable_error(tmp_path):
    # Shard 1 of 2 never starts: shard 0 must fail after DIST_TIMEOUT, saying what to check.
    proc = subprocess.run([PYTHON, DRIVER, str(tmp_path), f"tcp://127.0.0.1:{_free_port()}", "NUM_SHARDS", "2",
                           "SHARD_ID", "0", "DIST_TIMEOUT", "3"], env=run_tool_env(), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "rank 0 of 2" in proc.stderr and "could not join the process group" in proc.stderr
    assert "--init_method" in proc.stderr and "--shard_id" in proc.stderr
