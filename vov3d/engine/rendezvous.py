"""The tcp:// rendezvous: how the ranks of a job find each other before the process group exists.

Rank 0 opens a TCPStore at the --init_method address and every rank registers there; while
some are missing, the waiting ones say every WAIT_LOG_PERIOD_S which ranks (with their
--shard_id) they wait for, until DIST_INIT_TIMEOUT. The store then serves the process group.
"""
import datetime
import logging
import re
import socket
import time
from typing import Callable, Optional, Tuple

import torch.distributed as dist

from vov3d.engine.lost_ranks import short_list
from vov3d.utils.errors import UserError

logger = logging.getLogger(__name__)

# How often a rank waiting at the rendezvous says for whom (seconds).
WAIT_LOG_PERIOD_S = 60.0


class RendezvousError(UserError, RuntimeError):
    """The processes of the job did not all join it in time."""


def join_advice(rank: int, world_size: int, init_method: str, waited_s: float, setting: str,
                 cause: str) -> str:
    return (f"rank {rank} of {world_size} on {socket.gethostname()} could not join the process group at "
            f"'{init_method}' within {waited_s:.0f} s ({cause}). Check that every machine runs the same "
            "command with the same --init_method (an address of shard 0 that all machines can reach, not "
            "localhost/127.0.0.1 on multi-node jobs, or a file:// path on a shared filesystem), the same "
            "--num_shards and NUM_GPUS, and distinct --shard_id; that the port is free and not firewalled; "
            f"for NCCL set NCCL_SOCKET_IFNAME to the right interface. The wait is {setting} seconds.")


class _Wait:
    """The clock of one rendezvous: says every `period` seconds what this rank waits for,
    and gives up at the deadline."""

    def __init__(self, init_method: str, rank: int, world_size: int, timeout_s: float, period: float):
        self.init_method, self.rank, self.world_size, self.timeout_s = init_method, rank, world_size, timeout_s
        self.start = time.monotonic()
        self.period = period
        self.next_log = self.start + period

    def tick(self, what: Callable[[], str]) -> None:
        now = time.monotonic()
        if now - self.start >= self.timeout_s:
            raise RendezvousError(join_advice(self.rank, self.world_size, self.init_method, now - self.start,
                                               "DIST_INIT_TIMEOUT", f"still waiting {what()}"))
        if now >= self.next_log:
            logger.warning("rank %d of %d: waiting %s (%.0f s so far; giving up after DIST_INIT_TIMEOUT %.0f s).",
                           self.rank, self.world_size, what(), now - self.start, self.timeout_s)
            self.next_log = now + self.period


def tcp_rendezvous(init_method: str, rank: int, world_size: int, local_size: int, timeout_s: float,
                   generation: int, log_period_s: Optional[float] = None) -> dist.TCPStore:
    """Meet every rank at `tcp://host:port`: rank 0 opens a TCPStore there, each rank
    registers, and all return once all `world_size` have; the store then serves the group.
    `generation` counts the rendezvous of the job (the same on every rank)."""
    prefix = f"vov3d/rendezvous/{generation}"
    host, port = host_port(init_method)
    wait = _Wait(init_method, rank, world_size, timeout_s, log_period_s or WAIT_LOG_PERIOD_S)
    while True:
        store = _open_store(host, port, rank, prefix, wait)
        try:
            store.set(f"{prefix}/rank{rank}", "1")
            store.add(f"{prefix}/joined", 1)
            while store.add(f"{prefix}/joined", 0) < world_size:
                wait.tick(lambda: f"at {host}:{port} for {_missing(store, prefix, world_size, local_size)}")
                time.sleep(0.2)
            return store
        except dist.DistNetworkError:
            if rank == 0:
                raise
            # The store of an earlier phase, closing as this rank joined it: find the new one.


def host_port(init_method: str) -> Tuple[str, int]:
    match = re.fullmatch(r"tcp://\[?([^\]]*?)\]?:(\d+)/?", init_method)
    if not match or not match.group(1):
        raise RendezvousError(f"--init_method {init_method!r} is not tcp://<host>:<port>, e.g. "
                              "tcp://10.0.0.1:9999 (an address of shard 0 that every machine can reach).")
    return match.group(1), int(match.group(2))


def _open_store(host: str, port: int, rank: int, prefix: str, wait: _Wait) -> dist.TCPStore:
    """Rank 0: the store, opened at `port`. Others: a client of it once it is there."""
    short = datetime.timedelta(seconds=5)
    while True:
        if rank == 0:
            try:
                store = dist.TCPStore(host, port, is_master=True, wait_for_workers=False, timeout=short)
                store.set(f"{prefix}/open", "1")
                return store
            except dist.DistNetworkError as e:
                reason = f"to open it: port {port} is taken ({e})"
        elif _listening(host, port):
            store = dist.TCPStore(host, port, is_master=False, timeout=short)
            try:
                store.wait([f"{prefix}/open"], datetime.timedelta(seconds=2))
                return store
            except dist.DistError:
                reason = "for it to be re-opened (the one there belongs to an earlier phase)"
        else:  # probed first: a TCPStore client that cannot connect floods stderr with C++ traces
            reason = "for rank 0 to open it (nothing listens there yet)"
        wait.tick(lambda: f"at {host}:{port} {reason}")
        time.sleep(0.5)


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def _missing(store: dist.TCPStore, prefix: str, world_size: int, local_size: int) -> str:
    ranks = [r for r in range(world_size) if not store.check([f"{prefix}/rank{r}"])]
    shards = sorted({r // local_size for r in ranks})
    return (f"rank(s) {short_list(ranks)} (--shard_id {short_list(shards)}); start them with the same "
            "command, or check their --init_method and --num_shards")
