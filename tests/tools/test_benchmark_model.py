"""tools/benchmark_model.py --runtime: inference times per runtime, from the exported files."""

import pytest

from tests.conftest import import_tool
from tests.tools.test_export_model import argv


@pytest.fixture(scope="module")
def benchmark():
    return import_tool("benchmark_model")


def table(out):
    lines = out.strip().splitlines()
    header = [c.strip() for c in lines[1].split("|")]
    return [dict(zip(header, (c.strip() for c in line.split("|")))) for line in lines[3:]]


@pytest.mark.parametrize("mode,graphs", [("clip", ["clip"]), ("stream", ["clip", "frame (CoX3D step)"])])
def test_runtimes_are_timed_on_their_exported_graphs(benchmark, capsys, mode, graphs):
    assert benchmark.main(argv("X3D", "--mode", mode, "--runtime", "eager", "torchscript", "--runs", "2",
                               "--warmup", "1", "--batch-sizes", "1", "--threads", "1")) == 0
    out = capsys.readouterr().out
    assert "median of 2 runs after 1 warm-up" in out
    rows = table(out)
    assert [(r["graph"], r["runtime"]) for r in rows] == [(g, rt) for g in graphs for rt in ("eager", "torchscript")]
    inputs = {"clip": "1x3x4x32x32", "frame (CoX3D step)": "1x3x32x32"}
    assert all(r["input"] == inputs[r["graph"]] and float(r["ms/eval"]) > 0 for r in rows)
    assert all(r["vs eager"] == "1.00x" for r in rows if r["runtime"] == "eager")
    assert all(r["vs eager"].endswith("x") and float(r["vs eager"][:-1]) > 0 for r in rows)


def test_stream_runtimes_need_an_x3d_family_model(benchmark, capsys):
    assert benchmark.main(argv("CSN", "--mode", "stream", "--runtime", "eager", "--runs", "1")) == 2
    assert "--mode stream needs MODEL.MODEL_NAME CoX3D or X3D" in capsys.readouterr().err
