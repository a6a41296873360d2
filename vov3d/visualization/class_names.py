"""Class names for figures and reports, and the files that pick classes by name:
TENSORBOARD.CLASS_NAMES_PATH (`{"name": index}` or a list), the `SUBSET_PATH` files (one
class name a line) and TENSORBOARD.CATEGORIES_PATH (`{"parent": ["child", ...]}`).

Paths are used as given (relative to the working directory), as PySlowFast does. Every
error names the file, the line and the closest class names.
"""
import difflib
import json
import os
from typing import Dict, List, Optional, Sequence

from vov3d.config.errors import ConfigError
from vov3d.datasets.lists import ListFormatError, read_class_name_file


def default_names(num_classes: int) -> List[str]:
    return [f"class {i}" for i in range(num_classes)]


def closest_names(name: str, names: Sequence[str], limit: int = 3) -> str:
    """'a', 'b' or 'c' - the class names most like `name` (case ignored), for error messages."""
    by_lower = {n.lower(): n for n in names}
    close = [by_lower[n] for n in difflib.get_close_matches(name.lower(), list(by_lower), n=limit, cutoff=0.6)]
    if not close:
        return f"no class name is close (the {len(names)} classes start with {', '.join(map(repr, names[:3]))})"
    return "closest: " + ", ".join(map(repr, close))


def read_tensorboard_class_names(cfg) -> Optional[List[str]]:
    """TENSORBOARD.CLASS_NAMES_PATH in label order, None when unset."""
    path = cfg.TENSORBOARD.CLASS_NAMES_PATH
    if not path:
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"TENSORBOARD.CLASS_NAMES_PATH '{path}' does not exist; expected a JSON file "
                          '{"class name": index, ...} or a JSON list of names in label order.')
    try:
        return read_class_name_file(path, cfg.MODEL.NUM_CLASSES)
    except ListFormatError as e:
        raise ConfigError(f"TENSORBOARD.CLASS_NAMES_PATH: {e}") from None


def choose_class_names(cfg, dataset_names: Optional[Sequence[str]] = None,
                       stored_names: Optional[Sequence[str]] = None) -> Optional[List[str]]:
    """The names of the labels: the dataset's (DATA.CLASS_NAMES_PATH), else the ones the
    checkpoint stores, else TENSORBOARD.CLASS_NAMES_PATH. A TENSORBOARD file that numbers
    the classes differently from the other two is refused: every figure would be mislabelled."""
    from_file = read_tensorboard_class_names(cfg)
    for names, source in ((dataset_names, "DATA.CLASS_NAMES_PATH"), (stored_names, "the checkpoint")):
        if names is None:
            continue
        names = [str(n) for n in names]
        if from_file is not None and from_file != names:
            label = next(i for i, (a, b) in enumerate(zip(from_file, names)) if a != b)
            raise ConfigError(f"TENSORBOARD.CLASS_NAMES_PATH '{cfg.TENSORBOARD.CLASS_NAMES_PATH}' names label "
                              f"{label} {from_file[label]!r} but {source} names it {names[label]!r}; use one "
                              "numbering of the classes (or leave TENSORBOARD.CLASS_NAMES_PATH empty).")
        return names
    return from_file


def _need_names(key: str, names: Optional[Sequence[str]]) -> Sequence[str]:
    if names is None:
        raise ConfigError(f"{key} picks classes by name, but no class names are known: set "
                          "TENSORBOARD.CLASS_NAMES_PATH (PySlowFast's {\"name\": index} JSON) or "
                          "DATA.CLASS_NAMES_PATH.")
    return names


def read_class_subset(path: str, names: Optional[Sequence[str]], key: str) -> List[int]:
    """The class indices a `SUBSET_PATH` file lists, one class name a line, in file order."""
    names = _need_names(key, names)
    if not os.path.isfile(path):
        raise ConfigError(f"{key} '{path}' does not exist; expected a text file with one class name a line.")
    index = {name: i for i, name in enumerate(names)}
    chosen: List[int] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            name = line.strip()
            if not name:
                continue
            if name not in index:
                raise ConfigError(f"{key} '{path}', line {number}: {name!r} is not a class name; "
                                  f"{closest_names(name, names)}.")
            if index[name] not in chosen:
                chosen.append(index[name])
    if not chosen:
        raise ConfigError(f"{key} '{path}' lists no class; expected one class name a line.")
    return chosen


def _line_of(text: str, needle: str, start: int = 0) -> int:
    position = text.find(needle, start)
    return text.count("\n", 0, position) + 1 if position >= 0 else 0


def read_categories(path: str, names: Optional[Sequence[str]]) -> Dict[str, List[int]]:
    """TENSORBOARD.CATEGORIES_PATH: parent category -> the indices of its child classes."""
    key = "TENSORBOARD.CATEGORIES_PATH"
    names = _need_names(key, names)
    if not os.path.isfile(path):
        raise ConfigError(f"{key} '{path}' does not exist; expected a JSON file "
                          '{"parent": ["child class", ...], ...}.')
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{key} '{path}', line {e.lineno}: not valid JSON ({e.msg}).") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ConfigError(f"{key} '{path}': expected a JSON object {{\"parent\": [\"child class\", ...], ...}}.")
    index = {name: i for i, name in enumerate(names)}
    parents: Dict[str, List[int]] = {}
    for parent, children in data.items():
        after = text.find(json.dumps(parent))
        for child in children:
            if not isinstance(child, str) or child not in index:
                line = _line_of(text, json.dumps(child) if isinstance(child, str) else str(child), max(after, 0))
                raise ConfigError(f"{key} '{path}', line {line}: parent {parent!r} lists {child!r}, which is not "
                                  f"a class name; {closest_names(str(child), names)}.")
        parents[parent] = [index[child] for child in children]
    return parents
