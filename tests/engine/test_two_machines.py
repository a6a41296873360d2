"""Two machines emulated by two network namespaces (tests/engine/two_machines.py), one run_net
"node" in each, talking gloo over the private link between them:

(a) 2 machines x 1 process reach the weights of 1 machine x 2 processes with frozen BN, and
    the same losses otherwise, although each machine's hostname resolves to 127.0.1.1 (a
    plain gloo job fails there: the interface that routes to shard 0 is chosen instead);
(b) one machine preempted (SIGTERM) stops both at the same iteration with a mid-epoch
    checkpoint; one machine lost (SIGKILL) makes the other exit within seconds naming it;
(c) re-running both resumes exactly: the final weights are those of the uninterrupted run.
"""
import json
import os
import subprocess
import time

import pytest
import torch

from tests.conftest import PYTHON, REPO_ROOT, run_tool_env
from tests.engine import two_machines
from tests.tools.toy_model import TOY_CFG
from vov3d.utils import checkpoint_io as cu

pytestmark = pytest.mark.slow

RUN_NET_TOY = os.path.join(REPO_ROOT, "tests", "tools", "run_net_toy.py")
# A plain gloo job: what fails when the hostname resolves to loopback and nobody chose the interface.
PLAIN_GLOO = """
import datetime, sys, torch.distributed as dist
rank = int(sys.argv[1])
store = dist.TCPStore("10.77.0.1", 29400, 2, rank == 0, timeout=datetime.timedelta(seconds=20))
try:
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=4))
    print("connected")
except RuntimeError as e:
    print("FAILED:", e)
"""


@pytest.fixture(scope="module")
def machines():
    reason = two_machines.unavailable()
    if reason:
        pytest.skip(f"two emulated machines: {reason}")
    with two_machines.TwoMachines() as pair:
        yield pair


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(str(tmp_path_factory.mktemp("two_machines")))


def make_toy(root):
    """16 training videos (4 iterations per epoch over 2 ranks of 2 clips), and the toy config."""
    data = os.path.join(root, "data")
    subprocess.run([PYTHON, os.path.join(REPO_ROOT, "tools", "make_toy_dataset.py"), "--out", data, "--classes", "2",
                    "--videos-per-class", "8", "--eval-per-class", "2", "--frames", "16", "--size", "48x32"],
                   check=True, env=run_tool_env(), capture_output=True)
    cfg = os.path.join(root, "toy.yaml")
    with open(cfg, "w") as f:
        f.write(TOY_CFG)
    return cfg, data


def _env():
    env = run_tool_env()
    for variable in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        env.pop(variable, None)
    return env


def _args(toy, out, *overrides):
    """Training only, validated in the last epoch, no precise BN: what is compared is the training."""
    cfg, data = toy
    return ["--cfg", cfg, "DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data, "OUTPUT_DIR", str(out),
            "TEST.ENABLE", "False", "BN.USE_PRECISE_STATS", "False", "TRAIN.EVAL_PERIOD", "10", *overrides]


