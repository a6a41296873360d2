"""Process-aware logging: console on the master process, OUTPUT_DIR/stdout.log on rank 0,
and structured `json_stats` records (also appended to OUTPUT_DIR/metrics.jsonl).

A job starts logging before it reads its config (`start_logging`): the records of that
start (config warnings, launch checks) are shown on the console at once and kept until
OUTPUT_DIR is known, then written to stdout.log by the process that owns it.
"""
import builtins
import decimal
import logging
import logging.handlers
import os
import sys
from typing import Dict, Optional

import simplejson

from vov3d.utils.files import write_atomic

_FORMAT = "[%(asctime)s][%(levelname)s] %(filename)s: %(lineno)4d: %(message)s"
_DATEFMT = "%m/%d %H:%M:%S"
# Records of a job's start-up: a few dozen at most (config warnings, launch messages).
_STARTUP_CAPACITY = 10000


def _report_write_failure(path: str, error: OSError) -> None:
    """One line on stderr (not through logging, whose handlers are what failed)."""
    reason = error.strerror or str(error)
    sys.stderr.write(f"vov3d: cannot write '{path}': {reason[:1].lower()}{reason[1:]}; "
                     "nothing more is written to it.\n")


class LogFile(logging.FileHandler):
    """OUTPUT_DIR/stdout.log. A write that fails (a full disk, a lost mount) is reported once
    and ends the file; the job goes on logging to the console."""

    def __init__(self, path: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            self._give_up(error)
        else:
            super().handleError(record)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as error:
            self._give_up(error)

    def _give_up(self, error: OSError) -> None:
        if self.failed:
            return
        self.failed = True
        _report_write_failure(self.baseFilename, error)
        stream, self.stream = self.stream, None
        try:
            if stream is not None:
                stream.close()  # retries the buffered lines once more; they are lost
        except OSError:
            pass


class _MetricsFile:
    """OUTPUT_DIR/metrics.jsonl, one JSON record a line; failing writes end it like LogFile's."""

    def __init__(self, path: str) -> None:
        self.path, self.failed = path, False

    def append(self, line: str) -> None:
        if self.failed:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as error:
            self.failed = True
            _report_write_failure(self.path, error)


_METRICS: Optional[_MetricsFile] = None


class _StartupRecords(logging.handlers.BufferingHandler):
    """The records logged before OUTPUT_DIR is known, kept for stdout.log."""

    def __init__(self) -> None:
        super().__init__(_STARTUP_CAPACITY)

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.buffer) < self.capacity:
            self.buffer.append(record)

    def hand_to(self, target: Optional[logging.Handler]) -> None:
        """Write the kept records through `target` (None drops them), then stop keeping."""
        logging.getLogger().removeHandler(self)
        if target is not None:
            for record in self.buffer:
                target.handle(record)
        self.buffer.clear()
        self.close()


def _startup_records() -> Optional[_StartupRecords]:
    return next((h for h in logging.getLogger().handlers if isinstance(h, _StartupRecords)), None)


class _Console(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a record arrives: a stdout replaced after set-up
    (a notebook's or a test's capture, since closed) must not turn every later record into a
    logging error."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _console(is_master: bool) -> logging.Handler:
    console = _Console()
    console.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATEFMT))
    if not is_master:
        console.setLevel(logging.ERROR)
    return console


def _reset_root(is_master: bool, keep: Optional[logging.Handler] = None) -> logging.Logger:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler is not keep:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.INFO if is_master else logging.WARNING)
    root.addHandler(_console(is_master))
    return root


def start_logging() -> None:
    """The first thing a job does, before it reads its config: console output now, and the
    records kept until `write_startup_records` (or `setup_logging`) knows OUTPUT_DIR.

    Under torchrun every process starts here; only local rank 0 speaks on the console.
    """
    root = _reset_root(is_master=os.environ.get("LOCAL_RANK", "0") == "0")
    root.addHandler(_StartupRecords())
    logging.captureWarnings(True)


def _open_log_file(output_dir: str) -> LogFile:
    os.makedirs(output_dir, exist_ok=True)
    log_file = LogFile(os.path.join(output_dir, "stdout.log"))
    log_file.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATEFMT))
    return log_file


def write_startup_records(output_dir: Optional[str]) -> None:
    """Append the records kept since `start_logging` to OUTPUT_DIR/stdout.log (None: drop
    them). The launcher calls this before it starts the job's processes, which begin with
    a logging set-up of their own."""
    kept = _startup_records()
    if kept is None:
        return
    log_file = _open_log_file(output_dir) if output_dir else None
    kept.hand_to(log_file)
    if log_file is not None:
        log_file.close()


def setup_logging(output_dir: Optional[str] = None, is_master: bool = True, is_root: bool = True) -> None:
    """Configure the root logger once per process.

    Non-master processes print errors only, so a failing rank is still heard without every
    rank repeating the master's warnings; their `print` is silenced as in PySlowFast.
    Records kept since `start_logging` go to the log file first.
    """
    global _METRICS
    kept = _startup_records()
    root = _reset_root(is_master, keep=kept)
    if not is_master:
        builtins.print = lambda *args, **kwargs: None
    _METRICS = None
    log_file = None
    if output_dir and is_root:
        log_file = _open_log_file(output_dir)
        root.addHandler(log_file)
        _METRICS = _MetricsFile(os.path.join(output_dir, "metrics.jsonl"))
    if kept is not None:
        kept.hand_to(log_file)
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
    handler = _open_log_file(output_dir)
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
    if _METRICS is not None:
        _METRICS.append(line)
    return line


def drop_epoch_records_after(epoch: int, iteration: int = 0) -> int:
    """Remove from metrics.jsonl the records of training epochs after the 1-based `epoch`
    (0: every epoch record) but the `train_iter` records of the first `iteration`
    iterations of the next one, and a last line torn by a kill; returns how many went.

    A run resumed from the checkpoint of epoch E (stopped `iteration` iterations into epoch
    E + 1) trains the rest again; the records of a killed attempt that had got further
    (its checkpoint never landed) would otherwise stand twice. Records without an epoch
    (test results) stay. The file is replaced atomically.
    """
    path = _METRICS.path if _METRICS is not None else None
    if not (path and os.path.isfile(path)):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = [line for line in lines if not _after(line, epoch, iteration)]
    if kept and not kept[-1].endswith("\n"):
        kept.pop()  # torn by the kill: the next record would be glued to it
    if len(kept) != len(lines):
        write_atomic(path, lambda f: f.writelines(kept), binary=False, sync=True)
        logging.getLogger(__name__).info(
            "Removed %d record(s) of epochs after %d%s from %s: that attempt stopped before their "
            "checkpoint, and they are written again.", len(lines) - len(kept), epoch,
            f" (iteration {iteration})" if iteration else "", path)
    return len(lines) - len(kept)


def _after(line: str, epoch: int, iteration: int) -> bool:
    try:
        record = simplejson.loads(line)
        done = str(record.get("epoch", "")).split("/")[0]
        it = str(record.get("iter", "")).split("/")[0]
    except (ValueError, AttributeError):
        return False  # not a record this function wrote: keep it as it is
    if not done.isdigit() or int(done) <= epoch:
        return False
    kept_iteration = (int(done) == epoch + 1 and record.get("_type") == "train_iter" and it.isdigit()
                      and int(it) <= iteration)
    return not kept_iteration
