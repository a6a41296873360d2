"""Joining and leaving the job's process group, and the few collectives the engine uses.

Every collective degrades to a no-op in a single process, so the train and test loops are
written once for CPU, one GPU and many GPUs. Where this process stands (rank, world size,
local rank) is vov3d/utils/comm.py's.

Joining a tcp:// --init_method goes through `tcp_rendezvous`: rank 0 opens a TCPStore at the
address, every rank registers there, and while some are missing the waiting ones say every
minute which (with their --shard_id) until DIST_INIT_TIMEOUT; the backend's connections
between the ranks are bounded by it too. env:// (torchrun) keeps torchrun's own rendezvous,
file:// PyTorch's. Before joining, the backend is pointed at the network interface that
routes to the rendezvous host (engine/network.py). Once joined, every rank knows every
other rank's host and pid, so a rank that dies or stops answering mid-run can be named by
the survivors (engine/lost_ranks.py).
"""
import datetime
import logging
import os
import re
import socket
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from vov3d.engine import lost_ranks, network
from vov3d.engine.lost_ranks import short_list
from vov3d.utils import comm
from vov3d.utils.errors import UserError

logger = logging.getLogger(__name__)

_SYNC_BN_GROUPS = {}
# How often a rank waiting at the rendezvous says for whom (seconds).
WAIT_LOG_PERIOD_S = 60.0
# Rendezvous joined by this process so far: run_net joins once per phase, and the keys of one
# phase must never be mistaken for another's on a store that is still closing.
_GENERATION = 0


class RendezvousError(UserError, RuntimeError):
    """The processes of the job did not all join it in time."""


def _join_advice(rank: int, world_size: int, init_method: str, waited_s: float, setting: str,
                 cause: str) -> str:
    return (f"rank {rank} of {world_size} on {socket.gethostname()} could not join the process group at "
            f"'{init_method}' within {waited_s:.0f} s ({cause}). Check that every machine runs the same "
            "command with the same --init_method (an address of shard 0 that all machines can reach, not "
            "localhost/127.0.0.1 on multi-node jobs, or a file:// path on a shared filesystem), the same "
            "--num_shards and NUM_GPUS, and distinct --shard_id; that the port is free and not firewalled; "
            f"for NCCL set NCCL_SOCKET_IFNAME to the right interface. The wait is {setting} seconds.")


def init_process_group(*, backend: str, init_method: str, world_size: int, rank: int, local_rank: int,
                       local_size: int, timeout_s: float, init_timeout_s: float) -> None:
    """Join the job: collectives then wait up to `timeout_s` (DIST_TIMEOUT), a tcp://
    rendezvous up to `init_timeout_s` (DIST_INIT_TIMEOUT)."""
    comm.set_local_layout(local_rank, local_size)
    print(f"[vov3d] rank {rank}/{world_size} local_rank {local_rank}/{local_size} host {socket.gethostname()} "
          f"pid {os.getpid()} backend {backend} init_method {init_method}", flush=True)
    store_address = _store_address(init_method)
    if store_address is not None:
        network.choose_interface(backend, store_address[0], multi_machine=world_size > local_size)
    timeout = datetime.timedelta(seconds=timeout_s)
    if init_method.startswith("tcp://"):
        global _GENERATION
        _GENERATION += 1
        store = tcp_rendezvous(init_method, rank, world_size, local_size, init_timeout_s, _GENERATION)
        _connect_ranks(backend, store, rank, world_size, init_method, timeout_s, init_timeout_s)
    else:
        try:
            dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size,
                                    rank=rank, timeout=timeout)
        except (RuntimeError, TimeoutError, ValueError) as e:
            raise RendezvousError(_join_advice(rank, world_size, init_method, timeout_s, "DIST_TIMEOUT",
                                               f"{type(e).__name__}: {e}")) from e
    peer = {"host": socket.gethostname(), "addresses": _host_addresses(), "pid": os.getpid()}
    # A tcp:// store lives in rank 0; torchrun's agent serves the env:// one.
    owner = 0 if init_method.startswith("tcp://") else None
    lost_ranks.record_peers(all_gather_object(peer), store_address, owner, timeout_s)


