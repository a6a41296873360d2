import pytest

from tests.engine.tiny_parts import tiny_model_registered


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    """MODEL.MODEL_NAME TinyTestNet builds while an engine test module runs, and nowhere else."""
    with tiny_model_registered():
        yield
