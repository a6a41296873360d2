"""Evaluation you can look at, end to end on the generated toy videos: a run with every
TensorBoard switch on, PySlowFast's visualisation yaml, and tools/visualize.py."""
import io
import json
import os
import re
import subprocess

import pytest
from PIL import Image

from tests.conftest import PYTHON, REPO_ROOT, metrics_records, run_tool_env, tiny_toy_run

RUN_NET = os.path.join(REPO_ROOT, "tools", "run_net.py")
VISUALIZE = os.path.join(REPO_ROOT, "tools", "visualize.py")

# One epoch of a tiny X3D, then a one-view test (the clip the visualisation job shows, so
# the test's predictions say which videos it must list as misclassified).
EVERY_SWITCH = """
TRAIN: {ENABLE: True, DATASET: kinetics, BATCH_SIZE: 4, EVAL_PERIOD: 1, CHECKPOINT_PERIOD: 1}
TEST: {ENABLE: True, DATASET: kinetics, BATCH_SIZE: 4, NUM_ENSEMBLE_VIEWS: 1, NUM_SPATIAL_CROPS: 1,
       SAVE_RESULTS_PATH: preds.pkl}
DATA: {NUM_FRAMES: 4, SAMPLING_RATE: 4, TRAIN_JITTER_SCALES: [32, 40], TRAIN_CROP_SIZE: 32,
       TEST_CROP_SIZE: 32, INPUT_CHANNEL_NUM: [3], CLASS_NAMES_PATH: classes.json}
X3D: {WIDTH_FACTOR: 1.0, DEPTH_FACTOR: 1.0, BOTTLENECK_FACTOR: 2.25, DIM_C5: 64, DIM_C1: 8}
RESNET: {ZERO_INIT_FINAL_BN: True, TRANS_FUNC: x3d_transform}
BN: {USE_PRECISE_STATS: False}
SOLVER: {BASE_LR: 0.05, LR_POLICY: cosine, MAX_EPOCH: 1, WARMUP_EPOCHS: 0.0}
MODEL: {NUM_CLASSES: 2, ARCH: x3d, MODEL_NAME: X3D, DROPOUT_RATE: 0.0}
DATA_LOADER: {NUM_WORKERS: 0, PIN_MEMORY: False}
NUM_GPUS: 0
RNG_SEED: 0
TENSORBOARD:
  ENABLE: True
  CATEGORIES_PATH: {root}/parents.json
  CONFUSION_MATRIX: {ENABLE: True, SUBSET_PATH: {root}/subset.txt, FIGSIZE: [4, 4]}
  HISTOGRAM: {ENABLE: True, TOPK: 2, SUBSET_PATH: {root}/subset.txt, FIGSIZE: [4, 4]}
  MODEL_VIS: {ENABLE: True, MODEL_WEIGHTS: True, ACTIVATIONS: True, INPUT_VIDEO: True, TOPK_PREDS: 2,
              LAYER_LIST: ["s1/pathway0_stem/conv_xy", "s5/pathway0_res0/branch2/a 0,1"],
              GRAD_CAM: {ENABLE: True, LAYER_LIST: ["s5"], USE_TRUE_LABEL: False}}
  WRONG_PRED_VIS: {ENABLE: True, TAG: Wrong}
"""


