#!/usr/bin/env python3
"""Train, fine-tune and/or test a model from a config:

    python tools/run_net.py --cfg configs/Kinetics/vov3d/vov3d_M.yaml [--num_shards N --shard_id I
        --init_method tcp://host:port] [KEY VALUE ...]

TRAIN.ENABLE runs training (fine-tuning when TRAIN.CHECKPOINT_FILE_PATH is set), then
TEST.ENABLE runs the multi-view test of the newest checkpoint, then, with TENSORBOARD.ENABLE
and TENSORBOARD.MODEL_VIS or WRONG_PRED_VIS, the model visualisation job, then DEMO.ENABLE
runs the demo (tools/demo_net.py) on DEMO.INPUT_VIDEO or DEMO.WEBCAM. SIGTERM or SIGUSR1
during training saves a mid-epoch checkpoint and exits with 128 + the signal number; the
same command resumes there.
"""
import sys

from vov3d.config import ConfigError, load_config, parse_args
from vov3d.utils.errors import UserError, report_user_error
from vov3d.engine.logging import start_logging


def main(argv=None) -> int:
    args = parse_args(argv)
    start_logging()  # the config's warnings reach the console now and stdout.log at launch
    try:
        cfg = load_config(args)
    except ConfigError as e:
        return report_user_error("run_net.py", e)
    # Imported after the config is known to be good, so a typo fails in milliseconds.
    from vov3d.engine.preflight import visualization_job_enabled

    visualize_model = visualization_job_enabled(cfg)
    if not (cfg.TRAIN.ENABLE or cfg.TEST.ENABLE or visualize_model or cfg.DEMO.ENABLE):
        print("run_net.py: config error: TRAIN.ENABLE, TEST.ENABLE and DEMO.ENABLE are all False: nothing "
              "would run. Set TRAIN.ENABLE True to train, TEST.ENABLE True to test and/or DEMO.ENABLE True "
              "for the demo.", file=sys.stderr)
        return 2
    from vov3d.engine.launch import launch_job
    from vov3d.engine.preemption import TrainingStopped
    from vov3d.engine.test import test
    from vov3d.engine.train import train
    from vov3d.engine.visualize import visualize

    try:
        if cfg.TRAIN.ENABLE:
            launch_job(cfg, args.init_method, train)
        if cfg.TEST.ENABLE:
            launch_job(cfg, args.init_method, test)
        if visualize_model:
            launch_job(cfg, args.init_method, visualize)
        if cfg.DEMO.ENABLE:
            from vov3d.demo.run import run_demo

            run_demo(cfg)
    except TrainingStopped as e:  # asked to stop (SIGTERM, ...): saved, and resumes where it stopped
        print(f"run_net.py: {e}", file=sys.stderr)
        return e.exit_code
    except UserError as e:
        # The job already wrote it to OUTPUT_DIR/stdout.log. Errors about the user's data, files
        # and settings: the message says what to do, and a traceback would only bury it.
        return report_user_error("run_net.py", e)  # a config error: the same report as at load time
    return 0


if __name__ == "__main__":
    sys.exit(main())
