"""The dataset registry, `build_dataset(name, cfg, split)` and `load_index(name, cfg, split)`."""
from yacs.config import CfgNode

from vov3d.utils.registry import Registry

DATASET_REGISTRY = Registry("dataset")

SPLITS = ("train", "val", "test")


def _dataset_class(name: str, split: str):
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}.")
    return DATASET_REGISTRY.get(name)


def build_dataset(name: str, cfg: CfgNode, split: str):
    """Construct dataset `name` (case-insensitive: kinetics, ssv1, ssv2) for a split."""
    return _dataset_class(name, split)(cfg, split)


def load_index(name: str, cfg: CfgNode, split: str):
    """Read and check the list files dataset `name` would use for a split, without building
    it (a `VideoIndex`): how a run refuses bad lists before any work."""
    return _dataset_class(name, split).load_index(cfg, split)
