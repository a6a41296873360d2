#!/usr/bin/env python3
"""Parameters, FLOPs and activations of a config's model, at its train and test crops:

    python tools/model_summary.py --cfg configs/Kinetics/vov3d/vov3d_M.yaml [KEY VALUE ...]

Prints the conv+linear GFLOPs (one multiply-add = one FLOP, batch 1, eval mode; the
convention of the published X3D/VoV3D figures), fvcore's default count (adds batch norm)
and fvcore's activation count. The model is built on the CPU (NUM_GPUS 0).
"""
import sys

from vov3d.config import ConfigError, load_config, parse_args
from vov3d.utils.errors import report_user_error


def main(argv=None) -> int:
    args = parse_args(argv, "Print a model's parameters, GFLOPs and activations.", distributed=False)
    args.opts = list(args.opts) + ["NUM_GPUS", "0"]
    try:
        cfg = load_config(args)
    except ConfigError as e:
        return report_user_error("model_summary.py", e)
    from vov3d.engine.preflight import check_registered_names
    from vov3d.models import build_model
    from vov3d.models.complexity import complexity_summary, format_complexity
    from vov3d.utils.threads import apply_budget, tool_budget

    try:
        apply_budget(tool_budget(), log=False)  # fvcore's counts run a real forward pass
    except ValueError as e:
        print(f"model_summary.py: {e}", file=sys.stderr)
        return 2

    try:
        check_registered_names(cfg, datasets=False)
        model = build_model(cfg)
    except ConfigError as e:
        return report_user_error("model_summary.py", e)
    print(f"{cfg.MODEL.MODEL_NAME} from {args.cfg_file}: {cfg.MODEL.NUM_CLASSES} classes, "
          f"{cfg.DATA.NUM_FRAMES} frames")
    print(format_complexity(complexity_summary(model, cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
