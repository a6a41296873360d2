"""The tcp:// rendezvous (ranks simulated by threads of this process)."""
import datetime
import logging
import socket
import threading

import pytest
import torch.distributed as dist

from vov3d.engine import rendezvous as du


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_thread(fn, *args):
    result = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as e:  # handed to the test
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _join(init, world, generation=1, timeout=20.0, local_size=1):
    threads = [_in_thread(du.tcp_rendezvous, init, rank, world, local_size, timeout, generation)
               for rank in range(world)]
    for thread, _ in threads:
        thread.join()
    for _, result in threads:
        assert "error" not in result, result.get("error")
    return [result["value"] for _, result in threads]


def test_every_rank_returns_once_all_joined_and_a_later_phase_meets_again():
    init = f"tcp://127.0.0.1:{_free_port()}"
    stores = _join(init, 3)
    stores[2].set("seen-by-all", "yes")
    assert stores[0].get("seen-by-all") == b"yes" and stores[0].add("vov3d/rendezvous/1/joined", 0) == 3
    del stores  # the first phase ends: rank 0's store closes
    again = _join(init, 3, generation=2)
    assert again[1].add("vov3d/rendezvous/2/joined", 0) == 3


def test_missing_ranks_are_named_every_period_until_the_timeout(caplog):
    init = f"tcp://127.0.0.1:{_free_port()}"
    with caplog.at_level(logging.WARNING), pytest.raises(du.RendezvousError) as err:
        du.tcp_rendezvous(init, 0, 4, 2, 1.5, 1, log_period_s=0.4)
    waits = [r.getMessage() for r in caplog.records if "waiting at 127.0.0.1" in r.getMessage()]
    assert len(waits) >= 2  # said more than once while waiting
    assert "rank 0 of 4: waiting at 127.0.0.1" in waits[0]
    assert "for rank(s) 1, 2, 3 (--shard_id 0, 1)" in waits[0] and "DIST_INIT_TIMEOUT 2 s" in waits[0]
    message = str(err.value)
    assert "rank 0 of 4" in message and "could not join the process group" in message
    assert "still waiting at 127.0.0.1" in message and "The wait is DIST_INIT_TIMEOUT seconds" in message


def test_a_rank_started_before_rank_0_says_so_and_joins_when_it_comes(caplog):
    init = f"tcp://127.0.0.1:{_free_port()}"
    with caplog.at_level(logging.WARNING):
        with pytest.raises(du.RendezvousError, match="for rank 0 to open it \\(nothing listens there yet\\)"):
            du.tcp_rendezvous(init, 1, 2, 1, 0.6, 1, log_period_s=0.2)
    assert any("rank 1 of 2: waiting at 127.0.0.1" in r.getMessage() for r in caplog.records)
    late, result = _in_thread(du.tcp_rendezvous, init, 1, 2, 1, 20.0, 1)
    first = du.tcp_rendezvous(init, 0, 2, 1, 20.0, 1)
    late.join()
    assert "error" not in result and first.add("vov3d/rendezvous/1/joined", 0) == 2


def test_the_store_of_an_earlier_phase_is_not_taken_for_this_one():
    port = _free_port()
    old = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                        timeout=datetime.timedelta(seconds=5))
    old.set("vov3d/rendezvous/1/open", "1")
    waiting, result = _in_thread(du.tcp_rendezvous, f"tcp://127.0.0.1:{port}", 1, 2, 1, 20.0, 2)
    waiting.join(1.0)
    assert waiting.is_alive()  # registered nowhere yet: the open store is phase 1's
    assert old.add("vov3d/rendezvous/2/joined", 0) == 0
    del old
    new = du.tcp_rendezvous(f"tcp://127.0.0.1:{port}", 0, 2, 1, 20.0, 2)
    waiting.join()
    assert "error" not in result and new.add("vov3d/rendezvous/2/joined", 0) == 2


@pytest.mark.parametrize("init", ["tcp://:9999", "tcp://host", "tcp://host:port"])
def test_malformed_tcp_addresses_are_refused(init):
    with pytest.raises(du.RendezvousError, match="is not tcp://<host>:<port>"):
        du.tcp_rendezvous(init, 0, 2, 1, 1.0, 1)
