"""Process-aware logging: console on the master process, OUTPUT_DIR/stdout.log on rank 0,
and structured `json_stats` records (also appended to OUTPUT_DIR/metrics.jsonl)."""
import builtins
import decimal
import logging
import os
import sys
from typing import Dict, Optional

import simplejson

_FORMAT = "[%(asctime)s][%(levelname)s] %(filename)s: %(lineno)4d: %(message)s"
_DATEFMT = "%m/%d %H:%M:%S"
_METRICS_FILE: Optional[str] = None
_IS_ROOT = True


def setup_logging(output_dir: Optional[str] = None, is_master: bool = True, is_root: bool = True) -> None:
    """Configure the root logger once per process.

    Non-master processes print errors only, so a failing rank is still heard without every
    rank repeating the master's warnings; their `print` is silenced as in PySlowFast.
    """
    global _METRICS_FILE, _IS_ROOT
    _IS_ROOT = is_root
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO if is_master else logging.WARNING)
    formatter = logging.Formatter(_FORMAT, datefmt=_DATEFMT)
    console = logging.StreamHandler(stream=sys.stdout)
    console.setFormatter(formatter)
    if not is_master:
        console.setLevel(logging.ERROR)
    root.addHandler(console)
    if not is_master:
        builtins.print = lambda *args, **kwargs: None
    _METRICS_FILE = None
    if output_dir and is_root:
        os.makedirs(output_dir, exist_ok=True)
        log_file = logging.FileHandler(os.path.join(output_dir, "stdout.log"), mode="a")
        log_file.setFormatter(formatter)
        root.addHandler(log_file)
        _METRICS_FILE = os.path.join(output_dir, "metrics.jsonl")
    logging.captureWarnings(True)


def log_to_file(level: int, msg: str, *args, exc_info=None) -> bool:
    """Write one record to OUTPUT_DIR/stdout.log only; False when this process has no log file.

    For fatal errors the caller (or Python) also prints them on the console, where a
    second copy through the console handler would only be noise.
    """
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not handlers:
        return False
    caller = sys._getframe(1)
    record = logging.getLogger("vov3d").makeRecord(
        caller.f_globals.get("__name__", "vov3d"), level, caller.f_code.co_filename, caller.f_lineno,
        msg, args, exc_info)
    for handler in handlers:
        handler.handle(record)
    return True


def append_to_log_file(output_dir: str, level: int, msg: str, *args) -> None:
    """One record in OUTPUT_DIR/stdout.log written by a process that does not log there (the
    launcher of spawned processes, reporting one of them that died)."""
    handler = logging.FileHandler(os.path.join(output_dir, "stdout.log"), mode="a")
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATEFMT))
    caller = sys._getframe(1)
    try:
        handler.handle(logging.getLogger("vov3d").makeRecord(
            caller.f_globals.get("__name__", "vov3d"), level, caller.f_code.co_filename, caller.f_lineno,
            msg, args, None))
    finally:
        handler.close()


def _round_floats(stats: Dict) -> Dict:
    out = {}
    for key, value in stats.items():
        if isinstance(value, float):
            value = decimal.Decimal(f"{value:.5f}")
        out[key] = value
    return out


def format_json_stats(stats: Dict) -> str:
    """One record: sorted keys, floats with 5 decimals."""
    return simplejson.dumps(_round_floats(stats), sort_keys=True, use_decimal=True)


def log_json_stats(stats: Dict, logger: Optional[logging.Logger] = None) -> str:
    """Log `json_stats: {...}` and append the record to metrics.jsonl on rank 0."""
    line = format_json_stats(stats)
    (logger or logging.getLogger(__name__)).info("json_stats: %s", line)
    if _METRICS_FILE and _IS_ROOT:
        with open(_METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return line
