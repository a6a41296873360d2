#!/usr/bin/env python3
r"""Convert a CSN checkpoint of pytorchvideo, mmaction2 or the VMZ PyTorch port to vov3d:

    python tools/convert_checkpoint.py --from mmaction2 ircsn_r152.pth ircsn_r152.pyth \
        [--cfg configs/Kinetics/csn/ircsn_r152_32x2.yaml [KEY VALUE ...]] [--drop-unmapped]

Every key is renamed and every shape checked against a CSN built from --cfg, or, without
it, from the depth, block type and class count read off the checkpoint. Keys that map
nowhere, model keys the checkpoint lacks and shape mismatches are all listed; any of them
makes the tool exit with status 1 and write nothing (unless --drop-unmapped /
--allow-missing say otherwise). The output is {"model_state": ...}, the layout that
TRAIN/TEST.CHECKPOINT_FILE_PATH load, written atomically.
"""
import argparse
import sys

import torch
from yacs.config import CfgNode

from vov3d.config import ConfigError, get_cfg, merge_file, merge_overrides
from vov3d.models.csn_convert import (SOURCE_BN_EPS, SOURCES, check_against_model,
                                      convert_csn_state_dict, infer_csn_layout)
from vov3d.utils.checkpoint_io import CheckpointError, read_checkpoint
from vov3d.utils.files import write_atomic

# Input normalisation the published weights expect (DATA.MEAN / DATA.STD).
_NORMALISATION_NOTE = {
    "pytorchvideo": "DATA.MEAN [0.45, 0.45, 0.45] DATA.STD [0.225, 0.225, 0.225] (the defaults)",
    "mmaction2": "IG65M-pretrained models: DATA.MEAN [0.485, 0.456, 0.406] DATA.STD "
                 "[0.229, 0.224, 0.225]; VMZ-ported models: DATA.MEAN [0.4322, 0.3947, 0.3765] "
                 "DATA.STD [0.2280, 0.2214, 0.2170]",
    "vmz": "DATA.MEAN [0.4322, 0.3947, 0.3765] DATA.STD [0.2280, 0.2214, 0.2170]",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES,
                        help="layout of the input checkpoint")
    parser.add_argument("input", help="checkpoint to convert (.pyth / .pth)")
    parser.add_argument("output", help="vov3d checkpoint to write")
    parser.add_argument("--cfg", default=None,
                        help="vov3d CSN config the weights are for (checked key by key)")
    parser.add_argument("--drop-unmapped", action="store_true",
                        help="drop checkpoint keys that are not part of a CSN instead of failing")
    parser.add_argument("--allow-missing", action="store_true",
                        help="accept a checkpoint that lacks some model keys (e.g. no head)")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="unpickle arbitrary objects (trusted files only; the default "
                             "torch.load(weights_only=True) refuses them)")
    parser.add_argument("overrides", nargs="*", help="KEY VALUE pairs applied after --cfg")
    return parser.parse_args(argv)


def _model_config(args: argparse.Namespace, state) -> CfgNode:
    cfg = get_cfg()
    if args.cfg:
        merge_file(cfg, args.cfg)
        merge_overrides(cfg, args.overrides)
        if cfg.MODEL.MODEL_NAME.lower() != "csn":
            raise ConfigError(f"{args.cfg}: MODEL.MODEL_NAME is {cfg.MODEL.MODEL_NAME!r}; "
                              "this tool converts CSN checkpoints.")
    else:
        if args.overrides:
            raise ConfigError("KEY VALUE overrides need --cfg.")
        cfg.CSN.DEPTH, cfg.CSN.BLOCK, cfg.MODEL.NUM_CLASSES = infer_csn_layout(state)
    return cfg


def _report(title: str, items, limit: int = 50) -> None:
    print(f"{title} ({len(items)}):", file=sys.stderr)
    for item in items[:limit]:
        print(f"  {item}", file=sys.stderr)
    if len(items) > limit:
        print(f"  ... and {len(items) - limit} more", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        checkpoint = read_checkpoint(args.input, unsafe=args.unsafe_load, unsafe_setting="--unsafe-load",
                                     source="input")
    except CheckpointError as e:
        print(f"convert_checkpoint.py: {e}", file=sys.stderr)
        return 2
    try:
        conversion = convert_csn_state_dict(checkpoint, args.source, args.input)
        cfg = _model_config(args, conversion.state_dict)
    except (ValueError, ConfigError, CheckpointError) as e:
        print(f"convert_checkpoint.py: {args.input}: {e}", file=sys.stderr)
        return 1

    check = check_against_model(conversion.state_dict, cfg)
    failed = False
    if conversion.unmapped:
        _report("checkpoint keys with no CSN counterpart" + (" (dropped)" if args.drop_unmapped else ""),
                conversion.unmapped)
        failed |= not args.drop_unmapped
    if check.unexpected:
        _report("renamed keys the model does not have", check.unexpected)
        failed = True
    if check.wrong_shape:
        _report("shape mismatches", check.wrong_shape)
        failed = True
    if check.missing:
        _report("model keys missing from the checkpoint" + (" (allowed)" if args.allow_missing else ""),
                check.missing)
        failed |= not args.allow_missing
    layout = f"{cfg.CSN.BLOCK}-CSN-{cfg.CSN.DEPTH}, {cfg.MODEL.NUM_CLASSES} classes"
    if failed:
        print(f"convert_checkpoint.py: {args.input} does not convert cleanly to {layout}; "
              "nothing written.", file=sys.stderr)
        return 1

    write_atomic(args.output, lambda f: torch.save({"model_state": conversion.state_dict}, f))
    print(f"wrote {args.output}: {len(conversion.state_dict)} tensors, {layout}.")
    eps = SOURCE_BN_EPS[args.source]
    mismatch = f" (the config has {cfg.CSN.BN_EPS:g})" if args.cfg and cfg.CSN.BN_EPS != eps else ""
    print(f"note: {args.source} weights were trained with BN eps {eps:g}: "
          f"use CSN.BN_EPS {eps:g}{mismatch}.")
    print(f"note: input normalisation: {_NORMALISATION_NOTE[args.source]}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
