"""A tiny model and an in-memory loader that follow the engine's contracts, so the loops
can be tested without the real models and datasets. The model is registered only inside
`tiny_model_registered()` (tests/engine/conftest.py holds it open for every engine test)."""
import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from vov3d.config import assert_and_infer_cfg, get_cfg, merge_overrides
from vov3d.datasets.loader import TrainSampler
from vov3d.models.registry import MODEL_REGISTRY
from vov3d.utils import comm

NUM_CLASSES = 4


def tiny_cfg(output_dir, *overrides):
    cfg = get_cfg()
    merge_overrides(cfg, [
        "NUM_GPUS", "0", "OUTPUT_DIR", str(output_dir), "MODEL.MODEL_NAME", "TinyTestNet",
        "MODEL.NUM_CLASSES", str(NUM_CLASSES), "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4",
        "SOLVER.MAX_EPOCH", "2", "SOLVER.BASE_LR", "0.1", "SOLVER.WARMUP_EPOCHS", "0.0",
        "TRAIN.EVAL_PERIOD", "1", "TRAIN.CHECKPOINT_PERIOD", "1", "LOG_PERIOD", "1",
        "DATA.NUM_FRAMES", "2", "DATA.TRAIN_CROP_SIZE", "8", "DATA.TEST_CROP_SIZE", "8",
        "DATA.TRAIN_JITTER_SCALES", "[8, 8]", "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1",
        "DATA_LOADER.NUM_WORKERS", "0", "LOG_MODEL_INFO", "False", "RNG_SEED", "0",
    ] + [str(o) for o in overrides])
    assert_and_infer_cfg(cfg)
    return cfg


class TinyTestNet(nn.Module):
    """conv -> bn -> pool -> head.projection; eval mode returns softmax like the real heads.

    `nan_at_call` makes the training forward return NaN logits on that (0-based) call.
    """
    nan_at_call = -1

    def __init__(self, cfg):
        super().__init__()
        self.conv = nn.Conv3d(3, 6, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm3d(6)
        self.frozen_bn = cfg.MODEL.FROZEN_BN
        if self.frozen_bn:
            for p in self.bn.parameters():
                p.requires_grad_(False)
        self.head = nn.Module()
        self.head.projection = nn.Linear(6, cfg.MODEL.NUM_CLASSES)
        self.calls = 0

    def train(self, mode=True):
        super().train(mode)
        if self.frozen_bn:
            self.bn.eval()  # running statistics stay fixed while training
        return self

    def forward(self, x):
        x = x[0] if isinstance(x, (list, tuple)) else x
        x = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3, 4))
        logits = self.head.projection(x)
        if self.training:
            if self.calls == type(self).nan_at_call:
                logits = logits * float("nan")
            self.calls += 1
            return logits
        return logits.softmax(dim=1)


class OtherTinyNet(TinyTestNet):
    """Another experiment's model: TinyTestNet's tensors under another name."""


@contextlib.contextmanager
def tiny_model_registered():
    """TinyTestNet (and OtherTinyNet) are in the model registry (for MODEL.MODEL_NAME) while
    the block runs."""
    with MODEL_REGISTRY.scoped():
        MODEL_REGISTRY.register(TinyTestNet)
        MODEL_REGISTRY.register(OtherTinyNet)
        yield


class ClipDataset(Dataset):
    """Deterministic uint8 clips, as the real datasets return them, whose label is readable
    from the mean of one channel."""

    def __init__(self, n, frames=2, size=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % NUM_CLASSES
        clips = 30 * torch.randn(n, 3, frames, size, size, generator=g) + 70
        clips[:, 0] += 50 * self.labels.view(-1, 1, 1, 1).float()
        self.clips = clips.round().clamp(0, 255).to(torch.uint8)
        self.num_videos = n

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return [self.clips[i]], self.labels[i], i, {"num_failures": 0}

    def video_path(self, i):
        return f"video_{i:03d}.mp4"


def fake_loader(n, batch, shuffle, seed=0, drop_last=True):
    """Shuffled: the training sampler of the real loaders (resumable mid-epoch)."""
    ds = ClipDataset(n, seed=seed)
    if shuffle:
        sampler = TrainSampler(n, comm.get_rank(), comm.get_world_size(), order_seed=0)
    else:
        sampler = DistributedSampler(ds, shuffle=False, drop_last=drop_last) if comm.get_world_size() > 1 else None
    return DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=drop_last)


def make_fake_trainer_class():
    """A Trainer whose loaders are the in-memory ones above (imported late: it needs the engine)."""
    from vov3d.utils.processes import per_process_batch
    from vov3d.engine.train import Trainer

    class InMemoryTrainer(Trainer):
        train_videos = 16
        val_videos = 8

        def build_loaders(self):
            batch = per_process_batch(self.cfg, "train")
            self.train_loader = fake_loader(self.train_videos, batch, shuffle=True)
            self.val_loader = fake_loader(self.val_videos, batch, shuffle=False, seed=1, drop_last=False)
            self.precise_loader = fake_loader(self.train_videos, batch, shuffle=True)

    return InMemoryTrainer


def fit_in_memory(cfg):
    """Set up the process and train the in-memory trainer to the end of the config's schedule."""
    from vov3d.engine.runtime import setup_process

    setup_process(cfg)
    trainer = make_fake_trainer_class()(cfg)
    trainer.fit()
    return trainer


def stoppable_training(cfg):
    """A spawned process's share of a training job: the in-memory trainer with slow
    iterations, stopped by the usual signals (tests of stopping a job of several processes)."""
    import time

    from vov3d.engine.preemption import StopSignals
    from vov3d.engine.runtime import setup_process

    setup_process(cfg)
    with tiny_model_registered(), StopSignals() as stop:
        trainer = make_fake_trainer_class()(cfg, stop)
        forward = trainer.model.module.forward if hasattr(trainer.model, "module") else trainer.model.forward

        def slow(x):
            time.sleep(0.2)
            return forward(x)

        (trainer.model.module if hasattr(trainer.model, "module") else trainer.model).forward = slow
        trainer.fit()
