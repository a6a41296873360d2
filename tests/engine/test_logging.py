"""Who prints what: the master logs INFO, other ranks print errors only; config warnings
reach stdout.log without a second console copy."""
import builtins
import json
import logging

from tests.engine.tiny_parts import tiny_cfg
from vov3d.engine import runtime
from vov3d.engine.logging import setup_logging


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


def test_config_warnings_go_to_the_file_not_again_to_the_console(tmp_path, capsys, monkeypatch):
    cfg = tiny_cfg(tmp_path)
    monkeypatch.setattr("vov3d.config.load.config_warnings", lambda c: ["SOLVER.GAMMA has no effect"])
    runtime._RELOGGED.clear()
    try:
        runtime.setup_process(cfg)
        runtime.setup_process(cfg)  # the test phase: not again
        assert "SOLVER.GAMMA" not in capsys.readouterr().out
        log = (tmp_path / "stdout.log").read_text()
        assert log.count("Config: SOLVER.GAMMA has no effect") == 1
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
