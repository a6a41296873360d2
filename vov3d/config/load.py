"""From a command line to a validated config: defaults, yaml (with _BASE_), overrides."""
import argparse
import logging
import os
from typing import Callable, List, Optional, Sequence

from yacs.config import CfgNode

from vov3d.config.defaults import get_cfg
from vov3d.config.errors import ConfigError
from vov3d.config.legacy import LegacyValues
from vov3d.config.merge import merge_file, merge_overrides
from vov3d.config.validate import assert_and_infer_cfg

logger = logging.getLogger(__name__)


AddArguments = Callable[[argparse.ArgumentParser], None]


def build_parser(description: str, distributed: bool = True,
                 add_arguments: Optional[AddArguments] = None) -> argparse.ArgumentParser:
    """`--cfg`, the launch flags when `distributed`, a tool's own flags, then overrides."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: KEY VALUE pairs after the flags (or after --opts), "
               "e.g. NUM_GPUS 0 TRAIN.BATCH_SIZE 8 DATA.PATH_TO_DATA_DIR /data/k400.",
    )
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="experiment yaml file")
    if distributed:
        parser.add_argument("--shard_id", type=int, default=0, help="index of this machine")
        parser.add_argument("--num_shards", type=int, default=1, help="number of machines")
        parser.add_argument("--init_method", default="tcp://localhost:9999",
                            help="torch.distributed rendezvous: tcp://host:port, file:///path or env://")
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=None,
                        help="KEY VALUE overrides (the same as writing them after the flags)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None,
               description: str = "vov3d: train and test video models.", distributed: bool = True,
               add_arguments: Optional[AddArguments] = None) -> argparse.Namespace:
    """Parse flags and KEY VALUE overrides; exits with a message on malformed input.

    Tools pass `add_arguments` for their own flags (which, like all flags, come before the
    overrides) and `distributed=False` when they run in one process.
    """
    parser = build_parser(description, distributed, add_arguments)
    args = parser.parse_args(argv)
    if not distributed:
        args.num_shards, args.shard_id, args.init_method = 1, 0, None
    opts: List[str] = list(args.overrides or [])
    if opts and opts[0] == "--opts":
        opts = opts[1:]
    opts += list(args.opts or [])
    stray = [o for o in opts[0::2] if o.startswith("--")]
    if stray:
        parser.error(f"flag {stray[0]} must come before the KEY VALUE overrides.")
    args.opts = opts
    if args.num_shards < 1:
        parser.error(f"--num_shards must be >= 1, got {args.num_shards}.")
    if not 0 <= args.shard_id < args.num_shards:
        parser.error(f"--shard_id must be in [0, --num_shards) = [0, {args.num_shards}), "
                     f"got {args.shard_id}.")
    if os.path.isdir(args.cfg_file):
        parser.error(f"--cfg '{args.cfg_file}' is a directory; expected a YAML file.")
    if not os.path.isfile(args.cfg_file):
        parser.error(f"config file not found: '{args.cfg_file}'.")
    if len(opts) % 2:
        parser.error(f"overrides must come in KEY VALUE pairs; got {len(opts)} tokens "
                     f"({' '.join(opts)}).")
    return args


def _warn_stale_path_prefix(cfg: CfgNode, opts: Sequence[str]) -> None:
    """Overriding the data folder alone keeps the yaml's PATH_PREFIX, where videos are read."""
    keys = set(opts[0::2])
    if "DATA.PATH_TO_DATA_DIR" not in keys or "DATA.PATH_PREFIX" in keys:
        return
    prefix, data_dir = cfg.DATA.PATH_PREFIX, cfg.DATA.PATH_TO_DATA_DIR
    if not prefix or not data_dir:
        return
    prefix_abs, data_abs = os.path.abspath(prefix), os.path.abspath(data_dir)
    if prefix_abs == data_abs or prefix_abs.startswith(data_abs.rstrip(os.sep) + os.sep):
        return
    logger.warning("DATA.PATH_TO_DATA_DIR is overridden to '%s' but DATA.PATH_PREFIX is still '%s' "
                   "from the config file: videos are still read from '%s'; set DATA.PATH_PREFIX too.",
                   data_dir, prefix, prefix)


def load_config(args: argparse.Namespace) -> CfgNode:
    """Defaults -> yaml (with _BASE_) -> overrides -> --num_shards/--shard_id -> validation.

    Validation and derived values (LR scaling by shards) run on the merged result;
    the reference ran them on the defaults, which silently ignored the user's values.
    Warnings go to the `vov3d.config.*` loggers: a tool that wants them in its log file
    sets up logging first (engine.logging.start_logging).
    """
    cfg = get_cfg()
    legacy = LegacyValues()
    merge_file(cfg, args.cfg_file, legacy)
    opts = list(args.opts or [])
    merge_overrides(cfg, opts, legacy=legacy)
    legacy.settle()
    for key, flag in (("NUM_SHARDS", "num_shards"), ("SHARD_ID", "shard_id")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if cfg[key] != value and cfg[key] != get_cfg()[key]:
            logger.warning("%s %s from the config is replaced by --%s %s.", key, cfg[key], flag, value)
        cfg[key] = value
    _warn_stale_path_prefix(cfg, opts)
    assert_and_infer_cfg(cfg)
    cfg.freeze()
    return cfg


__all__ = ["ConfigError", "build_parser", "parse_args", "load_config"]
