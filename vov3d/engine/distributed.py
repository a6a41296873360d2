"""Joining and leaving the job's process group, and the few collectives the engine uses.

Every collective degrades to a no-op in a single process, so the train and test loops are
written once for CPU, one GPU and many GPUs. Where this process stands (rank, world size,
local rank) is vov3d/utils/comm.py's.
"""
import datetime
import logging
import os
import socket
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist

from vov3d.utils import comm

logger = logging.getLogger(__name__)

_SYNC_BN_GROUPS = {}


def init_process_group(*, backend: str, init_method: str, world_size: int, rank: int,
                       local_rank: int, local_size: int, timeout_s: float) -> None:
    """Join the job; a rendezvous that does not complete gives an actionable error."""
    comm.set_local_layout(local_rank, local_size)
    host = socket.gethostname()
    print(f"[vov3d] rank {rank}/{world_size} local_rank {local_rank}/{local_size} host {host} "
          f"pid {os.getpid()} backend {backend} init_method {init_method}", flush=True)
    try:
        dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size,
                                rank=rank, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, TimeoutError, ValueError) as e:
        raise RuntimeError(
            f"rank {rank} of {world_size} on {host} could not join the process group at "
            f"'{init_method}' within {timeout_s:.0f} s ({type(e).__name__}: {e}). Check that every "
            "machine runs the same command with the same --init_method (an address of shard 0 that "
            "all machines can reach, not localhost/127.0.0.1 on multi-node jobs, or a file:// path on "
            "a shared filesystem), the same --num_shards and NUM_GPUS, and distinct --shard_id; that "
            "the port is free and not firewalled; for NCCL set NCCL_SOCKET_IFNAME to the right "
            "interface. The wait is DIST_TIMEOUT seconds.") from e


def destroy_process_group() -> None:
    if comm.is_initialized():
        dist.destroy_process_group()
    comm.set_local_layout(0, 1)
    _SYNC_BN_GROUPS.clear()


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

