"""Datasets. Importing the package registers every dataset."""
from vov3d.datasets.registry import DATASET_REGISTRY, build_dataset, load_index
from vov3d.datasets import kinetics, ssv1, ssv2  # noqa: F401  (register Kinetics, Ssv1, Ssv2)

__all__ = ["DATASET_REGISTRY", "build_dataset", "load_index"]
