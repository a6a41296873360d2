#!/usr/bin/env python3
"""Train, fine-tune and/or test a model from a config:

    python tools/run_net.py --cfg configs/Kinetics/vov3d/vov3d_M.yaml [--num_shards N --shard_id I
        --init_method tcp://host:port] [KEY VALUE ...]

TRAIN.ENABLE runs training (fine-tuning when TRAIN.CHECKPOINT_FILE_PATH is set), then
TEST.ENABLE runs the multi-view test of the newest checkpoint.
"""
import logging
import sys

from vov3d.config import ConfigError, load_config, parse_args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args)
    except ConfigError as e:
        print(f"run_net.py: config error: {e}", file=sys.stderr)
        return 2
    # Imported after the config is known to be good, so a typo fails in milliseconds.
    from vov3d.datasets.lists import ListFormatError
    from vov3d.engine.checkpoint import CheckpointError
    from vov3d.engine.launch import launch_job
    from vov3d.engine.test import test
    from vov3d.engine.train import LossDivergedError, train

    try:
        if cfg.TRAIN.ENABLE:
            launch_job(cfg, args.init_method, train)
        if cfg.TEST.ENABLE:
            launch_job(cfg, args.init_method, test)
    except (ConfigError, CheckpointError, ListFormatError, LossDivergedError) as e:
        # Errors about the user's files and settings: the message says what to do, and a
        # traceback would only bury it.
        logging.getLogger(__name__).error("%s: %s", type(e).__name__, e)
        print(f"run_net.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
