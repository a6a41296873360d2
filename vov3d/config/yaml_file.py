"""Reading one config file: YAML to a dict, refusing what PyYAML would silently accept."""
import os
from typing import Optional, Set

import yaml

from vov3d.config.errors import ConfigError


def _duplicate_keys(node: yaml.Node, prefix: str = "", seen_nodes: Optional[Set[int]] = None):
    """(dotted key, first line, second line) of the first key repeated within one mapping.

    PyYAML keeps the last of two equal keys; a repeated `SOLVER:` block would silently drop
    the first one, so repeats are found on the node tree before it becomes a dict.
    """
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # aliases share nodes
        return None
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                found = _duplicate_keys(value_node, prefix, seen_nodes)
            else:
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in first_line:
                    return prefix + key, first_line[key], line
                first_line[key] = line
                found = _duplicate_keys(value_node, prefix + key + ".", seen_nodes)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_keys(item, prefix, seen_nodes)
            if found:
                return found
    return None


def read_yaml(path: str) -> dict:
    """The top-level mapping of one config file; a missing file, bad YAML, a repeated key or
    a top level that is not a mapping is a ConfigError naming the file."""
    if os.path.isdir(path):
        raise ConfigError(f"config file '{path}' is a directory; expected a YAML file.")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: '{path}'.")
    try:
        with open(path, "r", encoding="utf-8") as f:
            loader = yaml.SafeLoader(f)
            try:
                node = loader.get_single_node()
                duplicate = _duplicate_keys(node) if node is not None else None
                if duplicate:
                    key, first, second = duplicate
                    raise ConfigError(f"{path}: key '{key}' appears twice in the same mapping (lines "
                                      f"{first} and {second}); the second would silently replace the "
                                      "first. Merge them into one.")
                data = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level.")
    return data
