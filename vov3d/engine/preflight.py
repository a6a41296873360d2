"""Everything a job can be refused for before any work: devices, the batch split, model and
dataset names, the test lists and results path, and every directory the run will write.

`check_job` runs in the launcher, before a model is built or a process spawned, so a wrong
setting costs seconds, not an epoch, and a refused run leaves no OUTPUT_DIR behind.
"""
import os
from typing import List, Optional, Tuple

import torch
from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.datasets.failures import BAD_FILES_NAME
from vov3d.engine.mixup import MixUp
from vov3d.utils.files import unwritable_reason
from vov3d.utils.processes import per_process_batch


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def check_devices(cfg: CfgNode) -> None:
    """NUM_GPUS must exist on this machine; CUDA calls would fail later with a raw traceback."""
    if cfg.NUM_GPUS <= 0:
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"NUM_GPUS is {cfg.NUM_GPUS} but CUDA is not available on this machine "
                          "(torch.cuda.is_available() is False); use NUM_GPUS 0 for the CPU.")
    found = torch.cuda.device_count()
    if cfg.NUM_GPUS > found:
        raise ConfigError(f"NUM_GPUS is {cfg.NUM_GPUS} but this machine has {found} CUDA device(s); "
                          f"set NUM_GPUS to at most {found}, or use NUM_GPUS 0 for the CPU.")


def check_process_batches(cfg: CfgNode) -> None:
    """Each enabled phase's batch must split evenly over this machine's processes (the
    loaders check the same, but only after the model is built, in every rank), and mixup
    needs two clips per process to mix."""
    if launched_by_torchrun() and cfg.NUM_GPUS > 0:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if local != cfg.NUM_GPUS:
            raise ConfigError(f"torchrun started {local} processes per machine but NUM_GPUS is "
                              f"{cfg.NUM_GPUS}; they must agree (one process per GPU).")
    for split in ("train", "test"):
        if cfg[split.upper()].ENABLE:
            try:
                per_process_batch(cfg, split)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    mixup = MixUp.from_cfg(cfg)
    if cfg.TRAIN.ENABLE and mixup is not None and mixup.mixes and per_process_batch(cfg, "train") < 2:
        raise ConfigError(f"MIXUP.ENABLE mixes the clips of each process's batch with each other, but "
                          f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} gives each process 1 clip; raise "
                          "TRAIN.BATCH_SIZE (with TRAIN.GRAD_ACCUMULATION_STEPS to keep the effective "
                          "batch), or set MIXUP.ALPHA and MIXUP.CUTMIX_ALPHA 0 for label smoothing alone.")


def check_registered_names(cfg: CfgNode, datasets: bool = True) -> None:
    """MODEL.MODEL_NAME, and the datasets of the enabled phases, must be registered; the
    registries would refuse them only once the processes build the model and loaders."""
    from vov3d.datasets import DATASET_REGISTRY
    from vov3d.models import MODEL_REGISTRY
    from vov3d.utils.registry import UnknownNameError

    names = [("MODEL.MODEL_NAME", MODEL_REGISTRY)]
    if datasets:
        names += [(f"{split}.DATASET", DATASET_REGISTRY) for split in ("TRAIN", "TEST") if cfg[split].ENABLE]
    for key, registry in names:
        group, name = key.split(".")
        try:
            registry.get(cfg[group][name])
        except UnknownNameError as e:
            raise ConfigError(f"{key}: {e}") from None


def results_path(cfg: CfgNode) -> Optional[str]:
    """Where TEST.SAVE_RESULTS_PATH (relative to OUTPUT_DIR) puts the predictions; None when
    they are not saved. A directory given by mistake is refused."""
    out = cfg.TEST.SAVE_RESULTS_PATH
    if not out:
        return None
    out = out if os.path.isabs(out) else os.path.join(cfg.OUTPUT_DIR, out)
    if out.endswith(os.sep) or os.path.isdir(out):
        raise ConfigError(f"TEST.SAVE_RESULTS_PATH {cfg.TEST.SAVE_RESULTS_PATH!r} is a directory; expected "
                          "a file name such as preds.pkl (a per-video JSON is written beside it).")
    return out


def tensorboard_dir(cfg: CfgNode) -> str:
    """TENSORBOARD.LOG_DIR (relative to OUTPUT_DIR; runs-<dataset> when empty)."""
    log_dir = cfg.TENSORBOARD.LOG_DIR or f"runs-{cfg.TRAIN.DATASET}"
    return log_dir if os.path.isabs(log_dir) else os.path.join(cfg.OUTPUT_DIR, log_dir)


def check_test_lists(cfg: CfgNode) -> None:
    """Read the test lists now: a missing or malformed one stops the run before training,
    not after it."""
    if cfg.TEST.ENABLE:
        from vov3d.datasets import load_index

        load_index(cfg.TEST.DATASET, cfg, "test")


def visualization_job_enabled(cfg: CfgNode) -> bool:
    """Whether `tools/run_net.py` runs the model-visualisation job after training and testing
    (PySlowFast's rule: TensorBoard on, and MODEL_VIS or WRONG_PRED_VIS on)."""
    tb = cfg.TENSORBOARD
    return bool(tb.ENABLE and (tb.MODEL_VIS.ENABLE or tb.WRONG_PRED_VIS.ENABLE))


