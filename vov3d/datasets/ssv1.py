"""Something-Something V1 (VoV3D fork): JPEG folders, class-name label files.

PATH_TO_DATA_DIR holds something-something-v1-labels.csv (one class per line),
something-something-v1-{train,validation}.csv (`<id>;<class name>`) and the frame lists
train.csv / val.csv (val.csv serves val and test)."""
import os
from typing import List, Tuple

from vov3d.datasets import lists
from vov3d.datasets.frame_dataset import SegmentDataset
from vov3d.datasets.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class Ssv1(SegmentDataset):
    @classmethod
    def _read_split(cls, cfg, split: str) -> Tuple[List[Tuple[str, int]], List[str], str]:
        root = cfg.DATA.PATH_TO_DATA_DIR
        official, _ = cls._SPLIT_FILES[split]
        classes = lists.read_class_names(lists.require_file(
            os.path.join(root, "something-something-v1-labels.csv"), split, "the class names"),
            cfg.MODEL.NUM_CLASSES)
        split_path = lists.require_file(os.path.join(root, f"something-something-v1-{official}.csv"),
                                        split, "the list of videos and class names")
        return lists.read_named_split(split_path, classes, cfg.MODEL.NUM_CLASSES), list(classes), split_path