def start_nodes(machines, toy, out, port, *overrides, sleep=None):
    """One run_net node per machine, shard 0 on machine 0."""
    slow = ["--iteration-sleep", str(sleep)] if sleep else []
    return [machines.popen(node, [PYTHON, RUN_NET_TOY, *slow, "--init_method", f"tcp://{machines.address(0)}:{port}",
                                  "--num_shards", "2", "--shard_id", str(node), *_args(toy, out, *overrides)],
                           env=_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for node in range(2)]


def finish(processes, timeout=300):
    """(return codes, console outputs) once all ended."""
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    return [p.returncode for p in processes], outputs


def one_machine_two_processes(toy, out, *overrides):
    """torchrun with 2 processes on this machine, the same global batch (2 clips per process)."""
    return subprocess.Popen([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             RUN_NET_TOY, "--init_method", "env://", *_args(toy, out, "TRAIN.BATCH_SIZE", "4", *overrides)],
                            env=_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(out, epoch):
    return torch.load(cu.checkpoint_path(str(out), epoch - 1), weights_only=True)["model_state"]


def records(out, kind):
    with open(os.path.join(str(out), "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("_type") == kind]


def wait_for_iteration(out, epoch, processes, timeout=240):
    """Until rank 0 recorded an iteration of `epoch` (e.g. "2/3")."""
    deadline = time.monotonic() + timeout
    path = os.path.join(str(out), "metrics.jsonl")
    while time.monotonic() < deadline:
        if os.path.exists(path) and any(r["epoch"] == epoch for r in records(out, "train_iter")):
            return
        if any(p.poll() is not None for p in processes):
            raise AssertionError(f"a node ended before epoch {epoch}: {finish(processes)}")
        time.sleep(0.05)
    raise AssertionError(f"no iteration of epoch {epoch} within {timeout} s")


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


# ------------------------------------------------------------------------------------
# The checks, shared by the tests and by `python tests/engine/two_machines.py`
# ------------------------------------------------------------------------------------
def check_plain_gloo_fails_on_a_loopback_hostname(machines):
    plain = [machines.popen(node, [PYTHON, "-c", PLAIN_GLOO, str(node)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for node in range(2)]
    # The machine that connects tries the address the other offered, its own loopback, and gives
    # up at once; the other would wait until its timeout.
    deadline = time.monotonic() + 120
    while all(p.poll() is None for p in plain) and time.monotonic() < deadline:
        time.sleep(0.1)
    first = next(p for p in plain if p.poll() is not None)
    for process in plain:
        if process is not first:
            process.kill()
    output = [p.communicate()[0] for p in plain][plain.index(first)]
    assert "FAILED: Gloo connectFullMesh failed" in output and "remote=[127.0.1.1]" in output, output
    return {"plain gloo on these machines": "fails: machine 0 offered [127.0.1.1]"}


def run_reference(machines, toy, out):
    """The uninterrupted run on two machines, frozen BN."""
    codes, outputs = finish(start_nodes(machines, toy, out, 29501, "MODEL.FROZEN_BN", "True"))
    assert codes == [0, 0], outputs
    return outputs


def check_two_machines_train_like_one_machine(machines, toy, root, reference, reference_outputs):
    one = os.path.join(root, "one_machine")
    started = time.monotonic()
    local = one_machine_two_processes(toy, one, "MODEL.FROZEN_BN", "True")
    assert local.wait(timeout=300) == 0, local.communicate()[1][-3000:]
    assert ("The hostname node-b resolves to the loopback address 127.0.1.1 (see /etc/hosts): gloo would offer it "
            "to the other machines, which cannot reach it. Using interface vov3d-b (10.77.0.2) instead."
            ) in reference_outputs[1]
    assert "gloo talks over interface vov3d-a (10.77.0.1), the route to 10.77.0.1" in reference_outputs[0]
    difference = max_difference(weights(reference, 3), weights(one, 3))
    assert difference == 0.0
    # BN statistics per process: the same losses within float tolerance (one epoch is enough).
    two = os.path.join(root, "two_machines_bn")
    nodes = start_nodes(machines, toy, two, 29502, "SOLVER.MAX_EPOCH", "1")
    local = one_machine_two_processes(toy, one + "_bn", "SOLVER.MAX_EPOCH", "1")
    assert finish(nodes)[0] == [0, 0] and local.wait(timeout=300) == 0
    losses = [[r["loss"] for r in records(out, "train_iter")] for out in (two, one + "_bn")]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)
    return {"weights 2 machines x 1 vs 1 machine x 2 (frozen BN, 12 iterations)": f"max |difference| {difference}",
            "losses, BN per process": f"{losses[0]} vs {losses[1]}",
            "comparison runs (s)": round(time.monotonic() - started, 1)}


def check_preemption_loss_and_exact_resume(machines, toy, root, reference):
    out = os.path.join(root, "interrupted")
    figures = {}
    # (b1) one machine preempted: both stop at the same iteration, rank 0 saves it.
    nodes = start_nodes(machines, toy, out, 29511, "MODEL.FROZEN_BN", "True", sleep=0.25)
    wait_for_iteration(out, "2/3", nodes)
    machines.kill(1, 15)
    codes, errs = finish(nodes, timeout=120)
    assert codes == [143, 143], errs
    saved = [p for p in cu.list_checkpoints(out) if cu.is_mid_epoch(p)]
    assert len(saved) == 1, cu.list_checkpoints(out)
    done = max(int(r["iter"].split("/")[0]) for r in records(out, "train_iter") if r["epoch"] == "2/3")
    assert cu.progress(saved[0]) == (1, done)  # the newest iteration any rank trained is in the checkpoint
    assert "Training stopped by SIGTERM in epoch 2/3" in errs[1] and "a signal to another rank" in errs[0]
    figures["iterations lost on preemption"] = 0
    # (b2) the other machine lost: the survivor says which rank, within seconds.
    nodes = start_nodes(machines, toy, out, 29512, "MODEL.FROZEN_BN", "True", sleep=0.25)
    wait_for_iteration(out, "3/3", nodes)
    lost_pid = nodes[1].pid
    machines.kill(1)
    killed = time.monotonic()
    codes, errs = finish(nodes[:1], timeout=120)
    detected = time.monotonic() - killed
    assert codes == [1] and detected < 20, (detected, errs)
    assert f"RankLostError: rank 1 (host node-b, pid {lost_pid}) stopped in the middle of the run" in errs[0], errs
    figures["seconds to detect a lost machine"] = round(detected, 2)
    # (c) both again: the run finishes with the uninterrupted run's weights.
    nodes = start_nodes(machines, toy, out, 29513, "MODEL.FROZEN_BN", "True")
    codes, errs = finish(nodes)
    assert codes == [0, 0], errs
    difference = max_difference(weights(out, 3), reference)
    assert difference == 0.0
    figures["weights after preemption + lost machine vs uninterrupted"] = f"max |difference| {difference}"
    assert [r["iter"] for r in records(out, "train_iter") if r["epoch"] == "2/3"] == ["1/4", "2/4", "3/4", "4/4"]
    return figures


# ------------------------------------------------------------------------------------
# The tests
# ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(machines, toy, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("reference"))
    return out, run_reference(machines, toy, out)


def test_a_plain_gloo_job_fails_where_hostnames_resolve_to_loopback(machines):
    check_plain_gloo_fails_on_a_loopback_hostname(machines)


def test_two_machines_reach_the_weights_of_one_machine_with_two_processes(machines, toy, reference, tmp_path_factory):
    print(check_two_machines_train_like_one_machine(machines, toy, str(tmp_path_factory.mktemp("equal")), *reference))


def test_preemption_and_a_lost_machine_then_both_resume_exactly(machines, toy, reference, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("resume"))
    print(check_preemption_loss_and_exact_resume(machines, toy, root, weights(reference[0], 3)))


def run_by_hand(out: str) -> int:
    os.makedirs(out, exist_ok=True)
    toy = make_toy(out)
    with two_machines.TwoMachines() as pair:
        figures = check_plain_gloo_fails_on_a_loopback_hostname(pair)
        reference = os.path.join(out, "reference")
        outputs = run_reference(pair, toy, reference)
        figures.update(check_two_machines_train_like_one_machine(pair, toy, out, reference, outputs))
        figures.update(check_preemption_loss_and_exact_resume(pair, toy, out, weights(reference, 3)))
    for name, value in figures.items():
        print(f"{name}: {value}")
    return 0
