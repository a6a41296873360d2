#!/usr/bin/env python3
"""Look at results and at what a model attends to:

    python tools/visualize.py --results OUTPUT_DIR [--out DIR]
        PNG figures (confusion matrix, best/worst classes, multi-view gain, training curves)
        and report.html, from the files a test wrote (default DIR: OUTPUT_DIR/report).

    python tools/visualize.py --gradcam --cfg FILE --checkpoint CKPT --video VIDEO
            [--out clip.gif] [--label CLASS] [KEY VALUE ...]
        An animated GIF of the video's test clip (centre window, centre crop) under the
        Grad-CAM map of TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST (default: the last stage)
        for the predicted class (or --label, an index or a name), with the top-5 labels.
"""
import argparse
import sys

from vov3d.utils.errors import UserError, report_user_error

NAME = "visualize.py"


def results_main(argv) -> int:
    parser = argparse.ArgumentParser(prog=NAME, description="Figures and report.html of a test run.")
    parser.add_argument("--results", required=True, metavar="OUTPUT_DIR", help="the OUTPUT_DIR of a test run")
    parser.add_argument("--out", default=None, metavar="DIR", help="where to write (default: OUTPUT_DIR/report)")
    args = parser.parse_args(argv)
    from vov3d.visualization.report import build_report

    print(f"report: {build_report(args.results, args.out)}")
    return 0


def _gradcam_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gradcam", action="store_true", required=True, help="Grad-CAM of one video")
    parser.add_argument("--checkpoint", required=True, help="the weights to explain (a vov3d checkpoint)")
    parser.add_argument("--video", required=True, help="a video file")
    parser.add_argument("--out", default="gradcam.gif", help="the animated GIF to write (default gradcam.gif)")
    parser.add_argument("--label", default=None, help="explain this class (index or name) instead of the top-1")


def gradcam_main(argv) -> int:
    import torch

    from vov3d.config import ConfigError, load_config, parse_args

    args = parse_args(argv, "Grad-CAM of one video.", distributed=False, add_arguments=_gradcam_flags)
    args.opts = list(args.opts) + ["NUM_GPUS", "1" if torch.cuda.is_available() else "0"]
    try:
        cfg = load_config(args)
    except ConfigError as e:
        return report_user_error(NAME, e)
    from vov3d.engine.visualize import gradcam_video

    print(f"Grad-CAM: {gradcam_video(cfg, args.checkpoint, args.video, args.out, args.label)}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    if argv in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if "--results" in argv:
        run = results_main
    elif "--gradcam" in argv:
        run = gradcam_main
    else:
        print(f"{NAME}: give --results OUTPUT_DIR or --gradcam --cfg FILE --checkpoint CKPT --video VIDEO "
              "(see --help of either).", file=sys.stderr)
        return 2
    try:
        return run(argv)
    except UserError as e:
        return report_user_error(NAME, e)


if __name__ == "__main__":
    sys.exit(main())