def _list_class_names(cfg: CfgNode) -> Optional[List[str]]:
    """The class names the lists of the job's splits give (DATA.CLASS_NAMES_PATH or a labels
    file); the test split serves testing and the visualisation job."""
    from vov3d.datasets import load_index

    if cfg.TEST.ENABLE or visualization_job_enabled(cfg):
        return load_index(cfg.TEST.DATASET, cfg, "test").class_names
    return load_index(cfg.TRAIN.DATASET, cfg, "train").class_names if cfg.TRAIN.ENABLE else None


def check_visualization(cfg: CfgNode) -> None:
    """TensorBoard visualisation inputs: the class-name, subset and category files, the
    colormaps and the MODEL_VIS layer names (the model is built on the meta device)."""
    tb = cfg.TENSORBOARD
    if not tb.ENABLE:
        return
    from vov3d.visualization import class_names as cn
    from vov3d.visualization.layers import check_layer_names

    files = [(tb[group].SUBSET_PATH, f"TENSORBOARD.{group}.SUBSET_PATH")
             for group in ("CONFUSION_MATRIX", "HISTOGRAM", "WRONG_PRED_VIS")
             if tb[group].ENABLE and tb[group].SUBSET_PATH]
    categories = tb.CONFUSION_MATRIX.ENABLE and tb.CATEGORIES_PATH
    if files or categories or tb.CLASS_NAMES_PATH:
        names = cn.choose_class_names(cfg, _list_class_names(cfg))
        for path, key in files:
            cn.read_class_subset(path, names, key)
        if categories:
            cn.read_categories(tb.CATEGORIES_PATH, names)
    if tb.MODEL_VIS.ENABLE:
        from matplotlib import colormaps

        for key, value in (("TENSORBOARD.MODEL_VIS.COLORMAP", tb.MODEL_VIS.COLORMAP),
                           ("TENSORBOARD.MODEL_VIS.GRAD_CAM.COLORMAP", tb.MODEL_VIS.GRAD_CAM.COLORMAP)):
            if value not in colormaps:
                raise ConfigError(f"{key} {value!r} is not a matplotlib colormap; e.g. 'viridis', 'jet', 'Pastel2'.")
        check_layer_names(cfg)


def check_output_dir(cfg: CfgNode) -> None:
    out = cfg.OUTPUT_DIR
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"OUTPUT_DIR '{out}' exists and is not a directory; choose another OUTPUT_DIR.")


def prepare_output_dir(cfg: CfgNode) -> None:
    out = cfg.OUTPUT_DIR
    try:
        os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    except OSError as e:
        raise ConfigError(f"OUTPUT_DIR '{out}': cannot create {os.path.join(out, 'checkpoints')} "
                          f"({e.strerror or e}).") from None


def written_places(cfg: CfgNode) -> List[Tuple[str, str, str]]:
    """(directory, what the run writes there, the setting that chose it) for this job."""
    out = cfg.OUTPUT_DIR
    places = [(out, "stdout.log, metrics.jsonl and bad_videos.txt", "OUTPUT_DIR")]
    if cfg.TRAIN.ENABLE:
        places.append((os.path.join(out, "checkpoints"), "the checkpoints", "OUTPUT_DIR"))
    if cfg.TENSORBOARD.ENABLE:
        places.append((tensorboard_dir(cfg), "the TensorBoard logs", "TENSORBOARD.LOG_DIR"))
    results = results_path(cfg) if cfg.TEST.ENABLE else None
    if results is not None:
        places.append((os.path.dirname(results) or ".", "the test results", "TEST.SAVE_RESULTS_PATH"))
    return places


def check_writable(cfg: CfgNode) -> None:
    """Every directory the run will write, and the log files already there, can be written."""
    for directory, what, setting in written_places(cfg):
        reason = unwritable_reason(directory)
        if reason is not None:
            raise ConfigError(f"{setting}: {what} go to '{directory}', which is not writable ({reason}). "
                              f"Make it writable or choose another {setting}.")
    for name in ("stdout.log", "metrics.jsonl", BAD_FILES_NAME):
        path = os.path.join(cfg.OUTPUT_DIR, name)
        if os.path.isfile(path):
            try:
                open(path, "a").close()
            except OSError as e:
                raise ConfigError(f"OUTPUT_DIR: '{path}' cannot be appended to ({e.strerror or e}). "
                                  "Make it writable or choose another OUTPUT_DIR.") from None


def check_job(cfg: CfgNode) -> None:
    """All of the above, reading before creating: a refused run creates no OUTPUT_DIR."""
    check_devices(cfg)
    check_process_batches(cfg)
    check_registered_names(cfg)
    check_output_dir(cfg)
    if cfg.TEST.ENABLE:
        results_path(cfg)
    check_test_lists(cfg)
    check_visualization(cfg)
    prepare_output_dir(cfg)
    check_writable(cfg)