def _run(cmd, timeout=300):
    proc = subprocess.run(cmd, env=run_tool_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    (root / "subset.txt").write_text("moving down\n")
    (root / "parents.json").write_text('{"vertical": ["moving up", "moving down"]}')
    cfg, data = tiny_toy_run(root, EVERY_SWITCH.replace("{root}", str(root)))
    out = root / "out"
    _run([PYTHON, RUN_NET, "--cfg", cfg, "DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data,
          "OUTPUT_DIR", str(out)])
    return cfg, data, out


def test_every_switch_writes_its_tensorboard_tags(toy_run):
    _, _, out = toy_run
    events = _events(out / "runs-kinetics")
    images, scalars = set(events.Tags()["images"]), set(events.Tags()["scalars"])
    for split in ("Val", "Test"):
        assert {f"{split}/Confusion Matrix", f"{split}/Confusion Matrix Subset",
                f"{split}/Confusion Matrices Grouped by Parent Classes/vertical",
                f"{split}/Top 2 predictions by classes/moving down"} <= images
        assert f"{split}/Top 2 predictions by classes/moving up" not in images  # not in the subset
    assert {"Layer Weights/s1/pathway0_stem/conv_xy", "Layer Weights/s5/pathway0_res0/branch2/a"} <= images
    for video in range(4):
        assert {f"Input {video}/Pathway 1", f"Input {video}/Activations: s1/pathway0_stem/conv_xy",
                f"Input {video}/Activations: s5/pathway0_res0/branch2/a"} <= images
    assert {"Train/loss", "Train/lr", "Train/Top1_err", "Train/Data_time", "Train_epoch/loss", "Val/Top1_err",
            "Val/Mean_class_acc", "Test/Top1_acc", "Test/Top5_acc", "Test/Mean_class_acc",
            "Test/Multiview_top1_acc/1_crops"} <= scalars
    # Each misclassified test video is shown (the one-view test scored the same clip).
    report = json.loads((out / "preds.json").read_text())
    wrong = {f"Wrong/Video {v['index']}: {['moving up', 'moving down'][v['label']]}"
             for v in report["videos"] if v["top5_classes"][0] != v["label"]}
    assert {tag for tag in images if tag.startswith("Wrong/")} == wrong
    clip = Image.open(io.BytesIO(events.Images("Input 0/Pathway 1")[0].encoded_image_string))
    assert clip.format == "GIF" and clip.n_frames == 4 and min(clip.size) >= 224  # upscaled for the labels
    activation = events.Images("Input 0/Activations: s5/pathway0_res0/branch2/a")[0]
    assert activation.width > 0


def test_test_metrics_agree_with_the_logged_result(toy_run):
    _, _, out = toy_run
    final = metrics_records(out, "test_final")[-1]
    saved = json.loads((out / "test_metrics.json").read_text())
    assert f"{saved['top1_acc']:.2f}" == final["top1_acc"] and saved["num_videos"] == 4
    assert f"{saved['mean_class_acc']:.2f}" == final["mean_class_acc"]
    assert saved["multiview"] == [{"temporal_clips": 1, "spatial_crops": 1, "views": 1,
                                   "top1_acc": saved["top1_acc"], "top5_acc": saved["top5_acc"]}]
    assert [c["name"] for c in saved["per_class"]] == ["moving up", "moving down"]
    assert sum(c["support"] for c in saved["per_class"]) == 4
    assert os.path.isfile(out / "test_confusion_matrix.npy") and os.path.isfile(out / "val_metrics.json")


def test_results_report_and_gradcam_of_one_video(toy_run, tmp_path):
    cfg, data, out = toy_run
    proc = _run([PYTHON, VISUALIZE, "--results", str(out)])
    assert proc.stdout.strip() == f"report: {out / 'report' / 'report.html'}"
    page = (out / "report" / "report.html").read_text()
    for name in re.findall(r'src="([^"]*)"', page):
        with Image.open(out / "report" / name) as image:
            assert image.format == "PNG"
    assert "training_curves.png" in page and "moving down" in page

    video = os.path.join(data, "videos", sorted(os.listdir(os.path.join(data, "videos")))[0])
    ckpt = str(out / "checkpoints" / "checkpoint_epoch_00001.pyth")
    gif = tmp_path / "cam.gif"
    _run([PYTHON, VISUALIZE, "--gradcam", "--cfg", cfg, "--checkpoint", ckpt, "--video", video, "--out", str(gif),
          "--label", "moving down", "DATA.PATH_TO_DATA_DIR", data])
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 4 and image.size == (224, 224)
    bad = subprocess.run([PYTHON, VISUALIZE, "--gradcam", "--cfg", cfg, "--checkpoint", ckpt, "--video", video,
                          "--label", "moving sideways", "DATA.PATH_TO_DATA_DIR", data],
                         env=run_tool_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "visualize.py: VideoInputError: --label 'moving sideways' is neither a class index below 2 nor a class "
        "name; closest: 'moving down'."]


def test_results_of_a_folder_without_a_test_is_one_line(toy_run):
    _, data, _ = toy_run
    proc = subprocess.run([PYTHON, VISUALIZE, "--results", data], env=run_tool_env(), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"visualize.py: MissingResultsError: '{data}' holds no test output: test_metrics.json is missing (a run "
        "with TEST.ENABLE True writes it to its OUTPUT_DIR)."]


def test_pyslowfast_visualisation_yaml_runs_on_the_toy_dataset(tmp_path):
    """configs/Toy/vov3d_M_toy_visualization.yaml (VISUALIZATION_TOOLS.md's settings) on all
    six toy classes, only the data paths overridden (and the document's spelling TOP_K of
    HISTOGRAM.TOPK given); random weights keep it short."""
    data = tmp_path / "data"
    subprocess.run([PYTHON, os.path.join(REPO_ROOT, "tools", "make_toy_dataset.py"), "--out", str(data),
                    "--classes", "6", "--videos-per-class", "1", "--eval-per-class", "1", "--frames", "16",
                    "--size", "48x32"], check=True, env=run_tool_env(), capture_output=True)
    out = tmp_path / "out"
    _run([PYTHON, RUN_NET, "--cfg", os.path.join(REPO_ROOT, "configs", "Toy", "vov3d_M_toy_visualization.yaml"),
          "DATA.PATH_TO_DATA_DIR", str(data), "DATA.PATH_PREFIX", str(data),
          "TENSORBOARD.CLASS_NAMES_PATH", str(data / "classes.json"), "OUTPUT_DIR", str(out),
          "TRAIN.ENABLE", "False", "TEST.ALLOW_RANDOM_INIT", "True", "DATA_LOADER.NUM_WORKERS", "0",
          "TENSORBOARD.HISTOGRAM.TOP_K", "3"])
    images = set(_events(out / "runs-kinetics").Tags()["images"])
    assert {"Test/Confusion Matrix", "Test/Confusion Matrix Subset",
            "Test/Confusion Matrices Grouped by Parent Classes/motion",
            "Test/Confusion Matrices Grouped by Parent Classes/size",
            "Test/Confusion Matrices Grouped by Parent Classes/presence",
            "Test/Top 3 predictions by classes/growing", "Layer Weights/s2/pathway0_res0/branch1",
            "Input 5/Pathway 1", "Input 5/Activations: s5/pathway0_res1"} <= images
    assert "Test/Top 3 predictions by classes/shrinking" not in images  # not in the subset file
    saved = json.loads((out / "test_metrics.json").read_text())
    assert saved["multiview"][-1]["views"] == 6 and saved["multiview"][-1]["top1_acc"] == saved["top1_acc"]
