"""Who prints what: the master logs INFO, other ranks print errors only; the records of a
job's start (config warnings) reach stdout.log once, without a second console copy; a log
file that cannot be written is reported once and left alone."""
import builtins
import errno
import io
import json
import logging
import os
import sys

from tests.engine.tiny_parts import tiny_cfg
from vov3d.engine import runtime
from vov3d.engine.logging import (log_json_stats, log_to_file, setup_logging, start_logging,
                                  write_startup_records)


def _console_level():
    handler = next(h for h in logging.getLogger().handlers if not isinstance(h, logging.FileHandler))
    return handler.level


def test_non_master_ranks_print_errors_only(tmp_path, capsys):
    saved_print = builtins.print  # non-master processes silence print
    try:
        setup_logging(str(tmp_path / "worker"), is_master=False, is_root=False)
        assert _console_level() == logging.ERROR
        logging.getLogger("vov3d.x").warning("the master says this already")
        logging.getLogger("vov3d.x").error("rank 3 failed")
        out = capsys.readouterr().out
        assert "rank 3 failed" in out and "the master says this already" not in out
        assert not (tmp_path / "worker" / "stdout.log").exists()
    finally:
        builtins.print = saved_print
        setup_logging(None)


def test_config_warnings_go_to_the_file_not_again_to_the_console(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    try:
        start_logging()
        logging.getLogger("vov3d.config.legacy").warning("SOLVER.GAMMA has no effect")
        runtime.setup_process(cfg)
        runtime.setup_process(cfg)  # the test phase: not again
        assert capsys.readouterr().out.count("SOLVER.GAMMA") == 1  # shown once, when it happened
        log = (tmp_path / "stdout.log").read_text()
        assert log.count("SOLVER.GAMMA has no effect") == 1 and "[WARNING]" in log
    finally:
        setup_logging(None)


def test_start_up_records_reach_the_log_file_once_and_in_order(tmp_path, capsys):
    log = logging.getLogger("vov3d.test")
    try:
        start_logging()
        log.warning("first")
        log.info("second")
        write_startup_records(str(tmp_path))
        write_startup_records(str(tmp_path))  # a second launch (the test phase) adds nothing
        log.info("third")  # the launcher has no log file of its own
        setup_logging(str(tmp_path))
        log.info("fourth")
        text = (tmp_path / "stdout.log").read_text()
        assert [m for m in ("first", "second", "third", "fourth") if m in text] == ["first", "second", "fourth"]
        assert text.index("first") < text.index("second") < text.index("fourth")
        out = capsys.readouterr().out
        assert [out.count(m) for m in ("first", "second", "third", "fourth")] == [1, 1, 1, 1]
    finally:
        setup_logging(None)


def test_a_launcher_that_does_not_own_the_log_file_drops_its_records(tmp_path):
    try:
        start_logging()
        logging.getLogger("vov3d.test").warning("shown on this machine's console only")
        write_startup_records(None)
        setup_logging(str(tmp_path))
        assert "shown on" not in (tmp_path / "stdout.log").read_text()
    finally:
        setup_logging(None)


class _FullDisk(io.StringIO):
    def __init__(self):
        super().__init__()
        self.attempts = 0

    def write(self, text):
        self.attempts += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_reported_once_and_the_log_file_left_alone(tmp_path, capsys):
    log = logging.getLogger("vov3d.test")
    try:
        setup_logging(str(tmp_path))
        handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler))
        full = handler.stream = _FullDisk()
        for i in range(10):
            log.info("test batch %d", i)
        assert log_to_file(logging.ERROR, "the job failed") is True
        err = capsys.readouterr()
        assert "--- Logging error ---" not in err.err and "Traceback" not in err.err
        [line] = err.err.strip().splitlines()
        assert str(tmp_path / "stdout.log") in line and "no space left on device" in line
        assert full.attempts == 1
        assert err.out.count("test batch") == 10  # the console goes on
    finally:
        setup_logging(None)


