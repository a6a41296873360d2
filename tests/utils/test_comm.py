"""Where this process stands: single-process answers, the recorded local layout, and the
answers of a real (one-process) group."""
import datetime

import pytest
import torch.distributed as dist

from vov3d.utils import comm


def test_one_process_without_a_group():
    assert not comm.is_initialized()
    assert (comm.get_world_size(), comm.get_rank(), comm.get_local_rank(), comm.get_local_size()) == (1, 0, 0, 1)
    assert comm.is_root_proc() and comm.is_master_proc() and not comm.is_distributed()


def test_local_layout_is_recorded_and_checked():
    try:
        comm.set_local_layout(2, 4)
        assert (comm.get_local_rank(), comm.get_local_size()) == (2, 4)
        assert not comm.is_master_proc() and comm.is_root_proc()  # global rank 0 without a group
        with pytest.raises(ValueError, match=r"local rank 4 is outside \[0, 3\]"):
            comm.set_local_layout(4, 4)
    finally:
        comm.set_local_layout(0, 1)


def test_answers_follow_a_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=10))
    try:
        assert comm.is_initialized() and comm.get_world_size() == 1 and comm.get_rank() == 0
        assert not comm.is_distributed()
    finally:
        dist.destroy_process_group()
    assert not comm.is_initialized()
