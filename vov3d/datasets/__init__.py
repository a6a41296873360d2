"""Datasets. Importing the package registers every dataset."""
from vov3d.datasets.registry import DATASET_REGISTRY, build_dataset

__all__ = ["DATASET_REGISTRY", "build_dataset"]
