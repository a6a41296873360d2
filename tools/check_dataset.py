#!/usr/bin/env python3
"""Open every video (or frame folder) of the train, val and test lists once and report the
unreadable, missing or empty ones before a run starts; bad files are also listed (appended)
in OUTPUT_DIR/bad_videos.txt of the config.

    python tools/check_dataset.py --cfg configs/Kinetics/vov3d/vov3d_M.yaml \
        DATA.PATH_TO_DATA_DIR /data/k400 DATA.PATH_PREFIX /data/k400/videos [--splits train,val]

Exit status 1 if any file is bad. Videos are read from DATA.PATH_PREFIX: override it along
with DATA.PATH_TO_DATA_DIR. Set OUTPUT_DIR to choose where bad_videos.txt goes.
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
