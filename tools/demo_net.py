#!/usr/bin/env python3
"""Label a video file or a webcam with a model's top-k classes:

    python tools/demo_net.py --cfg configs/Toy/vov3d_M_toy.yaml \
        DEMO.INPUT_VIDEO data/toy/videos/test_000.mp4 DEMO.OUTPUT_FILE output/toy/demo.mp4 \
        [TEST.CHECKPOINT_FILE_PATH model.pyth] [DEMO.LABEL_FILE_PATH classes.json] [KEY VALUE ...]

Writes every input frame, with the classes drawn, to DEMO.OUTPUT_FILE (same size and frame
rate unless DEMO.DISPLAY_WIDTH/HEIGHT and DEMO.OUTPUT_FPS say otherwise; empty = show them
in a window), and one JSON line per prediction beside it (`<name>.jsonl`: frame, time,
window, top-k). Clip models predict once per window of DATA.NUM_FRAMES x DATA.SAMPLING_RATE
frames (DEMO.BUFFER_SIZE overlap); CoX3D (MODEL.MODEL_NAME CoX3D) once per sampled frame
after its warm-up. Weights: TEST.CHECKPOINT_FILE_PATH, else the newest checkpoint in
OUTPUT_DIR (so after `make demo` the toy config finds its own), else
TRAIN.CHECKPOINT_FILE_PATH; random weights only with TEST.ALLOW_RANDOM_INIT True. The
same runs from tools/run_net.py with DEMO.ENABLE True.
"""
import sys

from vov3d.config import ConfigError, load_config, parse_args
from vov3d.utils.errors import UserError, report_user_error
from vov3d.engine.logging import setup_logging


def main(argv=None) -> int:
    args = parse_args(argv, "Label a video or a webcam with a model's top-k classes.", distributed=False)
    setup_logging()
    try:
        cfg = load_config(args)
    except ConfigError as e:
        return report_user_error("demo_net.py", e)
    from vov3d.demo.run import run_demo

    try:
        run_demo(cfg)
    except UserError as e:
        return report_user_error("demo_net.py", e)
    except KeyboardInterrupt:
        print("demo_net.py: interrupted; the frames written so far are kept.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