def test_a_failing_metrics_file_is_reported_once(tmp_path, capsys):
    try:
        setup_logging(str(tmp_path))
        (tmp_path / "metrics.jsonl").mkdir()  # every append fails (IsADirectoryError)
        for epoch in range(3):
            log_json_stats({"_type": "train_epoch", "epoch": epoch})
        [line] = capsys.readouterr().err.strip().splitlines()
        assert str(tmp_path / "metrics.jsonl") in line and "nothing more is written" in line
    finally:
        setup_logging(None)


def test_records_of_epochs_after_the_resumed_one_are_dropped(tmp_path):
    from vov3d.engine.logging import drop_epoch_records_after, log_json_stats

    try:
        setup_logging(str(tmp_path))
        for record in ({"_type": "train_iter", "epoch": "1/3", "iter": "1/2"}, {"_type": "train_epoch", "epoch": "1/3"},
                       {"_type": "val_epoch", "epoch": "1/3"}, {"_type": "train_iter", "epoch": "2/3", "iter": "1/2"},
                       {"_type": "train_epoch", "epoch": "2/3"}, {"_type": "test_final", "top1_acc": "50.00"},
                       {"_type": "train_epoch", "epoch": "12/20"}):
            log_json_stats(record)
        metrics = tmp_path / "metrics.jsonl"
        with open(metrics, "a") as f:
            f.write('{"_type": "train_iter", "epo')  # torn by a kill mid-write
        assert drop_epoch_records_after(1) == 4
        kept = [json.loads(line) for line in metrics.read_text().splitlines()]
        assert [(r["_type"], r.get("epoch")) for r in kept] == [
            ("train_iter", "1/3"), ("train_epoch", "1/3"), ("val_epoch", "1/3"), ("test_final", None)]
        assert f"Removed 4 record(s) of epochs after 1 from {metrics}" in (tmp_path / "stdout.log").read_text()
        assert drop_epoch_records_after(1) == 0 and drop_epoch_records_after(0) == 3
        assert [json.loads(line)["_type"] for line in metrics.read_text().splitlines()] == ["test_final"]
        setup_logging(str(tmp_path / "other"), is_root=False)  # only rank 0 owns the file
        assert drop_epoch_records_after(0) == 0
    finally:
        setup_logging(None)


def test_a_run_stopped_mid_epoch_keeps_the_iterations_it_checkpointed(tmp_path):
    from vov3d.engine.logging import drop_epoch_records_after, log_json_stats

    try:
        setup_logging(str(tmp_path))
        for record in ({"_type": "train_epoch", "epoch": "1/3"}, {"_type": "train_iter", "epoch": "2/3", "iter": "1/4"},
                       {"_type": "train_iter", "epoch": "2/3", "iter": "2/4"},
                       {"_type": "train_iter", "epoch": "2/3", "iter": "3/4"},  # after the checkpoint
                       {"_type": "train_epoch", "epoch": "2/3"}, {"_type": "train_iter", "epoch": "3/3", "iter": "1/4"}):
            log_json_stats(record)
        assert drop_epoch_records_after(1, 2) == 3
        kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        assert [(r["_type"], r["epoch"], r.get("iter")) for r in kept] == [
            ("train_epoch", "1/3", None), ("train_iter", "2/3", "1/4"), ("train_iter", "2/3", "2/4")]
        assert "Removed 3 record(s) of epochs after 1 (iteration 2)" in (tmp_path / "stdout.log").read_text()
    finally:
        setup_logging(None)


def test_the_console_follows_stdout_replaced_after_set_up(capsys):
    borrowed = io.StringIO()
    real, sys.stdout = sys.stdout, borrowed
    try:
        start_logging()
        logging.getLogger("vov3d.test").info("while borrowed")
    finally:
        sys.stdout = real
    borrowed.close()  # what a finished capture does to its stream
    logging.getLogger("vov3d.test").info("after it closed")
    out, err = capsys.readouterr()
    assert "while borrowed" not in out and "after it closed" in out
    assert "Logging error" not in err and err == ""
