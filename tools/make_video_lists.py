#!/usr/bin/env python3
"""Write Kinetics-format lists from a folder-per-class tree.

    python tools/make_video_lists.py --root /data/k400 [--test-split val]

reads ROOT/<split>/<class name>/<video file> for the splits train, val and test that exist
and writes ROOT/<split>.csv, one `<split>/<class name>/<video file> <label>` line per video,
and ROOT/classes.json: the train split's class names, sorted (label i = i-th name, the order
of the Kinetics label ids in PySlowFast's lists). A run then takes DATA.PATH_TO_DATA_DIR ROOT,
DATA.PATH_PREFIX ROOT and DATA.CLASS_NAMES_PATH classes.json. `--test-split val` writes
test.csv from the val folder, for datasets without a labelled test split (Kinetics-400
results are reported on val). Existing lists are not overwritten without --overwrite.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


class TreeError(ValueError):
    """The folder tree does not have the expected layout."""


def scan_split(root: str, split: str, extensions: Sequence[str]) -> Dict[str, List[str]]:
    """Class name -> sorted video paths relative to `root`, for ROOT/<split>/<class>/*."""
    split_dir = os.path.join(root, split)
    classes: Dict[str, List[str]] = {}
    for name in sorted(os.listdir(split_dir)):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            continue
        videos = sorted(f for f in os.listdir(class_dir)
                        if f.lower().endswith(tuple(extensions))
                        and os.path.isfile(os.path.join(class_dir, f)))
        if videos:
            classes[name] = [f"{split}/{name}/{video}" for video in videos]
    if not classes:
        raise TreeError(f"{split_dir} has no <class>/<video> files with extensions "
                        f"{', '.join(extensions)}.")
    return classes


def build_lists(root: str, test_split: Optional[str] = None,
                extensions: Sequence[str] = VIDEO_EXTENSIONS
                ) -> Tuple[List[str], Dict[str, List[Tuple[str, int]]]]:
    """Class names (from train) and, per split, `(relative path, label)` rows."""
    if not os.path.isdir(os.path.join(root, "train")):
        raise TreeError(f"{root} has no train/ folder; expected ROOT/train/<class>/<video>.")
    trees = {split: scan_split(root, split, extensions)
             for split in SPLITS if os.path.isdir(os.path.join(root, split))}
    if test_split is not None:
        if test_split not in trees:
            raise TreeError(f"--test-split {test_split}: {os.path.join(root, test_split)} is not a folder.")
        trees["test"] = trees[test_split]
    names = sorted(trees["train"])
    index = {name: i for i, name in enumerate(names)}
    rows = {}
    for split, tree in trees.items():
        unknown = sorted(set(tree) - set(index))
        if unknown:
            raise TreeError(f"{os.path.join(root, split)} has classes that train/ lacks: "
                            f"{', '.join(unknown[:5])}.")
        rows[split] = [(path, index[name]) for name in sorted(tree) for path in tree[name]]
    return names, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder holding train/, val/, test/")
    parser.add_argument("--out", help="where to write the lists (default: ROOT)")
    parser.add_argument("--test-split", choices=("val",), help="write test.csv from this split")
    parser.add_argument("--overwrite", action="store_true", help="replace existing lists")
    args = parser.parse_args(argv)
    try:
        names, rows = build_lists(args.root, args.test_split)
    except (TreeError, OSError) as error:
        print(f"make_video_lists: {error}", file=sys.stderr)
        return 1
    out = args.out or args.root
    targets = [os.path.join(out, f"{split}.csv") for split in rows] + [os.path.join(out, "classes.json")]
    existing = [path for path in targets if os.path.exists(path)]
    if existing and not args.overwrite:
        print(f"make_video_lists: {', '.join(existing)} exist(s); pass --overwrite to replace.",
              file=sys.stderr)
        return 1
    os.makedirs(out, exist_ok=True)
    for split, split_rows in rows.items():
        # The label is the last field, so paths with spaces stay readable.
        with open(os.path.join(out, f"{split}.csv"), "w", encoding="utf-8") as f:
            f.writelines(f"{path} {label}\n" for path, label in split_rows)
        print(f"{split}.csv: {len(split_rows)} videos")
    with open(os.path.join(out, "classes.json"), "w", encoding="utf-8") as f:
        json.dump(names, f, indent=1, ensure_ascii=False)
    print(f"classes.json: {len(names)} classes (set MODEL.NUM_CLASSES {len(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