def _store_address(init_method: str) -> Optional[Tuple[str, int]]:
    """Where the job's store listens: the tcp:// address, or MASTER_ADDR:MASTER_PORT for env://."""
    if init_method.startswith("tcp://"):
        return _host_port(init_method)
    if init_method.startswith("env://") and os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    return None


def _connect_ranks(backend: str, store: dist.TCPStore, rank: int, world_size: int, init_method: str,
                   timeout_s: float, init_timeout_s: float) -> None:
    """Create the process group over the rendezvous store. Connecting the ranks to each other
    waits up to DIST_INIT_TIMEOUT, the collectives afterwards up to DIST_TIMEOUT."""
    connect = datetime.timedelta(seconds=min(init_timeout_s, timeout_s))
    store.set_timeout(datetime.timedelta(seconds=timeout_s))
    try:
        dist.init_process_group(backend=backend, store=store, world_size=world_size, rank=rank, timeout=connect)
    except RuntimeError as e:
        offered = _PEER_ADDRESS.search(str(e))
        where = f"the address another rank offered, {offered.group(0)}, " if offered else "another rank "
        raise RendezvousError(
            f"rank {rank} of {world_size} on {socket.gethostname()} met the others at '{init_method}' but could not "
            f"connect to {where}within {connect.total_seconds():.0f} s ({_first_line(e)}). When that address is a "
            "loopback one (127.x), the hostname of that machine resolves to loopback: set GLOO_SOCKET_IFNAME "
            "(NCCL_SOCKET_IFNAME for NCCL) to the interface that reaches the other machines; otherwise check "
            "the firewall between the machines.") from e
    set_timeout = getattr(dist.distributed_c10d, "_set_pg_timeout", None)
    if set_timeout is not None and connect.total_seconds() != timeout_s:
        set_timeout(datetime.timedelta(seconds=timeout_s))


_PEER_ADDRESS = re.compile(r"\[([0-9A-Fa-f.:]+)\]:(\d+)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def destroy_process_group() -> None:
    if comm.is_initialized():
        dist.destroy_process_group()
    comm.set_local_layout(0, 1)
    _SYNC_BN_GROUPS.clear()
    lost_ranks.forget_peers()


# -- the tcp:// rendezvous -------------------------------------------------------------
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
            raise RendezvousError(_join_advice(self.rank, self.world_size, self.init_method, now - self.start,
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
    host, port = _host_port(init_method)
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


def _host_port(init_method: str) -> Tuple[str, int]:
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


def _host_addresses() -> List[str]:
    """What this machine's hostname resolves to, and its addresses on every interface: the
    address a peer's error names is one of them."""
    try:
        named = socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        named = []
    return list(dict.fromkeys(named + network.machine_addresses()))


def sync_bn_group(num_sync_devices: int):
    """The group of `num_sync_devices` consecutive local ranks this process belongs to.

    Created once per size by every rank (group creation is collective).
    """
    if num_sync_devices in _SYNC_BN_GROUPS:
        return _SYNC_BN_GROUPS[num_sync_devices]
    if comm.get_local_size() % num_sync_devices:
        raise ValueError(f"BN.NUM_SYNC_DEVICES {num_sync_devices} must divide the processes per "
                         f"machine ({comm.get_local_size()}).")
    mine = None
    for start in range(0, comm.get_world_size(), num_sync_devices):
        ranks = list(range(start, start + num_sync_devices))
        group = dist.new_group(ranks)
        if comm.get_rank() in ranks:
            mine = group
    _SYNC_BN_GROUPS[num_sync_devices] = mine
    return mine


def barrier() -> None:
    if comm.get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(values: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Average scalar tensors over all ranks in one collective."""
    if comm.get_world_size() == 1:
        return list(values)
    packed = torch.stack([v.detach().reshape(()).float() for v in values])
    dist.all_reduce(packed)
    packed /= comm.get_world_size()
    return list(packed.unbind(0))


def any_rank(flag: bool, device: Optional[torch.device] = None) -> bool:
    """True on every rank when `flag` is True on at least one rank."""
    if comm.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_reduce_sum(values: Sequence[float], device: Optional[torch.device] = None) -> List[float]:
    """Exact sums of numbers over ranks (counts, weighted totals), in float64."""
    if comm.get_world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's `obj`, in rank order (pickled; works for CPU and GPU runs alike)."""
    if comm.get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * comm.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (one process decides, e.g. which checkpoint to resume)."""
    if comm.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]

