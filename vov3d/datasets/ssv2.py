"""Something-Something V2: JSON labels and splits, clips from extracted
frame folders (frame lists train.csv / val.csv) or, with DATA.SSV2_VIDEO_EXT (e.g. ".webm"),
straight from the video files `PATH_PREFIX/<id><ext>` with no extraction step."""
import os
from typing import List, Tuple

from vov3d.datasets import lists
from vov3d.datasets.frame_dataset import SegmentDataset
from vov3d.datasets.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class Ssv2(SegmentDataset):
    @classmethod
    def _video_ext(cls, cfg) -> str:
        return cfg.DATA.SSV2_VIDEO_EXT

    @classmethod
    def _read_split(cls, cfg, split: str) -> Tuple[List[Tuple[str, int]], List[str], str]:
        root = cfg.DATA.PATH_TO_DATA_DIR
        official, _ = cls._SPLIT_FILES[split]
        labels = lists.read_template_labels(lists.require_file(
            os.path.join(root, "something-something-v2-labels.json"), split,
            "the template labels"), cfg.MODEL.NUM_CLASSES)
        split_path = lists.require_file(os.path.join(root, f"something-something-v2-{official}.json"),
                                        split, "the list of videos and templates")
        return lists.read_template_split(split_path, labels), sorted(labels, key=labels.get), split_path
