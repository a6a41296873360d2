"""Readers for the list files of every dataset, checked line by line at construction.

Every error names the file, the line number and an example of the expected format, so a
broken list stops the run before training instead of killing a loader worker later.
"""
import json
import os
import re
from collections import Counter, OrderedDict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from vov3d.utils.errors import UserError


class ListFormatError(UserError, ValueError):
    """A list or label file does not have the expected format."""


class MissingListError(FileNotFoundError, ListFormatError):
    """A list or label file a split needs does not exist."""


def require_file(path: str, split: str, what: str) -> str:
    if not os.path.isfile(path):
        raise MissingListError(f"split '{split}' needs {what}: {path} does not exist "
                                "(check DATA.PATH_TO_DATA_DIR).")
    return path


def join_prefix(prefix: str, path: str) -> str:
    """PATH_PREFIX joined to a relative path; absolute paths ignore the prefix."""
    return os.path.join(prefix, path) if prefix else path


def _parse_label(text: str, num_classes: int, where: str, example: str,
                 class_index: Optional[Dict[str, int]] = None) -> int:
    if class_index is not None and text in class_index:
        label = class_index[text]
    else:
        try:
            label = int(text)
        except ValueError:
            named = " or a class name from DATA.CLASS_NAMES_PATH" if class_index is not None else ""
            hint = "" if class_index is not None else (
                " (class names as labels need DATA.CLASS_NAMES_PATH)")
            raise ListFormatError(f"{where}: label {text!r} is not an integer class index"
                                  f"{named}; expected lines like {example!r}{hint}.") from None
    if not 0 <= label < num_classes:
        raise ListFormatError(f"{where}: label {label} is outside [0, {num_classes - 1}] "
                              f"(MODEL.NUM_CLASSES {num_classes}).")
    return label


def _not_utf8(path: str, line: int, byte: int, column: int) -> ListFormatError:
    return ListFormatError(f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x} at column {column}); save "
                           "the file as UTF-8.")


