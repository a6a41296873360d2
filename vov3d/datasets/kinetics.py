"""Kinetics (and any video-file dataset): `PATH_TO_DATA_DIR/{train,val,test}.csv` with lines
`<path> <label>`, decoded with PyAV in PySlowFast's windows. With DATA.CLASS_NAMES_PATH
the labels may be class names, and the names travel with the checkpoints."""
import os
import random
from typing import Sequence, Tuple

from vov3d.datasets import decoder, lists
from vov3d.datasets.clip_dataset import (CENTRE_CLIP, TRAIN_CLIP, ClipDataset, VideoIndex,
                                         require_sample_file)
from vov3d.datasets.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class Kinetics(ClipDataset):
    channel_order = "rgb"

    def __init__(self, cfg, split: str):
        super().__init__(cfg, split)
        data = cfg.DATA
        self._backend = decoder.usable_backend(data.DECODING_BACKEND)
        self._spec = decoder.TemporalSpec(data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS,
                                          data.USE_OFFSET_SAMPLING)

    @classmethod
    def _read_index(cls, cfg, split: str) -> VideoIndex:
        data = cfg.DATA
        path = lists.require_file(os.path.join(data.PATH_TO_DATA_DIR, f"{split}.csv"), split,
                                  "the video list")
        class_names = class_index = None
        if data.CLASS_NAMES_PATH:
            # Relative to the data directory, like the lists it describes.
            names_path = os.path.join(data.PATH_TO_DATA_DIR, data.CLASS_NAMES_PATH)
            class_names = lists.read_class_name_file(
                lists.require_file(names_path, split, "the class names of DATA.CLASS_NAMES_PATH"),
                cfg.MODEL.NUM_CLASSES)
            class_index = {name: i for i, name in enumerate(class_names)}
        paths, labels = lists.read_video_csv(path, data.PATH_LABEL_SEPARATOR, data.PATH_PREFIX,
                                             cfg.MODEL.NUM_CLASSES, class_index)
        return VideoIndex(paths, labels, class_names)

    def _read_clips(self, index: int, clips: Sequence[Tuple[int, int]]) -> decoder.FrameBank:
        path = self._paths[index]
        require_sample_file(path)
        requests = []
        for clip_idx, num_clips in clips:
            if clip_idx == TRAIN_CLIP:
                requests.append((-1, 1))
            elif clip_idx == CENTRE_CLIP:
                # Deterministic validation: the centre window (newest PySlowFast's 1-view rule).
                requests.append((0, 1))
            else:
                requests.append((clip_idx, num_clips))
        spec = self._spec
        longest = self.cfg.MULTIGRID.LONG_CYCLE_SAMPLING_RATE
        if self.split == "train" and longest > 0:
            # A multigrid long-cycle shape with fewer frames: a random rate up to the one
            # covering the default clip's span, as PySlowFast draws it.
            spec = decoder.TemporalSpec(spec.num_frames, random.randint(spec.sampling_rate, longest),
                                        spec.target_fps, spec.use_offset)
        if any(c == CENTRE_CLIP for c, _ in clips):
            spec = decoder.TemporalSpec(spec.num_frames, spec.sampling_rate, spec.target_fps, True)
        return decoder.decode_clips(path, requests, spec, "rgb24", self.decode_threads,
                                    backend=self._backend)
