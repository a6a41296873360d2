"""Loader workers run one thread (torch, OpenCV); each video decoder uses the budget's
FFmpeg threads instead of FFmpeg's one per core."""
import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tests.datasets.conftest import make_cfg
from vov3d.datasets import decoder
from vov3d.datasets.kinetics import Kinetics
from vov3d.datasets.loader import construct_loader
from vov3d.utils import threads


class ThreadProbe(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.tensor([torch.get_num_threads(), cv2.getNumThreads()])


def test_a_loader_worker_runs_one_thread(kinetics_root):
    loader = construct_loader(make_cfg(kinetics_root, "DATA_LOADER.NUM_WORKERS", "1"), "val")
    saved = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(2)
        cv2.setNumThreads(3)  # what a forked worker inherits
        probe = DataLoader(ThreadProbe(), batch_size=2, num_workers=1, worker_init_fn=loader.worker_init_fn)
        (seen,) = list(probe)
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])
    assert seen.tolist() == [[1, 1], [1, 1]]


@pytest.mark.parametrize("threads_, thread_type", [(1, "SLICE"), (3, "AUTO")])
def test_the_decoder_uses_the_given_ffmpeg_threads(kinetics_root, threads_, thread_type):
    container, stream = decoder._open(str(kinetics_root / "long.mp4"), threads_)
    with container:
        assert stream.codec_context.thread_count == threads_
        assert stream.codec_context.thread_type.name == thread_type


def test_threaded_decoding_gives_the_same_frames(kinetics_root):
    spec = decoder.TemporalSpec(8, 4, 30.0)
    path = str(kinetics_root / "long.mp4")
    one = decoder.decode_clips(path, [(0, 2), (1, 2)], spec, threads=1)
    two = decoder.decode_clips(path, [(0, 2), (1, 2)], spec, threads=2)
    assert one.clips == two.clips
    assert all(np.array_equal(one.frames[k], two.frames[k]) for k in one.frames)


def test_datasets_take_decode_threads_from_the_budget(kinetics_root, monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    plain = Kinetics(make_cfg(kinetics_root, "DATA_LOADER.NUM_WORKERS", "2"), "train")
    assert plain.decode_threads == 1
    multi = Kinetics(make_cfg(kinetics_root, "DATA_LOADER.NUM_WORKERS", "2",
                              "DATA_LOADER.ENABLE_MULTI_THREAD_DECODE", "True"), "train")
    assert multi.decode_threads == 4
