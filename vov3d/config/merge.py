"""Merging yaml files and command-line overrides into the config tree.

yacs' own merge reports "Non-existent config key" or "Type mismatch" without saying
where or what was expected. Everything here is checked against the defaults before
any value changes, and each error names the source, the key, what was given and
what was expected, with the closest valid keys for a typo. Keys of the reference
configs that vov3d does not keep are handed to the legacy table (legacy.py).
"""
import ast
import difflib
import os
from typing import Any, List, Optional, Sequence

from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.config.legacy import LegacyValues, is_legacy_group, legacy_entry
from vov3d.config.yaml_file import read_yaml

BASE_KEY = "_BASE_"


def all_keys(cfg: CfgNode, prefix: str = "") -> List[str]:
    keys = []
    for name, value in cfg.items():
        full = prefix + name
        if isinstance(value, CfgNode):
            keys.extend(all_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


def suggest_keys(cfg: CfgNode, key: str, limit: int = 3) -> List[str]:
    """Valid keys closest to a misspelt one, compared whole and by their last part.

    Comparison ignores case (keys are upper case, `solver.base_lr` is a common slip); a key
    or group that differs only in case is the one answer.
    """
    keys = all_keys(cfg)
    by_lower = {k.lower(): k for k in keys}
    groups = {}
    for k in keys:
        parts = k.split(".")
        for i in range(1, len(parts)):
            groups[".".join(parts[:i]).lower()] = ".".join(parts[:i])
    exact = by_lower.get(key.lower()) or groups.get(key.lower())
    if exact is not None:
        return [exact]
    close = [by_lower[k] for k in difflib.get_close_matches(key.lower(), list(by_lower), n=limit,
                                                            cutoff=0.6)]
    leaf = key.rsplit(".", 1)[-1].lower()
    by_leaf = {k.rsplit(".", 1)[-1].lower(): k for k in keys}
    for name in difflib.get_close_matches(leaf, list(by_leaf), n=limit, cutoff=0.75):
        if by_leaf[name] not in close:
            close.append(by_leaf[name])
    return close[:limit]


def _unknown_key(cfg: CfgNode, key: str, source: str) -> ConfigError:
    hint = suggest_keys(cfg, key)
    msg = f"{source}: unknown config key '{key}'."
    if hint:
        msg += " Did you mean: " + ", ".join(hint) + "?"
    return ConfigError(msg)


def _type_name(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _coerce(default: Any, value: Any, key: str, source: str) -> Any:
    """Return `value` converted to the type of `default`, or raise ConfigError."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return _coerce_list(default, value, key, source)
    else:
        if isinstance(value, type(default)):
            return value
    example = repr(list(default)) if isinstance(default, tuple) else repr(default)
    raise ConfigError(
        f"{source}: wrong type for '{key}': got {value!r} ({_type_name(value)}), "
        f"expected {_type_name(default)} (default {example})."
    )


def _coerce_list(default: Sequence, value: Sequence, key: str, source: str) -> Any:
    # Only flat lists of numbers are checked element-wise; nested layouts (e.g.
    # NUM_BLOCK_TEMP_KERNEL) vary in shape between architectures.
    numbers = [x for x in default if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if default and len(numbers) == len(default):
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise ConfigError(
                    f"{source}: wrong type for '{key}[{i}]': got {item!r} ({_type_name(item)}), "
                    f"expected a number (default {list(default)!r})."
                )
            out.append(float(item) if any(isinstance(x, float) for x in default) else item)
        value = out
    return type(default)(value) if isinstance(default, tuple) else list(value)


def _merge_mapping(node: CfgNode, data: dict, source: str, prefix: str, root: CfgNode,
                   legacy: LegacyValues) -> None:
    """Merge a nested dict into `node`; every key must exist in the tree or the legacy table."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {_type_name(data)}.")
    for name, value in data.items():
        key = prefix + str(name)
        if name == BASE_KEY:
            raise ConfigError(f"{source}: '{BASE_KEY}' is only allowed at the top of a yaml file.")
        if name not in node:
            _merge_dropped(root, key, value, source, legacy)
            continue
        current = node[name]
        if isinstance(current, CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{source}: '{key}' is a group of keys ({', '.join(list(current)[:4])}, ...); "
                    f"got {value!r}."
                )
            _merge_mapping(current, value, source, key + ".", root, legacy)
        else:
            node[name] = _coerce(current, _decode(current, value), key, source)


def _decode(default: Any, value: Any) -> Any:
    if isinstance(value, str) and default is not None and not isinstance(default, str):
        # YAML 1.1 reads "5e-5" as a string; yacs decodes such strings as Python
        # literals, and reference configs rely on it.
        return parse_override_value(value)
    return value


def _merge_dropped(root: CfgNode, key: str, value: Any, source: str, legacy: LegacyValues) -> None:
    """A key (or group) the tree does not have: a legacy key, or a mistake."""
    entry = legacy_entry(key)
    if entry is None:
        if not is_legacy_group(key):
            raise _unknown_key(root, key, source)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' is a group of keys; got {value!r}.")
        for name, item in value.items():
            _merge_dropped(root, f"{key}.{name}", item, source, legacy)
        return
    value = _decode(entry.default, value)
    legacy.record(key, value, source)
    if entry.action == "move" and value != entry.default:
        _set(root, entry.detail, value, source)


def _set(root: CfgNode, key: str, value: Any, source: str) -> None:
    node = root
    *groups, leaf = key.split(".")
    for group in groups:
        node = node[group]
    # A command-line value arrives as text; it is decoded by the type of the key it moves to.
    node[leaf] = _coerce(node[leaf], _decode(node[leaf], value), key, source)


def merge_file(cfg: CfgNode, path: str, legacy: Optional[LegacyValues] = None) -> None:
    """Merge a yaml file, after the files its `_BASE_` names (relative to it).

    Legacy keys are settled at the end, unless the caller passes `legacy` to settle them
    after more sources (load_config does, for the command-line overrides).
    """
    found = LegacyValues() if legacy is None else legacy
    _merge_file(cfg, os.path.abspath(path), (), found)
    if legacy is None:
        found.settle()


def _merge_file(cfg: CfgNode, path: str, chain: tuple, legacy: LegacyValues) -> None:
    if path in chain:
        cycle = " -> ".join(list(chain) + [path])
        raise ConfigError(f"{path}: '{BASE_KEY}' inheritance loops: {cycle}.")
    data = read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: '{BASE_KEY}' must be a path or a list of paths.")
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: '{BASE_KEY}' file not found: '{base}' (looked at {base_path}).")
        _merge_file(cfg, os.path.abspath(base_path), chain + (path,), legacy)
    _merge_mapping(cfg, data, path, "", cfg, legacy)


def parse_override_value(text: str) -> Any:
    """Command-line values are Python literals when they parse as one, else strings."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def merge_overrides(cfg: CfgNode, opts: Sequence[str], source: str = "command line",
                    legacy: Optional[LegacyValues] = None) -> None:
    """Merge `KEY VALUE KEY VALUE ...` pairs (legacy keys settled as in merge_file)."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(
            f"{source}: overrides must come in KEY VALUE pairs; got {len(opts)} tokens, "
            f"the last one ('{opts[-1]}') has no value."
        )
    found = LegacyValues() if legacy is None else legacy
    for key, raw in zip(opts[0::2], opts[1::2]):
        if legacy_entry(key) is not None:
            _merge_dropped(cfg, key, raw, source, found)
            continue
        node = cfg
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, CfgNode) or part not in node:
                raise _unknown_key(cfg, key, source)
            if i < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        if isinstance(current, CfgNode):
            raise ConfigError(f"{source}: '{key}' is a group of keys; set one of its keys, e.g. "
                              f"{key}.{next(iter(current))}.")
        value = parse_override_value(raw)
        if isinstance(current, str) and not isinstance(value, str):
            # A path or name that happens to parse as a number stays a string.
            value = raw
        node[parts[-1]] = _coerce(current, value, key, source)
    if legacy is None:
        found.settle()
