"""What every dataset shares: the item layout, retries, failure reporting, spatial sampling
and multi-view testing from one decode.

A dataset subclass reads its list files (`_read_index`, also usable without building the
dataset, through `load_index`) and turns clip requests into a frame bank (`_read_clips`).
Requests are `(clip_idx, num_clips)`: TRAIN_CLIP = the training (val: reference) temporal
sampling, CENTRE_CLIP = deterministic centre (val with DATA.DETERMINISTIC_VAL), `i >= 0` =
temporal test view i of num_clips.

Items (one per video in every split):
  train/val: ([uint8 [3, T, crop, crop]], label, index, {"num_failures"})
  test:      ([uint8 [K, 3, T, crop, crop]], label, video, {"failed", "num_failures",
             "video_frames"}),
             K = NUM_ENSEMBLE_VIEWS * NUM_SPATIAL_CROPS, view v = temporal * crops + spatial.
Clips are uint8 in the loader's channel order (`channel_order`): a quarter of the bytes of
float32 through the workers, shared memory, pinned memory and the host-to-device copy. The
engine's input step converts, normalises and applies DATA.REVERSE_INPUT_CHANNEL on the
model's device.
"""
import logging
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from yacs.config import CfgNode

from vov3d.datasets import sampling, transform
from vov3d.datasets.decoder import FrameBank
from vov3d.datasets.failures import BAD_FILES_NAME, DataLoadError, FailureLog
from vov3d.datasets.rand_augment import RandAugment
from vov3d.utils.augment_policy import RandAugmentPolicy
from vov3d.utils.seeding import sample_seed, seed_python_and_numpy
from vov3d.utils.threads import budget_for

logger = logging.getLogger(__name__)

TRAIN_CLIP = -1
CENTRE_CLIP = -2


def train_augmentation(cfg: CfgNode, channel_order: str) -> Optional[RandAugment]:
    """RandAugment of AUG.AA_TYPE with AUG.INTERPOLATION when AUG.ENABLE, else None."""
    if not cfg.AUG.ENABLE:
        return None
    return RandAugment(RandAugmentPolicy.parse(cfg.AUG.AA_TYPE), cfg.AUG.INTERPOLATION, channel_order)


def short_cycle_crop(cfg: CfgNode, cycle_step: Optional[int]) -> int:
    """The training crop of a multigrid short-cycle step: steps 0 and 1 of each cycle of
    three use SHORT_CYCLE_FACTORS x DEFAULT_S, step 2 (and no cycle) DATA.TRAIN_CROP_SIZE."""
    if cycle_step in (0, 1):
        return int(round(cfg.MULTIGRID.SHORT_CYCLE_FACTORS[cycle_step] * cfg.MULTIGRID.DEFAULT_S))
    return cfg.DATA.TRAIN_CROP_SIZE


def collate_samples(batch):
    """Collate items holding AUG.NUM_SAMPLE copies of a clip into one batch of B x NUM_SAMPLE
    clips, the copies of a video next to each other (labels and indices repeated alike)."""
    inputs, labels, indices, meta = torch.utils.data.default_collate(batch)
    return ([x.flatten(0, 1) for x in inputs], labels.flatten(), indices.flatten(), meta)


class MissingSampleError(RuntimeError):
    """A listed file or folder does not exist or is empty: retrying the same one is useless."""


