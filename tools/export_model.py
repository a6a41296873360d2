#!/usr/bin/env python3
"""Export a trained model for deployment:

    python tools/export_model.py --cfg configs/Kinetics/x3d/X3D_M.yaml --checkpoint x3d_m.pyth \
        --format onnx|torchscript|exported --out x3d_m.onnx [--batch N|dynamic] [--mode clip|step] \
        [--labels classes.json] [--check] [KEY VALUE ...]

--mode clip (every model, CoX3D included): a (N, 3, DATA.NUM_FRAMES, S, S) clip, S =
DATA.TEST_CROP_SIZE, in; (N, MODEL.NUM_CLASSES) scores (MODEL.HEAD_ACT) out.
--mode step (CoX3D, or an X3D config streamed as CoX3D): one (N, 3, S, S) frame and the
stream's state in; (scores, valid, new state) out, every frame memory an explicit tensor.
vov3d/export/onnx_stream.py streams such an .onnx file with ONNX Runtime and numpy alone.

--batch: the batch size baked into the file (default 1), or "dynamic" for a batch axis of
any size. --check reloads the file and compares its outputs with the eager model's
(float32, <= 1e-4 relative): random clips, or a 120-frame stream through the warm-up.
Formats: onnx (torch's dynamo exporter, onnx.checker; needs `pip install vov3d[export]`),
torchscript (torch.jit.trace; .pt), exported (torch.export; .pt2). Each file carries its
metadata (class names, input geometry and normalisation, torch version, ONNX opset).
Weights: --checkpoint, else as testing finds them (loaded strictly; a file that does not
fit gets testing's one-line summary); random weights only with TEST.ALLOW_RANDOM_INIT True.
"""
import argparse
import os
import sys

from vov3d.config import ConfigError, load_config, parse_args
from vov3d.utils.errors import UserError, report_user_error

FORMATS = ("onnx", "torchscript", "exported")


def batch_value(text: str):
    if text == "dynamic":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a batch size or 'dynamic', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the batch size must be >= 1, got {value}")
    return value


def add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="", help="weights (else TEST.CHECKPOINT_FILE_PATH, ...)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument("--batch", type=batch_value, default=1, help="a batch size, or 'dynamic'")
    parser.add_argument("--mode", choices=("clip", "step"), default="clip")
    parser.add_argument("--labels", default="", help="class names to record (else the checkpoint's)")
    parser.add_argument("--check", action="store_true", help="compare the file's outputs with eager ones")


def check_out_path(path: str) -> None:
    from vov3d.utils.files import unwritable_reason

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"--out '{path}' is a directory; expected a file name.")
    if not os.path.isdir(folder):
        raise ConfigError(f"--out '{path}': the folder {folder} does not exist.")
    reason = unwritable_reason(folder)
    if reason is not None:
        raise ConfigError(f"--out '{path}' cannot be written ({reason}).")


def export(args, cfg) -> str:
    """Everything after the config: checks, model, export, optional check; a summary line."""
    from vov3d.engine.inference import load_inference_model, with_checkpoint
    from vov3d.export.check import check_export
    from vov3d.export.formats import export_graph, load_runner, require_onnx
    from vov3d.export.graphs import clip_graph, step_graph

    if args.format == "onnx":
        require_onnx()
    check_out_path(args.out)
    cfg = with_checkpoint(cfg, args.checkpoint)
    if args.mode == "step":
        if cfg.MODEL.MODEL_NAME not in ("CoX3D", "X3D"):
            raise ConfigError(f"--mode step exports CoX3D's per-frame step; MODEL.MODEL_NAME is "
                              f"{cfg.MODEL.MODEL_NAME!r} (use CoX3D, or an X3D config: same weights).")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.MODEL_NAME = "CoX3D"
        cfg.freeze()
    loaded = load_inference_model(cfg, args.labels, "--labels")
    if loaded.names_warning:
        print(f"export_model.py: warning: {loaded.names_warning}", file=sys.stderr)
    model = loaded.model.cpu()
    dynamic = args.batch == "dynamic"
    batch = 2 if dynamic else args.batch
    make = step_graph if args.mode == "step" else clip_graph
    graph = make(model, cfg, loaded.class_names, batch)
    metadata = export_graph(graph, args.out, args.format, dynamic)
    opset = f", opset {metadata['opset']}" if "opset" in metadata else ""
    shape = ["N" if dynamic else metadata["input_shape"][0], *metadata["input_shape"][1:]]
    line = (f"wrote {args.out} ({args.format}{opset}, torch {metadata['torch_version']}): "
            f"{cfg.MODEL.MODEL_NAME} {args.mode}, input {shape}, {len(loaded.class_names)} classes "
            f"({loaded.names_origin}); weights {loaded.loaded.path or 'random (TEST.ALLOW_RANDOM_INIT)'}")
    if args.check:
        report = check_export(graph, load_runner(args.out, args.format), dynamic)
        line += f"\ncheck: {report.describe(args.mode)}"
    return line


def main(argv=None) -> int:
    args = parse_args(argv, "Export a model to ONNX, TorchScript or a torch.export program.",
                      distributed=False, add_arguments=add_tool_arguments)
    args.opts = list(args.opts) + ["NUM_GPUS", "0"]  # exported files are traced on the CPU
    from vov3d.engine.checkpointer import NoCheckpointError
    from vov3d.export.check import ExportCheckError
    from vov3d.utils.threads import apply_budget, tool_budget

    try:
        apply_budget(tool_budget(), log=False)  # the check runs the model and the exported file
    except ValueError as e:
        print(f"export_model.py: {e}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args)
        print(export(args, cfg))
    except UserError as e:
        return report_user_error("export_model.py", e, settings=(NoCheckpointError,))
    except ExportCheckError as e:
        print(f"export_model.py: check failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
