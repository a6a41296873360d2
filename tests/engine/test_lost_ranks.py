"""How a rank lost mid-run is named: by the address of a broken connection, or by a roll call
at the job's store after a collective timed out."""
import socket
import subprocess
import sys

import pytest

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
