"""Where this process stands in the job: world size, rank, local rank and size.

Readable from every part of the package (the loaders shard and seed by rank, the engine
decides who writes files); creating the process group and the collectives are the engine's
(vov3d/engine/distributed.py). Each answer is the single-process one until a process group
exists. The layout follows PySlowFast: `rank = shard_id * processes_per_machine + local_rank`.
"""
import torch.distributed as dist

# Set by the engine when it joins a process group; one process otherwise.
_LOCAL_RANK = 0
_LOCAL_SIZE = 1


def set_local_layout(local_rank: int, local_size: int) -> None:
    """Record this process's place on its machine (the engine calls it when joining a job)."""
    global _LOCAL_RANK, _LOCAL_SIZE
    if not 0 <= local_rank < local_size:
        raise ValueError(f"local rank {local_rank} is outside [0, {local_size - 1}].")
    _LOCAL_RANK, _LOCAL_SIZE = local_rank, local_size


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


def is_distributed() -> bool:
    """More than one process takes part in the job."""
    return get_world_size() > 1


def is_root_proc() -> bool:
    """Global rank 0: the only writer of checkpoints, stdout.log, TensorBoard and results."""
    return get_rank() == 0


def is_master_proc() -> bool:
    """Local rank 0 of each machine: the process that logs to the console."""
    return _LOCAL_RANK == 0
