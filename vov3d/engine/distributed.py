"""Joining and leaving the job's process group, and the few collectives the engine uses.

Every collective degrades to a no-op in a single process, so the train and test loops are
written once for CPU, one GPU and many GPUs. Where this process stands (rank, world size,
local rank) is vov3d/utils/comm.py's.

Joining a tcp:// --init_method goes through `tcp_rendezvous`: rank 0 opens a TCPStore at the
address, every rank registers there, and while some are missing the waiting ones say every
minute which (with their --shard_id) until DIST_INIT_TIMEOUT. env:// (torchrun) keeps
torchrun's own rendezvous, file:// PyTorch's. Once joined, every rank knows every other
rank's host and pid, so a rank that dies mid-run can be named by the survivors.
"""
import datetime
import logging
import os
import re
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from vov3d.utils import comm
from vov3d.utils.errors import UserError

logger = logging.getLogger(__name__)

_SYNC_BN_GROUPS = {}
# How often a rank waiting at the rendezvous says for whom (seconds).
WAIT_LOG_PERIOD_S = 60.0
# Rendezvous joined by this process so far: run_net joins once per phase, and the keys of one
# phase must never be mistaken for another's on a store that is still closing.
_GENERATION = 0
# Host, addresses and pid of every rank, in rank order, learned when joining.
_PEERS: List[Dict[str, Any]] = []


class RendezvousError(UserError, RuntimeError):
    """The processes of the job did not all join it in time."""


class RankLostError(UserError, RuntimeError):
    """Another process of the job stopped mid-run (killed, out of memory, its machine lost).
    Not the user's doing, but reported the same way: one line saying what to do."""


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
    timeout = datetime.timedelta(seconds=timeout_s)
    if init_method.startswith("tcp://"):
        global _GENERATION
        _GENERATION += 1
        store = tcp_rendezvous(init_method, rank, world_size, local_size, init_timeout_s, _GENERATION)
        store.set_timeout(timeout)
        dist.init_process_group(backend=backend, store=store, world_size=world_size, rank=rank, timeout=timeout)
    else:
        try:
            dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size,
                                    rank=rank, timeout=timeout)
        except (RuntimeError, TimeoutError, ValueError) as e:
            raise RendezvousError(_join_advice(rank, world_size, init_method, timeout_s, "DIST_TIMEOUT",
                                               f"{type(e).__name__}: {e}")) from e
    _PEERS[:] = all_gather_object({"host": socket.gethostname(), "addresses": _host_addresses(),
                                   "pid": os.getpid()})


def destroy_process_group() -> None:
    if comm.is_initialized():
        dist.destroy_process_group()
    comm.set_local_layout(0, 1)
    _SYNC_BN_GROUPS.clear()
    _PEERS.clear()


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
    return (f"rank(s) {_short_list(ranks)} (--shard_id {_short_list(shards)}); start them with the same "
            "command, or check their --init_method and --num_shards")


def _short_list(values: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


# -- a rank lost mid-run -------------------------------------------------------------------
# gloo's words when a peer's connection breaks; it names the peer's address as [ip]:port.
_LOST_PEER = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")
_PEER_ADDRESS = re.compile(r"\[([0-9A-Fa-f.:]+)\]:(\d+)")


def lost_rank_error(error: BaseException, advice: str) -> Optional[RankLostError]:
    """A RankLostError naming the rank this one lost, when `error` is a collective that
    failed because a peer went away; None for anything else."""
    if not _PEERS or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    phrase = next((p for p in _LOST_PEER if p in text), None)
    if phrase is None:
        return None
    match = _PEER_ADDRESS.search(text)
    where = f"{match.group(0)}: {phrase}" if match else phrase
    return RankLostError(f"{_who_was_at(match.group(1) if match else None)} stopped in the middle of the run; "
                         f"rank {comm.get_rank()} lost its connection to it ({where}). {advice}")


def _who_was_at(ip: Optional[str]) -> str:
    """The rank (or ranks) that an address of a lost peer can belong to."""
    me = comm.get_rank()
    mine = _PEERS[me]
    others = [(r, p) for r, p in enumerate(_PEERS) if r != me]
    if ip is None:
        candidates = others
    elif ip.startswith("127.") or ip == "::1" or ip in mine["addresses"]:
        candidates = [(r, p) for r, p in others if p["host"] == mine["host"]]
    else:
        candidates = [(r, p) for r, p in others if ip in p["addresses"]]
    if all(p["host"] == mine["host"] for _, p in candidates):
        candidates = [(r, p) for r, p in candidates if _process_gone(p["pid"])] or candidates
    if len(candidates) == 1:
        rank, peer = candidates[0]
        return f"rank {rank} (host {peer['host']}, pid {peer['pid']})"
    if candidates:
        hosts = sorted({p["host"] for _, p in candidates})
        return f"one of ranks {_short_list([r for r, _ in candidates])} (on {', '.join(hosts)})"
    return f"the process at {ip}"


def _process_gone(pid: int) -> bool:
    """Whether process `pid` of this machine has ended (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass
        return False


def _host_addresses() -> List[str]:
    try:
        return socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        return []


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

