"""The results report of a run: PNG figures and one HTML page drawn only from the files a
test wrote to OUTPUT_DIR (test_metrics.json, test_confusion_matrix.npy, metrics.jsonl).

The page links its figures by file name and uses no script, style sheet or font from the
network, so the report folder opens anywhere, also offline.
"""
import html
import json
import os
from string import Template
from typing import Dict, List, Optional

import numpy as np

from vov3d.utils.errors import UserError
from vov3d.utils.files import write_atomic
from vov3d.visualization import figures

REPORT_NAME = "report.html"
_PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}td.name{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}</style></head>
<body><h1>$title</h1>
$summary
$sections
</body></html>
""")


class MissingResultsError(UserError):
    """A results folder without the files of a test."""


def load_results(results_dir: str) -> Dict:
    """test_metrics.json, its confusion matrix and the metrics.jsonl records of a run folder."""
    if not os.path.isdir(results_dir):
        raise MissingResultsError(f"'{results_dir}' is not a directory; expected the OUTPUT_DIR of a test run.")
    metrics_path = os.path.join(results_dir, "test_metrics.json")
    if not os.path.isfile(metrics_path):
        raise MissingResultsError(f"'{results_dir}' holds no test output: test_metrics.json is missing (a run with "
                                  "TEST.ENABLE True writes it to its OUTPUT_DIR).")
    with open(metrics_path, encoding="utf-8") as f:
        metrics = json.load(f)
    matrix_path = os.path.join(results_dir, metrics.get("confusion_matrix", {}).get("npy", "test_confusion_matrix.npy"))
    if not os.path.isfile(matrix_path):
        raise MissingResultsError(f"'{results_dir}' holds test_metrics.json but not its confusion matrix "
                                  f"{os.path.basename(matrix_path)}.")
    records = []
    jsonl = os.path.join(results_dir, "metrics.jsonl")
    if os.path.isfile(jsonl):
        with open(jsonl, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    return {"metrics": metrics, "confusion": np.load(matrix_path), "records": records}


def draw_figures(results: Dict, out_dir: str) -> List[str]:
    """The report's PNG files in `out_dir` (names relative to it), in page order."""
    metrics, names = results["metrics"], [row["name"] for row in results["metrics"]["per_class"]]
    per_class = metrics["per_class"]
    drawn = {
        "confusion_matrix.png": figures.confusion_matrix_figure(
            figures.row_normalised(results["confusion"]), names, (8, 8), "Test confusion matrix (row-normalised)"),
        "class_accuracy.png": figures.class_accuracy_figure(
            [r["accuracy"] for r in per_class], [r["support"] for r in per_class], names),
    }
    if len(metrics.get("multiview", [])) > 1:
        drawn["multiview_gain.png"] = figures.multiview_gain_figure(metrics["multiview"])
    curves = figures.training_curves_figure(results["records"])
    if curves is not None:
        drawn["training_curves.png"] = curves
    for name, fig in drawn.items():
        figures.save_png(fig, os.path.join(out_dir, name))
    return list(drawn)


def _table(header: List[str], rows: List[List], name_column: Optional[int] = None) -> str:
    def cell(i, value):
        text = "" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
        opening = '<td class="name">' if i == name_column else "<td>"
        return f"{opening}{html.escape(text)}</td>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary(metrics: Dict) -> str:
    rows = [["top-1 accuracy (%)", metrics.get("top1_acc")], ["top-5 accuracy (%)", metrics.get("top5_acc")],
            ["mean class accuracy (%)", metrics.get("mean_class_acc")], ["videos scored", metrics.get("num_videos")],
            ["videos that failed to load", metrics.get("num_failed")],
            ["views per video", f"{metrics.get('temporal_clips')} clips x {metrics.get('spatial_crops')} crops "
                                f"({metrics.get('ensemble')})"],
            ["checkpoint", f"{metrics.get('checkpoint')} (epoch {metrics.get('checkpoint_epoch')})"]]
    missing = metrics.get("classes_without_support") or []
    if missing:
        rows.append(["classes without test videos", ", ".join(missing)])
    return _table(["metric", "value"], rows, name_column=1)


def _sections(metrics: Dict, pictures: List[str]) -> str:
    titles = {"confusion_matrix.png": "Confusion matrix", "class_accuracy.png": "Per-class accuracy",
              "multiview_gain.png": "Multi-view gain", "training_curves.png": "Training curves"}
    parts = []
    for name in pictures:
        parts.append(f"<h2>{titles[name]}</h2><img src=\"{html.escape(name)}\" alt=\"{titles[name]}\">")
        if name == "multiview_gain.png":
            parts.append(_table(["clips", "crops", "views", "top-1 (%)", "top-5 (%)"],
                                [[r["temporal_clips"], r["spatial_crops"], r["views"], r["top1_acc"], r["top5_acc"]]
                                 for r in metrics["multiview"]]))
    rows = sorted(metrics["per_class"], key=lambda r: (r["accuracy"] is None, -(r["accuracy"] or 0), r["index"]))
    parts.append("<h2>Classes</h2>" + _table(["index", "class", "videos", "correct", "accuracy (%)"],
                                             [[r["index"], r["name"], r["support"], r["correct"], r["accuracy"]]
                                              for r in rows], name_column=1))
    return "\n".join(parts)


def build_report(results_dir: str, out_dir: Optional[str] = None) -> str:
    """Draw the figures and write report.html into `out_dir` (default RESULTS_DIR/report);
    returns the page's path."""
    results = load_results(results_dir)
    out_dir = out_dir or os.path.join(results_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    pictures = draw_figures(results, out_dir)
    metrics = results["metrics"]
    title = f"vov3d test results: {os.path.basename(os.path.abspath(results_dir))}"
    page = _PAGE.substitute(title=html.escape(title), summary=_summary(metrics), sections=_sections(metrics, pictures))
    path = os.path.join(out_dir, REPORT_NAME)
    write_atomic(path, lambda f: f.write(page), binary=False)
    return path
