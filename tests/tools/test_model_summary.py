"""tools/model_summary.py and tools/benchmark_model.py on small models."""
import os
import re
import subprocess
import sys

import torch

from tests.conftest import PYTHON, REPO_ROOT, run_tool_env
from tests.models.model_helpers import small_cfg
from vov3d.models import build_model
from vov3d.models.complexity import conv_linear_flops, count_params

VOV3D_M = "configs/Kinetics/vov3d/vov3d_M.yaml"
SHALLOW = ["VOV3D.STAGE_DEPTHS", "[1, 1, 1, 1]", "VOV3D.NUM_CONV", "2"]
SMALL = ["DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "64",
         "DATA.TRAIN_JITTER_SCALES", "[32, 32]"]


def _run(tool, *args):
    return subprocess.run([PYTHON, os.path.join(REPO_ROOT, "tools", tool), *args], cwd=REPO_ROOT,
                          env=run_tool_env(), capture_output=True, text=True, timeout=300)


def test_model_summary_prints_exact_counts():
    proc = _run("model_summary.py", "--cfg", VOV3D_M, *SMALL, *SHALLOW)
    assert proc.returncode == 0, proc.stderr
    with torch.device("meta"):
        model = build_model(small_cfg(VOV3D_M, 4, 32, 64, *SHALLOW))
    out = proc.stdout
    assert f"params: {count_params(model):,}" in out
    for crop, side in (("train", 32), ("test", 64)):
        line = next(l for l in out.splitlines() if l.startswith(f"{crop} crop 1x3x4x{side}x{side}"))
        gflops = float(re.search(r"conv\+linear ([0-9.]+) GFLOPs", line).group(1))
        assert abs(gflops - conv_linear_flops(model, (1, 3, 4, side, side)) / 1e9) < 1e-6
        default = float(re.search(r"fvcore default ([0-9.]+) GFLOPs", line).group(1))
        assert default > gflops
        assert re.search(r"activations [0-9.]+ M", line)


def _import_tool(name):
    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_model_summary_reports_config_errors(capsys):
    model_summary = _import_tool("model_summary")
    code = model_summary.main(["--cfg", os.path.join(REPO_ROOT, VOV3D_M), "VOV3D.DEPTH", "19"])
    assert code == 2
    assert "VOV3D.DEPTH is 19; expected 31 (VoV3D-M) or 70 (VoV3D-L)" in capsys.readouterr().err


def test_unknown_model_names_are_one_line_config_errors(capsys):
    for tool in ("model_summary", "benchmark_model"):
        code = _import_tool(tool).main(["--cfg", os.path.join(REPO_ROOT, VOV3D_M), "MODEL.MODEL_NAME", "VoV3DD"])
        [line] = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and line.startswith(f"{tool}.py: config error: MODEL.MODEL_NAME: unknown model 'VoV3DD'")
        assert line.endswith("Did you mean 'VoV3D'?")


def test_benchmark_prints_a_row_per_batch_and_memory_format(capsys):
    benchmark_model = _import_tool("benchmark_model")
    threads = torch.get_num_threads()
    try:
        code = benchmark_model.main(["--cfg", os.path.join(REPO_ROOT, VOV3D_M), "--runs", "1",
                                     "--warmup", "0", "--threads", "1", *SMALL, *SHALLOW])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert ", 1 threads (set by --threads);" in lines[0]
    rows = [l for l in lines if l.startswith("clip |")]
    assert len(rows) == 4
    assert {tuple(c.strip() for c in r.split("|")[2:4]) for r in rows} == {
        ("1", "default"), ("1", "channels_last_3d"), ("2", "default"), ("2", "channels_last_3d")}
    for r in rows:
        # Only positivity: one untimed-warmup run on a shared CPU orders nothing reliably.
        fwd, fwd_bwd = (float(c) for c in r.split("|")[4:6])
        assert fwd > 0 and fwd_bwd > 0


def test_median_seconds_skips_warmup_and_takes_the_median(monkeypatch):
    benchmark_model = _import_tool("benchmark_model")
    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])  # timed calls last 5, 1 and 3 s
    monkeypatch.setattr(benchmark_model.time, "perf_counter", lambda: next(clock))
    calls = []
    assert benchmark_model.median_seconds(lambda: calls.append(1), warmup=2, runs=3) == 3.0
    assert len(calls) == 5
