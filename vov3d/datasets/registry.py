"""The dataset registry and `build_dataset(name, cfg, split)`."""
from yacs.config import CfgNode

from vov3d.utils.registry import Registry

DATASET_REGISTRY = Registry("dataset")

SPLITS = ("train", "val", "test")


def build_dataset(name: str, cfg: CfgNode, split: str):
    """Construct dataset `name` (case-insensitive: kinetics, ssv1, ssv2) for a split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}.")
    return DATASET_REGISTRY.get(name)(cfg, split)
