"""How a machine's batch is split over its processes."""
import pytest

from vov3d.config import get_cfg
from vov3d.utils.processes import per_process_batch, processes_per_machine


def _cfg(num_gpus, train_batch=12):
    cfg = get_cfg()
    cfg.NUM_GPUS = num_gpus
    cfg.TRAIN.BATCH_SIZE = train_batch
    return cfg


@pytest.mark.parametrize("env, num_gpus, expected", [
    ({}, 0, 1),                                          # one CPU process
    ({"WORLD_SIZE": "3"}, 0, 3),                         # env:// without a local size: one machine
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}, 0, 2),  # torchrun on two machines
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}, 4, 4),  # GPUs: NUM_GPUS decides
])
def test_processes_per_machine(monkeypatch, env, num_gpus, expected):
    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert processes_per_machine(_cfg(num_gpus)) == expected


def test_batch_is_split_evenly_or_refused(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert per_process_batch(_cfg(0, 12), "train") == 4
    with pytest.raises(ValueError, match=r"TRAIN.BATCH_SIZE 10 .* divisible by its 3 processes"):
        per_process_batch(_cfg(0, 10), "train")
