"""Networks. Importing the package registers every model family."""
from vov3d.models.registry import MODEL_REGISTRY, build_model
from vov3d.models import x3d  # noqa: F401  (registers X3D)
from vov3d.models import vov3d  # noqa: F401  (registers VoV3D)
from vov3d.models import vov3d_checkpoints  # noqa: F401  (VoV3D's checkpoint filter)
from vov3d.models import cox3d  # noqa: F401
from vov3d.models import csn  # noqa: F401
from vov3d.models import sevnet  # noqa: F401

__all__ = ["MODEL_REGISTRY", "build_model"]
