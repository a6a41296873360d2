#!/usr/bin/env python3
"""Open every video (or frame folder) of the train, val and test lists once and report the
unreadable, missing or empty ones before a run starts.

    python tools/check_dataset.py --cfg configs/Kinetics/vov3d/vov3d_M.yaml \
        DATA.PATH_TO_DATA_DIR /data/k400 [--splits train,val]

Exit status 1 if any file is bad; the list is also written to OUTPUT_DIR/bad_videos.txt.
"""
import sys

from vov3d.config.load import load_config, parse_args
from vov3d.datasets import build_dataset
from vov3d.datasets.failures import FailureLog


def main(argv=None) -> int:
    args = parse_args(argv, __doc__.split("\n\n")[0], distributed=False,
                      add_arguments=lambda p: p.add_argument(
                          "--splits", default="train,val,test", help="comma-separated splits"))
    cfg = load_config(args)
    failures = FailureLog(cfg.OUTPUT_DIR)
    bad = 0
    for split in args.splits.split(","):
        name = cfg.TEST.DATASET if split == "test" else cfg.TRAIN.DATASET
        dataset = build_dataset(name, cfg, split)  # list files are validated here
        split_bad = 0
        for index in range(dataset.num_videos):
            error = dataset.check(index)
            if error is not None:
                split_bad += 1
                print(f"{split}: {dataset.video_path(index)}: {error}")
                failures.record(dataset.video_path(index), RuntimeError(error))
        print(f"{split}: {dataset.num_videos} videos, {split_bad} unreadable")
        bad += split_bad
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
