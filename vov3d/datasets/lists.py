"""Readers for the list files of every dataset, checked line by line at construction.

Every error names the file, the line number and an example of the expected format, so a
broken list stops the run before training instead of killing a loader worker later.
"""
import json
import os
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple


class ListFormatError(ValueError):
    """A list or label file does not have the expected format."""


def require_file(path: str, split: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split '{split}' needs {what}: {path} does not exist "
                                "(check DATA.PATH_TO_DATA_DIR).")
    return path


def join_prefix(prefix: str, path: str) -> str:
    """PATH_PREFIX joined to a relative path; absolute paths ignore the prefix."""
    return os.path.join(prefix, path) if prefix else path


def _parse_label(text: str, num_classes: int, where: str, example: str) -> int:
    try:
        label = int(text)
    except ValueError:
        raise ListFormatError(f"{where}: label {text!r} is not an integer class index; "
                              f"expected lines like {example!r}.") from None
    if not 0 <= label < num_classes:
        raise ListFormatError(f"{where}: label {label} is outside [0, {num_classes - 1}] "
                              f"(MODEL.NUM_CLASSES {num_classes}).")
    return label


def _non_empty_lines(path: str):
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if line:
                yield number, line


def read_video_csv(path: str, separator: str, prefix: str, num_classes: int
                   ) -> Tuple[List[str], List[int]]:
    """Kinetics list: `<path><SEP><label>` per line, no header. The label is the last field,
    so with the default space separator paths may contain spaces."""
    example = f"abseiling/video_001.mp4{separator}0"
    paths, labels = [], []
    for number, line in _non_empty_lines(path):
        fields = line.rsplit(separator, 1) if separator.strip() else line.rsplit(None, 1)
        if len(fields) != 2 or not fields[0].strip():
            raise ListFormatError(f"{path}:{number}: expected '<path>{separator}<label>' "
                                  f"(e.g. {example!r}, DATA.PATH_LABEL_SEPARATOR "
                                  f"{separator!r}), got {line!r}.")
        labels.append(_parse_label(fields[1].strip(), num_classes, f"{path}:{number}", example))
        paths.append(join_prefix(prefix, fields[0].strip()))
    if not paths:
        raise ListFormatError(f"{path} lists no videos; expected lines like {example!r}.")
    return paths, labels


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


def read_class_names(path: str) -> Dict[str, int]:
    """SSv1 labels: one class name per line, index = line number (whitespace stripped)."""
    classes: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            name = line.strip()
            if not name:
                continue
            if name in classes:
                raise ListFormatError(f"{path}:{number}: class {name!r} is listed twice.")
            classes[name] = len(classes)
    if not classes:
        raise ListFormatError(f"{path} lists no class names.")
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
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ListFormatError(f"{path}:{error.lineno}: not valid JSON ({error.msg}).") from None


def _template_key(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def read_template_labels(path: str, num_classes: int) -> Dict[str, int]:
    """SSv2 labels: `{"Putting something on something": "12", ...}`."""
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise ListFormatError(f"{path}: expected a JSON object {{template: \"index\"}}, e.g. "
                              '{"Holding something": "16"}.')
    labels = {}
    for name, value in data.items():
        labels[name] = _parse_label(str(value), num_classes, f"{path}: entry {name!r}",
                                    '"Holding something": "16"')
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
