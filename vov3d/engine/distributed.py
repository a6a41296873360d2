"""Joining and leaving the job's process group, and the few collectives the engine uses.

Every collective degrades to a no-op in a single process, so the train and test loops are
written once for CPU, one GPU and many GPUs. Where this process stands (rank, world size,
local rank) is vov3d/utils/comm.py's.

Joining a tcp:// --init_method goes through engine/rendezvous.py; the backend's connections
between the ranks are bounded by DIST_INIT_TIMEOUT too. env:// (torchrun) keeps torchrun's own rendezvous,
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
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from vov3d.engine import lost_ranks, network, rendezvous
from vov3d.engine.rendezvous import RendezvousError, join_advice
from vov3d.utils import comm

logger = logging.getLogger(__name__)

_SYNC_BN_GROUPS = {}
# Rendezvous joined by this process so far: run_net joins once per phase, and the keys of one
# phase must never be mistaken for another's on a store that is still closing.
_GENERATION = 0


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
        store = rendezvous.tcp_rendezvous(init_method, rank, world_size, local_size, init_timeout_s, _GENERATION)
        _connect_ranks(backend, store, rank, world_size, init_method, timeout_s, init_timeout_s)
    else:
        try:
            dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size,
                                    rank=rank, timeout=timeout)
        except (RuntimeError, TimeoutError, ValueError) as e:
            raise RendezvousError(join_advice(rank, world_size, init_method, timeout_s, "DIST_TIMEOUT",
                                               f"{type(e).__name__}: {e}")) from e
    peer = {"host": socket.gethostname(), "addresses": _host_addresses(), "pid": os.getpid()}
    # A tcp:// store lives in rank 0; torchrun's agent serves the env:// one.
    owner = 0 if init_method.startswith("tcp://") else None
    lost_ranks.record_peers(all_gather_object(peer), store_address, owner, timeout_s)


def _store_address(init_method: str) -> Optional[Tuple[str, int]]:
    """Where the job's store listens: the tcp:// address, or MASTER_ADDR:MASTER_PORT for env://."""
    if init_method.startswith("tcp://"):
        return rendezvous.host_port(init_method)
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

