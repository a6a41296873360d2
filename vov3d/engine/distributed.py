"""Process-group state and the few collectives the engine uses.

Every helper degrades to a no-op in a single process, so the train and test loops are
written once for CPU, one GPU and many GPUs. The rank layout follows PySlowFast:
`rank = shard_id * processes_per_machine + local_rank`.
"""
import datetime
import logging
import os
import socket
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# The process layout of this process, set by `init_process_group` (single process otherwise).
_LOCAL_RANK = 0
_LOCAL_SIZE = 1
_LOCAL_GROUP = None
_SYNC_BN_GROUPS = {}


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_local_rank() -> int:
    return _LOCAL_RANK


def get_local_size() -> int:
    """Processes on this machine."""
    return _LOCAL_SIZE


def is_root_proc() -> bool:
    """Global rank 0: the only writer of checkpoints, stdout.log, TensorBoard and results."""
    return get_rank() == 0


def is_master_proc() -> bool:
    """Local rank 0 of each machine: the process that logs to the console."""
    return _LOCAL_RANK == 0


def init_process_group(*, backend: str, init_method: str, world_size: int, rank: int,
                       local_rank: int, local_size: int, timeout_s: float) -> None:
    """Join the job; a rendezvous that does not complete gives an actionable error."""
    global _LOCAL_RANK, _LOCAL_SIZE, _LOCAL_GROUP
    _LOCAL_RANK, _LOCAL_SIZE = local_rank, local_size
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
    # One group per machine, created by every rank in the same order (a collective).
    machines = world_size // local_size
    for machine in range(machines):
        ranks = list(range(machine * local_size, (machine + 1) * local_size))
        group = dist.new_group(ranks)
        if rank in ranks:
            _LOCAL_GROUP = group


def destroy_process_group() -> None:
    global _LOCAL_RANK, _LOCAL_SIZE, _LOCAL_GROUP
    if is_initialized():
        dist.destroy_process_group()
    _LOCAL_RANK, _LOCAL_SIZE, _LOCAL_GROUP = 0, 1, None
    _SYNC_BN_GROUPS.clear()


def sync_bn_group(num_sync_devices: int):
    """The group of `num_sync_devices` consecutive local ranks this process belongs to.

    Created once per size by every rank (group creation is collective).
    """
    if num_sync_devices in _SYNC_BN_GROUPS:
        return _SYNC_BN_GROUPS[num_sync_devices]
    if _LOCAL_SIZE % num_sync_devices:
        raise ValueError(f"BN.NUM_SYNC_DEVICES {num_sync_devices} must divide the processes per "
                         f"machine ({_LOCAL_SIZE}).")
    mine = None
    for start in range(0, get_world_size(), num_sync_devices):
        ranks = list(range(start, start + num_sync_devices))
        group = dist.new_group(ranks)
        if get_rank() in ranks:
            mine = group
    _SYNC_BN_GROUPS[num_sync_devices] = mine
    return mine


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(values: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Average scalar tensors over all ranks in one collective."""
    if get_world_size() == 1:
        return list(values)
    packed = torch.stack([v.detach().reshape(()).float() for v in values])
    dist.all_reduce(packed)
    packed /= get_world_size()
    return list(packed.unbind(0))


def any_rank(flag: bool, device: Optional[torch.device] = None) -> bool:
    """True on every rank when `flag` is True on at least one rank."""
    if get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_reduce_sum(values: Sequence[float], device: Optional[torch.device] = None) -> List[float]:
    """Exact sums of numbers over ranks (counts, weighted totals), in float64."""
    if get_world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's `obj`, in rank order (pickled; works for CPU and GPU runs alike)."""
    if get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (one process decides, e.g. which checkpoint to resume)."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]

