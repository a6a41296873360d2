"""read_yaml: one config file to a mapping; what PyYAML would silently accept is refused,
naming the file (and the key and lines of a repeat)."""
import pytest

from tests.config.config_helpers import write
from vov3d.config import ConfigError
from vov3d.config.yaml_file import read_yaml


def test_repeated_top_level_block_names_file_key_and_both_lines(tmp_path):
    path = write(tmp_path / "twice.yaml", """
        SOLVER:
          BASE_LR: 0.3
        NUM_GPUS: 0
        SOLVER:
          MAX_EPOCH: 5
    """)
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    msg = str(err.value)
    assert path in msg and "'SOLVER'" in msg and "lines 1 and 4" in msg


def test_repeated_key_inside_a_block_is_named_with_its_group(tmp_path):
    path = write(tmp_path / "inner.yaml", """
        NUM_GPUS: 0
        SOLVER:
          BASE_LR: 0.3
          MAX_EPOCH: 5
          BASE_LR: 0.1
    """)
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert "'SOLVER.BASE_LR'" in str(err.value) and "lines 3 and 5" in str(err.value)


def test_a_directory_as_config_file_is_named_as_such(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; expected a YAML file"):
        read_yaml(str(tmp_path))


@pytest.mark.parametrize("text, needle", [
    ("- NUM_GPUS\n- 0\n", "expected a mapping of config keys at the top level"),
    ("SOLVER: [1,\n", "not valid YAML"),
])
def test_a_file_that_is_no_mapping_of_keys_is_named(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=needle) as err:
        read_yaml(str(path))
    assert str(path) in str(err.value)


def test_an_empty_file_and_aliases_read_as_mappings(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set here\n", encoding="utf-8")
    assert read_yaml(str(empty)) == {}
    aliased = tmp_path / "aliased.yaml"
    aliased.write_text("TRAIN: &t\n  BATCH_SIZE: 8\nTEST: *t\n", encoding="utf-8")
    assert read_yaml(str(aliased)) == {"TRAIN": {"BATCH_SIZE": 8}, "TEST": {"BATCH_SIZE": 8}}