def require_sample_file(path: str, what: str = "video") -> None:
    """Raise MissingSampleError for a missing or zero-byte file (no decoder is tried)."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise MissingSampleError(f"{what} file missing or empty: {path}")


@dataclass
class VideoIndex:
    """What the list files of a split say: a printable location and a label per video, the
    class names in label order when the lists give them, and the frame files of each video
    for datasets of frame folders."""
    paths: List[str]
    labels: List[int]
    class_names: Optional[List[str]] = None
    frames: Optional[List[List[str]]] = None


class ClipDataset(torch.utils.data.Dataset):
    # Channel order of the decoded frames and of the clips ("rgb" or "bgr"); the input step
    # reverses it when DATA.REVERSE_INPUT_CHANNEL is set.
    channel_order = "rgb"
    # Class names in label order when the list files give them (stored in checkpoints so
    # a model is never tested against a different label order).
    class_names: Optional[List[str]] = None

    def __init__(self, cfg: CfgNode, split: str):
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; expected train, val or test.")
        self.cfg = cfg
        self.split = split
        self.num_retries = cfg.DATA_LOADER.NUM_RETRIES
        self.num_temporal_views = cfg.TEST.NUM_ENSEMBLE_VIEWS if split == "test" else 1
        self.num_spatial_crops = cfg.TEST.NUM_SPATIAL_CROPS if split == "test" else 1
        self.deterministic_val = split == "val" and cfg.DATA.DETERMINISTIC_VAL
        self.failures = FailureLog(cfg.OUTPUT_DIR)
        self.decode_threads = budget_for(cfg).decode_threads  # FFmpeg threads per video
        self._short_warned: Set[str] = set()  # per process: each worker starts with its own copy
        self._sample_seeds: Optional[Tuple[int, int, str]] = None
        # RandAugment of training clips (AUG.ENABLE), AUG.NUM_SAMPLE copies per decode.
        self.augment = train_augmentation(cfg, self.channel_order) if split == "train" else None
        self.samples_per_item = cfg.AUG.NUM_SAMPLE if self.augment is not None else 1
        self.index = self.load_index(cfg, split)
        self._paths, self._labels = self.index.paths, self.index.labels
        self.class_names = self.index.class_names
        logger.info("%s %s: %d videos, %d view(s) per video.", type(self).__name__, split,
                    len(self._paths), self.num_views)

    @classmethod
    def load_index(cls, cfg: CfgNode, split: str) -> VideoIndex:
        """Read and check the list files of a split (nothing is decoded): every error names
        the file, so bad lists can be refused before any work."""
        index = cls._read_index(cfg, split)
        if not index.paths:
            raise ValueError(f"{cls.__name__} {split} split is empty: its list files in "
                             f"DATA.PATH_TO_DATA_DIR {cfg.DATA.PATH_TO_DATA_DIR!r} name no videos.")
        return index

    # ------------------------------------------------------------------ subclass hooks
    @classmethod
    def _read_index(cls, cfg: CfgNode, split: str) -> VideoIndex:
        raise NotImplementedError

    def _read_clips(self, index: int, clips: Sequence[Tuple[int, int]]) -> FrameBank:
        """Decode the requested clips of video `index` in one pass."""
        raise NotImplementedError

    def _views_share_frames(self) -> bool:
        """Whether the spatial crops of one temporal view use the same frames."""
        return True

    # ------------------------------------------------------------------ public
    @property
    def num_videos(self) -> int:
        return len(self._paths)

    @property
    def num_views(self) -> int:
        return self.num_temporal_views * self.num_spatial_crops

    @property
    def labels(self) -> List[int]:
        return list(self._labels)

    def video_path(self, index: int) -> str:
        return self._paths[index]

    def __len__(self) -> int:
        return len(self._paths)

    def seed_samples(self, rng_seed: int, epoch: int, stream: str) -> None:
        """From now on (and in the workers of the next pass), make each train/val item with
        Python's and numpy's generators seeded by (RNG_SEED, epoch, stream, index): its clip
        then depends on nothing else, so a pass resumed mid-epoch gives the same batches."""
        self._sample_seeds = (rng_seed, epoch, stream)

    def __getitem__(self, index):
        """`index`: a video; in training also (video, short-cycle step) from the multigrid
        batch sampler, whose step picks the crop size (multigrid.short_cycle_crop)."""
        if self.split == "test":
            return self._test_item(index)
        index, cycle_step = index if isinstance(index, tuple) else (index, None)
        if self._sample_seeds is not None:
            rng_seed, epoch, stream = self._sample_seeds
            seed_python_and_numpy(sample_seed(rng_seed, epoch, stream, index))
        return self._clip_item(index, cycle_step)

    def get_view(self, video: int, view: int) -> torch.Tensor:
        """View `view` of test video `video` (uint8 [3, T, H, W]) decoded on its own, one
        decode per view; equals `self[video][0][0][view]` for deterministic sampling."""
        temporal, spatial = sampling.view_indices(view, self.num_spatial_crops)
        bank = self._read_clips(video, [(temporal, self.num_temporal_views)])
        return self._views(bank, [(0, spatial)])[0]

    def decoded_frames(self, video: int, per_view: bool = False) -> int:
        """Frames the decoder produces for all test views of a video, in one pass or with
        one decode per view (JPEG files read, for frame folders)."""
        clips = [(t, self.num_temporal_views) for t in range(self.num_temporal_views)]
        if not per_view:
            return self._read_clips(video, clips).decoded
        return sum(self._read_clips(video, [clips[v // self.num_spatial_crops]]).decoded
                   for v in range(self.num_views))

    def check(self, video: int) -> Optional[str]:
        """Read one deterministic clip of a video: None if it works, else the error."""
        try:
            bank = self._read_clips(video, [(CENTRE_CLIP, 1)])
            if not bank.frames:
                return "no frames"
            return None
        except Exception as error:
            return f"{type(error).__name__}: {error}"

    # ------------------------------------------------------------------ items
    def _clip_item(self, index: int, cycle_step: Optional[int] = None):
        failures, tried = 0, []
        for attempt in range(self.num_retries):
            try:
                if self.deterministic_val:
                    bank = self._read_clips(index, [(CENTRE_CLIP, 1)])
                    clip = self._views(bank, [(0, 1)], resize=self.cfg.DATA.TRAIN_JITTER_SCALES[0],
                                       crop=self.cfg.DATA.TRAIN_CROP_SIZE)[0]
                else:
                    bank = self._read_clips(index, [(TRAIN_CLIP, 1)])
                    clip = self._train_samples(bank.clip(0), cycle_step)
                self._warn_if_still(index, bank)
                if self.samples_per_item > 1:  # collate_samples flattens the copies into the batch
                    n = self.samples_per_item
                    return ([clip], torch.full((n,), self._labels[index]), torch.full((n,), index),
                            {"num_failures": failures})
                return [clip], self._labels[index], index, {"num_failures": failures}
            except Exception as error:
                failures += 1
                tried.append((self._paths[index], error))
                self.failures.record(self._paths[index], error)
                # As the reference: the same video first, a random other one once more than
                # half the attempts failed; a missing file is replaced at once.
                if attempt > self.num_retries // 2 or isinstance(error, MissingSampleError):
                    index = random.randint(0, len(self._paths) - 1)
        first = dict(reversed(tried))  # one (earliest) error per distinct file
        names = "; ".join(f"{path} ({type(e).__name__}: {e})"
                          for path, e in list(reversed(first.items()))[:5])
        # DataLoadError takes one message argument: PyTorch re-raises a worker's exception
        # in the main process as type(error)(message).
        raise DataLoadError(f"Failed to load a {self.split} clip after {self.num_retries} "
                            f"attempts (DATA_LOADER.NUM_RETRIES); first files: {names}. "
                            f"{self._path_hint()}")

    def _path_hint(self) -> str:
        data = self.cfg.DATA
        bad = (os.path.join(self.cfg.OUTPUT_DIR, BAD_FILES_NAME) if self.cfg.OUTPUT_DIR
               else f"OUTPUT_DIR/{BAD_FILES_NAME}")
        return (f"Check DATA.PATH_TO_DATA_DIR ({data.PATH_TO_DATA_DIR!r}) and DATA.PATH_PREFIX "
                f"({data.PATH_PREFIX!r}), and the unreadable files listed in {bad}.")

    def _test_item(self, video: int):
        crops = self.num_spatial_crops
        if self._views_share_frames():
            clips = [(t, self.num_temporal_views) for t in range(self.num_temporal_views)]
            views = [sampling.view_indices(v, crops) for v in range(self.num_views)]
        else:
            clips = [(v // crops, self.num_temporal_views) for v in range(self.num_views)]
            views = [(v, v % crops) for v in range(self.num_views)]
        failures = 0
        attempts = self.num_retries
        while attempts > 0:
            attempts -= 1
            try:
                bank = self._read_clips(video, clips)
                inputs = self._views(bank, views)
                self._warn_if_still(video, bank)
                return [inputs], self._labels[video], video, {"failed": 0, "num_failures": failures,
                                                               "video_frames": bank.video_frames}
            except Exception as error:
                failures += 1
                self.failures.record(self._paths[video], error)
                if isinstance(error, MissingSampleError):
                    break
        # Never another video's data: the engine counts this video as failed.
        crop = self.cfg.DATA.TEST_CROP_SIZE
        empty = torch.zeros(self.num_views, 3, self.cfg.DATA.NUM_FRAMES, crop, crop, dtype=torch.uint8)
        return [empty], self._labels[video], video, {"failed": 1, "num_failures": failures, "video_frames": 0}

    def _warn_if_still(self, index: int, bank: FrameBank) -> None:
        """A "video" of one frame decodes without error (an image renamed .mp4 does), and its
        every clip is that frame repeated: say so once per file and process."""
        path = self._paths[index]
        if bank.video_frames < 2 and path not in self._short_warned:
            self._short_warned.add(path)
            logger.warning("%s holds %d frame(s): every clip of it is one still image. Is it really a video "
                           "(not an image renamed, or a truncated download)?", path, bank.video_frames)

    # ------------------------------------------------------------------ spatial
    def _train_clip(self, frames: Sequence[np.ndarray], cycle_step: Optional[int] = None,
                    crops=transform.train_crops) -> np.ndarray:
        data = self.cfg.DATA
        crop = short_cycle_crop(self.cfg, cycle_step)
        low, high = data.TRAIN_JITTER_SCALES
        if self.cfg.MULTIGRID.DEFAULT_S > 0:
            # As PySlowFast: a smaller crop samples from a proportionally smaller short side,
            # so it covers the same share of the frame (a coarser sampling grid).
            low = int(round(low * crop / self.cfg.MULTIGRID.DEFAULT_S))
        return crops(frames, (low, high), crop, data.INV_UNIFORM_SAMPLE, data.RANDOM_FLIP)

    def _train_samples(self, frames: Sequence[np.ndarray], cycle_step: Optional[int]) -> torch.Tensor:
        """The training clip of decoded frames: uint8 [3, T, crop, crop]; with AUG.ENABLE,
        RandAugment on it, AUG.NUM_SAMPLE times from the one decode ([NUM_SAMPLE, 3, T, crop, crop]
        when more than one)."""
        if self.augment is None:
            return torch.from_numpy(self._train_clip(frames, cycle_step))
        clips = []
        for _ in range(self.samples_per_item):
            crops = self._train_clip(frames, cycle_step, transform.train_crop_frames)
            clips.append(transform.frames_to_clip(self.augment.apply_frames(crops, self.augment.draw())))
        return torch.from_numpy(clips[0] if len(clips) == 1 else np.stack(clips))

    def _views(self, bank: FrameBank, views: Sequence[Tuple[int, int]], resize: int = None,
               crop: int = None) -> torch.Tensor:
        """Deterministic views (clip number, spatial index) of a frame bank, uint8
        [len(views), 3, T, crop, crop], written frame by frame into one output: every
        distinct frame is resized and split into channel planes once, and its crops are
        copied to every (view, time) slot that shows it while it is in the cache."""
        data = self.cfg.DATA
        if resize is None:
            resize, crop = sampling.test_resize_and_crop(data.TEST_CROP_SIZE,
                                                         data.TRAIN_JITTER_SCALES[0],
                                                         self.num_spatial_crops)
        slots = defaultdict(list)
        for v, (clip_number, _) in enumerate(views):
            for t, key in enumerate(bank.clips[clip_number]):
                slots[key].append((v, t))
        first = next(iter(bank.frames.values()))
        planes = transform.FramePlanes(first.shape[0], first.shape[1], resize)
        corners = [sampling.uniform_crop_offsets(planes.shape[0], planes.shape[1], crop,
                                                 sampling.spatial_index(spatial, self.num_spatial_crops))
                   for _, spatial in views]
        out = np.empty((len(views), 3, len(bank.clips[0]), crop, crop), dtype=np.uint8)
        for key, frame in bank.frames.items():
            frame_planes = planes(frame)
            for v, t in slots[key]:
                y, x = corners[v]
                out[v, :, t] = frame_planes[:, y:y + crop, x:x + crop]
        return torch.from_numpy(out)
