"""Networks. Importing the package registers every model family."""
from vov3d.models.registry import MODEL_REGISTRY, build_model

__all__ = ["MODEL_REGISTRY", "build_model"]
