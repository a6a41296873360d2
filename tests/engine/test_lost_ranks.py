"""How a rank lost mid-run is named: by the address of a broken connection, or by a roll call
at the job's store after a collective timed out."""
import socket
import subprocess
import sys
import time

import pytest
import torch.distributed as dist

from vov3d.engine import lost_ranks as lr

_GLOO = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [{ip}]:5518: "
         "Connection reset by peer. This is typically caused by a remote worker hanging.")


@pytest.fixture
def peers(monkeypatch):
    """This process as rank 0, a finished process as rank 1 and a live one as rank 2 (same
    host), and rank 3 on another machine."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    host = socket.gethostname()
    table = [{"host": host, "addresses": ["10.0.0.1"], "pid": 1},
             {"host": host, "addresses": ["10.0.0.1"], "pid": dead.pid},
             {"host": host, "addresses": ["10.0.0.1"], "pid": alive.pid},
             {"host": "node2", "addresses": ["10.0.0.2"], "pid": 7}]
    monkeypatch.setattr(lr, "_PEERS", table)
    yield table
    alive.kill()
    alive.wait()


def test_the_lost_rank_is_named_by_address_and_by_which_local_process_ended(peers):
    error = lr.lost_rank_error(RuntimeError(_GLOO.format(ip="127.0.0.1")), "Run it again.")
    assert isinstance(error, lr.RankLostError)
    assert str(error) == (f"rank 1 (host {peers[1]['host']}, pid {peers[1]['pid']}) stopped in the middle of the "
                          "run; rank 0 lost its connection to it ([127.0.0.1]:5518: Connection reset by peer). "
                          "Run it again.")
    remote = lr.lost_rank_error(RuntimeError(_GLOO.format(ip="10.0.0.2")), "")
    assert str(remote).startswith("rank 3 (host node2, pid 7) stopped in the middle of the run")


def test_only_lost_connections_are_taken_for_a_lost_rank(peers):
    assert lr.lost_rank_error(RuntimeError("CUDA out of memory"), "") is None
    assert lr.lost_rank_error(ValueError(_GLOO.format(ip="127.0.0.1")), "") is None
    peers.clear()  # a single process
    assert lr.lost_rank_error(RuntimeError(_GLOO.format(ip="127.0.0.1")), "") is None


# -- a rank that stops answering: the roll call --------------------------------------------
_TIMEOUT = "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 9000ms for recv operation to complete"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def job_store(monkeypatch):
    """Three ranks on two hosts, this process as rank 0 serving the job's store."""
    port = _free_port()
    store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    peers = [{"host": "node-a", "addresses": ["10.0.0.1"], "pid": 11},
             {"host": "node-a", "addresses": ["10.0.0.1"], "pid": 12},
             {"host": "node-b", "addresses": ["10.0.0.2"], "pid": 21}]
    lr.record_peers(peers, ("127.0.0.1", port), 0, 9.0)
    monkeypatch.setattr(lr, "ROLL_CALL_S", 1.5)
    yield store, f"vov3d/roll_call/{lr._STORE['joins']}"
    lr.forget_peers()


def _answer(store, prefix, rank):
    store.set(f"{prefix}/rank{rank}", "1")
    store.add(f"{prefix}/answered", 1)


def test_a_rank_that_misses_the_roll_call_is_named_with_its_host_and_the_store(job_store):
    store, prefix = job_store
    _answer(store, prefix, 1)  # rank 1 timed out too and answers; rank 2 is stopped
    start = time.monotonic()
    error = lr.lost_rank_error(RuntimeError(_TIMEOUT), "Run it again.")
    assert 1.4 < time.monotonic() - start < 8  # the roll call waited ROLL_CALL_S for rank 2
    assert str(error) == (f"rank 2 (host node-b, pid 21) does not answer: rank 0 waited DIST_TIMEOUT 9 s for it in a "
                          f"collective, and it missed the roll call at 127.0.0.1:{store.port} (stopped, hung, or cut "
                          "off from the network). Run it again.")


def test_when_everyone_answers_a_timeout_is_not_blamed_on_a_rank(job_store):
    store, prefix = job_store
    for rank in (1, 2):
        _answer(store, prefix, rank)
    start = time.monotonic()
    assert lr.lost_rank_error(RuntimeError(_TIMEOUT), "") is None
    assert time.monotonic() - start < 1.4  # no waiting once all have answered


def test_a_store_that_does_not_answer_names_the_rank_serving_it(monkeypatch):
    # A listening socket nobody serves: what the store of a SIGSTOPped rank 0 looks like.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        lr.record_peers([{"host": "node-a", "addresses": [], "pid": 11}, {"host": "node-b", "addresses": [], "pid": 21}],
                        ("127.0.0.1", port), 0, 30.0)
        monkeypatch.setattr(lr, "ROLL_CALL_S", 1.0)
        monkeypatch.setattr(lr.comm, "get_rank", lambda: 1)
        try:
            error = lr.lost_rank_error(RuntimeError(_TIMEOUT), "")
        finally:
            lr.forget_peers()
    assert str(error).startswith(f"rank 0 (host node-a, pid 11), which serves the job's store at 127.0.0.1:{port}, "
                                 "stopped answering: rank 1 waited DIST_TIMEOUT 30 s in a collective")
