"""Datasets cut by segments from frame folders (SSv1, SSv2) or from whole video files
(SSv2 `.webm`), one frame per segment.

Frames are read with OpenCV (BGR); video files are decoded to BGR too, so a config behaves
the same on either source (the Something-Something configs set REVERSE_INPUT_CHANNEL True,
which makes the network see RGB).
"""
import os
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from yacs.config import CfgNode

from vov3d.datasets import decoder, lists, sampling
from vov3d.datasets.clip_dataset import (CENTRE_CLIP, TRAIN_CLIP, ClipDataset, VideoIndex,
                                         require_sample_file)


def read_image(path: str) -> np.ndarray:
    frame = cv2.imread(path, cv2.IMREAD_COLOR)
    if frame is None:
        require_sample_file(path, "frame")
        raise decoder.DecodeError(f"cannot decode image {path}")
    return frame


class SegmentDataset(ClipDataset):
    channel_order = "bgr"
    # Split files: (official split name, frame-list file) per mode; val and test share "val".
    _SPLIT_FILES = {"train": ("train", "train.csv"), "val": ("validation", "val.csv"),
                    "test": ("validation", "val.csv")}

    @classmethod
    def _read_split(cls, cfg: CfgNode, split: str) -> Tuple[List[Tuple[str, int]], List[str], str]:
        """(video id, label) pairs of this split in the official split order, the class
        names in label order, and the split file's path."""
        raise NotImplementedError

    @classmethod
    def _video_ext(cls, cfg: CfgNode) -> str:
        """Non-empty: read `PATH_PREFIX/<id><ext>` video files instead of frame lists."""
        return ""

    @classmethod
    def _read_index(cls, cfg: CfgNode, split: str) -> VideoIndex:
        data = cfg.DATA
        videos, class_names, split_path = cls._read_split(cfg, split)
        labels = [label for _, label in videos]
        ext = cls._video_ext(cfg)
        if ext:
            return VideoIndex([lists.join_prefix(data.PATH_PREFIX, vid + ext) for vid, _ in videos],
                              labels, class_names)
        _, list_name = cls._SPLIT_FILES[split]
        list_path = lists.require_file(os.path.join(data.PATH_TO_DATA_DIR, list_name), split,
                                       "the frame list")
        frame_lists = lists.read_frame_list(list_path, data.PATH_PREFIX)
        frames = lists.match_frame_lists(split_path, list_path, videos, frame_lists)
        return VideoIndex([os.path.dirname(f[0]) or f[0] for f in frames], labels, class_names, frames)

    def _views_share_frames(self) -> bool:
        return self._test_mode() != "random"

    def _test_mode(self) -> str:
        return sampling.segment_test_mode(self.cfg.DATA.SEGMENT_TEST_SAMPLING, self.num_views)

    def _indices(self, num_video_frames: int, clip_idx: int, num_clips: int) -> np.ndarray:
        num_frames = self.cfg.DATA.NUM_FRAMES
        if clip_idx == TRAIN_CLIP:
            mode = "random" if self.split == "train" else "midpoint"
            return sampling.segment_indices(num_video_frames, num_frames, mode)
        if clip_idx == CENTRE_CLIP:
            return sampling.segment_indices(num_video_frames, num_frames, "midpoint")
        return sampling.segment_indices(num_video_frames, num_frames, self._test_mode(),
                                        clip_idx, num_clips)

    def _read_clips(self, index: int, clips: Sequence[Tuple[int, int]]) -> decoder.FrameBank:
        def choose(available: int) -> List[np.ndarray]:
            return [self._indices(available, c, n) for c, n in clips]

        if self.index.frames is None:
            path = self._paths[index]
            require_sample_file(path)
            return decoder.decode_indexed(path, choose, "bgr24", self.decode_threads)
        bank = decoder.FrameBank({}, [])
        decoder.index_frames(self.index.frames[index], choose, read_image, bank)
        bank.decoded = len(bank.frames)
        return bank
