"""Something-Something V2: JSON labels and splits (framework.md 2.3), clips from extracted
frame folders (frame lists train.csv / val.csv) or, with DATA.SSV2_VIDEO_EXT (e.g. ".webm"),
straight from the video files `PATH_PREFIX/<id><ext>` with no extraction step."""
import os
from typing import List, Tuple

from vov3d.datasets import lists
from vov3d.datasets.frame_dataset import SegmentDataset
from vov3d.datasets.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class Ssv2(SegmentDataset):
    def _video_ext(self) -> str:
        return self.cfg.DATA.SSV2_VIDEO_EXT

    def _read_split(self) -> List[Tuple[str, int]]:
        root = self.cfg.DATA.PATH_TO_DATA_DIR
        official, _ = self._SPLIT_FILES[self.split]
        labels = lists.read_template_labels(lists.require_file(
            os.path.join(root, "something-something-v2-labels.json"), self.split,
            "the template labels"), self.cfg.MODEL.NUM_CLASSES)
        self.class_names = sorted(labels, key=labels.get)
        self._split_path = lists.require_file(
            os.path.join(root, f"something-something-v2-{official}.json"), self.split,
            "the list of videos and templates")
        return lists.read_template_split(self._split_path, labels)