def _text_lines(path: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of every line; a line that is not UTF-8 is named."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _not_utf8(path, number, raw[error.start], error.start + 1) from None


def _non_empty_lines(path: str) -> Iterator[Tuple[int, str]]:
    for number, line in _text_lines(path):
        line = line.strip()
        if line:
            yield number, line


def _split_path_label(line: str, separator: str, class_index: Optional[Dict[str, int]]
                      ) -> List[str]:
    """`[path, label]`: split at the last separator or, when a class name containing the
    separator ends the line ("... air drumming"), before the longest such name."""
    fields = line.rsplit(separator, 1) if separator.strip() else line.rsplit(None, 1)
    if class_index is None or len(fields) != 2 or fields[1].strip() in class_index:
        return fields
    pattern = re.escape(separator) if separator.strip() else r"\s+"
    for match in re.finditer(pattern, line):  # left to right: longest candidate first
        name = line[match.end():].strip()
        if name in class_index:
            return [line[:match.start()], name]
    return fields


def read_video_csv(path: str, separator: str, prefix: str, num_classes: int,
                   class_index: Optional[Dict[str, int]] = None) -> Tuple[List[str], List[int]]:
    """Kinetics list: `<path><SEP><label>` per line, no header. The label is the last field,
    so with the default space separator paths may contain spaces. With `class_index` a label
    may also be a class name, spaces included."""
    example = f"abseiling/video_001.mp4{separator}0"
    paths, labels = [], []
    for number, line in _non_empty_lines(path):
        fields = _split_path_label(line, separator, class_index)
        if len(fields) != 2 or not fields[0].strip():
            raise ListFormatError(f"{path}:{number}: expected '<path>{separator}<label>' "
                                  f"(e.g. {example!r}, DATA.PATH_LABEL_SEPARATOR "
                                  f"{separator!r}), got {line!r}.")
        labels.append(_parse_label(fields[1].strip(), num_classes, f"{path}:{number}", example,
                                   class_index))
        paths.append(join_prefix(prefix, fields[0].strip()))
    if not paths:
        raise ListFormatError(f"{path} lists no videos; expected lines like {example!r}.")
    return paths, labels


def read_class_name_file(path: str, num_classes: int) -> List[str]:
    """DATA.CLASS_NAMES_PATH: a JSON list of class names in label order (as
    tools/make_toy_dataset.py and tools/make_video_lists.py write), or PySlowFast's
    `{"name": index}` object; the indices must be exactly 0 .. MODEL.NUM_CLASSES - 1."""
    data = _load_json(path)
    expected = (f"expected a JSON list of {num_classes} class names in label order, or an object "
                '{"abseiling": 0, ...} with the indices 0 .. MODEL.NUM_CLASSES - 1')
    if isinstance(data, list):
        names = data
    elif isinstance(data, dict):
        try:
            order = sorted((int(index), str(name)) for name, index in data.items())
        except (TypeError, ValueError):
            raise ListFormatError(f"{path}: a class index is not an integer; {expected}.") from None
        if [index for index, _ in order] != list(range(len(order))):
            raise ListFormatError(f"{path}: the class indices are not 0 .. {len(order) - 1} "
                                  f"without gaps or repeats; {expected}.")
        names = [name for _, name in order]
    else:
        raise ListFormatError(f"{path}: {expected}.")
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise ListFormatError(f"{path}: every class name must be a non-empty string; {expected}.")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ListFormatError(f"{path}: class name(s) listed twice: {', '.join(repeated[:5])}.")
    if len(names) != num_classes:
        raise ListFormatError(f"{path} names {len(names)} classes but MODEL.NUM_CLASSES is "
                              f"{num_classes}.")
    return list(names)


def read_frame_list(path: str, prefix: str) -> "OrderedDict[str, List[str]]":
    """PySlowFast frame list: header `original_vido_id video_id frame_id path labels`, then
    one row per frame; rows grouped by the first column in file order."""
    example = 'original_vido_id video_id frame_id path labels / 1234 0 0 1234/00001.jpg ""'
    videos: "OrderedDict[str, List[str]]" = OrderedDict()
    rows = _non_empty_lines(path)
    header = next(rows, None)
    if header is None or not header[1].startswith("original_vido_id"):
        raise ListFormatError(f"{path}:1: a frame list starts with the header line "
                              f"'original_vido_id video_id frame_id path labels'; got "
                              f"{header[1] if header else 'an empty file'!r}.")
    for number, line in rows:
        fields = line.split()
        if len(fields) != 5:
            raise ListFormatError(f"{path}:{number}: expected 5 space-separated fields "
                                  f"(e.g. {example!r}), got {len(fields)} in {line!r}.")
        videos.setdefault(fields[0], []).append(join_prefix(prefix, fields[3]))
    if not videos:
        raise ListFormatError(f"{path} lists no frames.")
    return videos


def _require_class_count(path: str, count: int, num_classes: int) -> None:
    # A label file with fewer classes would silently train a head with never-used outputs;
    # one with more would fail much later, on the first out-of-range label.
    if count != num_classes:
        raise ListFormatError(f"{path} names {count} classes but MODEL.NUM_CLASSES is "
                              f"{num_classes}.")


def read_class_names(path: str, num_classes: int) -> Dict[str, int]:
    """SSv1 labels: one class name per line, index = line number (whitespace stripped);
    exactly MODEL.NUM_CLASSES names."""
    classes: Dict[str, int] = {}
    for number, name in _non_empty_lines(path):
        if name in classes:
            raise ListFormatError(f"{path}:{number}: class {name!r} is listed twice.")
        classes[name] = len(classes)
    if not classes:
        raise ListFormatError(f"{path} lists no class names.")
    _require_class_count(path, len(classes), num_classes)
    return classes


def read_named_split(path: str, classes: Dict[str, int], num_classes: int
                     ) -> List[Tuple[str, int]]:
    """SSv1 split: `<video id>;<class name>` per line."""
    example = "100218;Something falling like a feather or paper"
    out = []
    for number, line in _non_empty_lines(path):
        fields = line.split(";")
        if len(fields) != 2:
            raise ListFormatError(f"{path}:{number}: expected '<video id>;<class name>' "
                                  f"(e.g. {example!r}), got {line!r}.")
        video_id, name = fields[0].strip(), fields[1].strip()
        if name not in classes:
            raise ListFormatError(f"{path}:{number}: unknown class name {name!r} (not in the "
                                  f"labels file); expected lines like {example!r}.")
        label = classes[name]
        if label >= num_classes:
            raise ListFormatError(f"{path}:{number}: class {name!r} has index {label}, outside "
                                  f"MODEL.NUM_CLASSES {num_classes}.")
        out.append((video_id, label))
    if not out:
        raise ListFormatError(f"{path} lists no videos.")
    return out


def _load_json(path: str):
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        raise _not_utf8(path, data.count(b"\n", 0, error.start) + 1, data[error.start],
                        error.start - line_start + 1) from None
    except json.JSONDecodeError as error:
        raise ListFormatError(f"{path}:{error.lineno}: not valid JSON ({error.msg}).") from None


def _template_key(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def read_template_labels(path: str, num_classes: int) -> Dict[str, int]:
    """SSv2 labels: `{"Putting something on something": "12", ...}`, exactly
    MODEL.NUM_CLASSES templates with the indices 0 .. MODEL.NUM_CLASSES - 1."""
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise ListFormatError(f"{path}: expected a JSON object {{template: \"index\"}}, e.g. "
                              '{"Holding something": "16"}.')
    # Counted before the indices are parsed: a wrong NUM_CLASSES then gets this message
    # rather than "index 2 is outside [0, 1]".
    _require_class_count(path, len(data), num_classes)
    labels = {}
    for name, value in data.items():
        labels[name] = _parse_label(str(value), num_classes, f"{path}: entry {name!r}",
                                    '"Holding something": "16"')
    shared = sorted(index for index, count in Counter(labels.values()).items() if count > 1)
    if shared:
        raise ListFormatError(f"{path}: index(es) {', '.join(map(str, shared[:5]))} are given to "
                              f"more than one template; expected each of 0 .. {num_classes - 1} "
                              "once.")
    return labels


def read_template_split(path: str, labels: Dict[str, int]) -> List[Tuple[str, int]]:
    """SSv2 split: a JSON array of objects with `id` and `template`; the label is the
    template with "[" and "]" removed, looked up in the labels file."""
    example = '{"id": "78687", "template": "Holding [something] next to [something]"}'
    data = _load_json(path)
    if not isinstance(data, list) or not data:
        raise ListFormatError(f"{path}: expected a non-empty JSON array of objects like {example}.")
    out = []
    for number, entry in enumerate(data):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise ListFormatError(f"{path}: entry {number} has no 'id' and 'template'; expected "
                                  f"objects like {example}, got {str(entry)[:120]}.")
        key = _template_key(entry["template"])
        if key not in labels:
            raise ListFormatError(f"{path}: entry {number} (id {entry['id']}) has template "
                                  f"{entry['template']!r}, which is not in the labels file.")
        out.append((str(entry["id"]), labels[key]))
    return out


def match_frame_lists(split_file: str, frame_file: str, videos: Sequence[Tuple[str, int]],
                      frame_lists: Dict[str, List[str]]) -> List[List[str]]:
    """Frame paths for every video of the split (in split order); missing ids are an error."""
    missing = [video_id for video_id, _ in videos if video_id not in frame_lists]
    if missing:
        raise ListFormatError(f"{len(missing)} video(s) of {split_file} have no frames in "
                              f"{frame_file}, e.g. {', '.join(missing[:5])}.")
    return [frame_lists[video_id] for video_id, _ in videos]
