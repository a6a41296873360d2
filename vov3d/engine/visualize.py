"""Model visualisation jobs.

`visualize(cfg)` is PySlowFast's visualisation job, run by tools/run_net.py after training
and testing when TENSORBOARD.ENABLE and MODEL_VIS or WRONG_PRED_VIS are on: the tested
checkpoint sees one centre clip of every test video (global rank 0 alone; it is not a
throughput job) and TensorBoard receives weights, activations, Grad-CAM videos and the
misclassified videos (visualization/model_vis.py); TENSORBOARD.PREDICTIONS_PATH adds the
evaluation plots of a saved predictions pickle.

`gradcam_video` is the one-video Grad-CAM of tools/visualize.py.
"""
import logging
import os
import pickle
from typing import Optional, Sequence

import torch
from yacs.config import CfgNode

from vov3d.engine.checkpointer import Checkpointer
from vov3d.engine.input_step import InputStep
from vov3d.engine.metrics import evaluate
from vov3d.engine.runtime import device, prepare_model, setup_process, tensorboard_writer
from vov3d.utils import comm
from vov3d.utils.processes import per_process_batch

logger = logging.getLogger(__name__)


def one_view_loader(cfg: CfgNode):
    """The test split with one view per video (centre clip, centre crop), in list order."""
    from vov3d.datasets import build_dataset

    single = cfg.clone()
    single.defrost()
    single.TEST.NUM_ENSEMBLE_VIEWS, single.TEST.NUM_SPATIAL_CROPS = 1, 1
    dataset = build_dataset(cfg.TEST.DATASET, single, "test")
    return torch.utils.data.DataLoader(dataset, batch_size=per_process_batch(cfg, "test"), shuffle=False,
                                       num_workers=cfg.DATA_LOADER.NUM_WORKERS)


def plot_saved_predictions(cfg: CfgNode, writer, class_names: Optional[Sequence[str]]) -> None:
    """TENSORBOARD.PREDICTIONS_PATH: a [preds, labels] pickle (TEST.SAVE_RESULTS_PATH's format)
    plotted as a test; all-zero rows (videos that failed to load) are left out."""
    from vov3d.engine.evaluation import write_tensorboard

    path = cfg.TENSORBOARD.PREDICTIONS_PATH
    with open(path, "rb") as f:  # the user's own results file, named in the config
        preds, labels = (torch.as_tensor(x) for x in pickle.load(f))
    metrics, confusion = evaluate(preds.float(), labels.long(), failed=(preds == 0).all(dim=1))
    write_tensorboard(cfg, writer, "Predictions", metrics, confusion, class_names, 0)
    logger.info("Plotted the %d predictions of %s (top-1 %.2f%%).", metrics["num_videos"], path, metrics["top1_acc"])


def visualize(cfg: CfgNode) -> None:
    """Entry point for `launch_job`."""
    from vov3d.visualization.class_names import choose_class_names, default_names
    from vov3d.visualization.model_vis import ModelVisualizer

    setup_process(cfg)
    model = prepare_model(cfg, train=False)
    loader = one_view_loader(cfg)
    dataset = loader.dataset
    loaded = Checkpointer(cfg, model, class_names=dataset.class_names).resume_or_load("test")
    if not comm.is_root_proc():
        return
    known = choose_class_names(cfg, dataset.class_names, loaded.class_names)
    names = known or default_names(cfg.MODEL.NUM_CLASSES)
    writer = tensorboard_writer(cfg)
    if cfg.TENSORBOARD.PREDICTIONS_PATH:
        plot_saved_predictions(cfg, writer, known)
    vis = ModelVisualizer(cfg, model, writer, names, known, getattr(dataset, "channel_order", "rgb"))
    vis.write_weights()
    input_step, first = InputStep(cfg, device(cfg)), 0
    logger.info("Model visualisation of %d test videos (one centre clip each).", dataset.num_videos)
    for inputs, labels, _, meta in loader:
        clips = (inputs[0] if isinstance(inputs, (list, tuple)) else inputs)[:, 0]
        ok = ~meta["failed"].bool().reshape(-1)
        if ok.any():
            vis.write_batch(input_step.clips(clips[ok]), labels[ok], first)
        first += len(labels)
    vis.log_wrong_classes()
    writer.close()
    logger.info("Wrote %d TensorBoard images and videos to %s.", len(vis.tags), writer.log_dir)


def gradcam_video(cfg: CfgNode, checkpoint: str, video: str, out: str, label: Optional[str] = None) -> str:
    """Grad-CAM of one video: its test clip with the map of GRAD_CAM.LAYER_LIST (default s5)
    blended over it and the top-5 predictions, written as an animated GIF `out`."""
    from vov3d.engine.checkpoint_loading import load_for_test
    from vov3d.utils.checkpoint_io import read_checkpoint
    from vov3d.visualization.class_names import choose_class_names, default_names
    from vov3d.visualization.gradcam import GradCAM, overlay
    from vov3d.visualization.layers import grad_cam_layer
    from vov3d.visualization.tensorboard import encode_gif
    from vov3d.visualization.video import annotate, label_colors, prediction_lines, test_frames
    from vov3d.models import build_model

    frames, fps = test_frames(cfg, video)
    model = build_model(cfg)
    obj = read_checkpoint(checkpoint, unsafe=cfg.TEST.CHECKPOINT_UNSAFE_LOAD,
                          unsafe_setting="TEST.CHECKPOINT_UNSAFE_LOAD", source="--checkpoint")
    load_for_test(checkpoint, model, cfg, source="--checkpoint", obj=obj)
    names = choose_class_names(cfg, None, obj.get("class_names")) or default_names(cfg.MODEL.NUM_CLASSES)
    target = None if label is None else torch.tensor([class_index(label, names)])
    maps, preds = GradCAM(model, grad_cam_layer(cfg))(model_input(cfg, frames, device(cfg)), target)
    shown = overlay(frames, maps[0], cfg.TENSORBOARD.MODEL_VIS.GRAD_CAM.COLORMAP)
    explained = names[int(preds[0].argmax())] if target is None else names[int(target)]
    lines = [f"Grad-CAM: {explained}"] + prediction_lines(preds[0].cpu(), names, 5)
    frames_out = annotate(shown, lines, label_colors(len(lines), cfg.TENSORBOARD.MODEL_VIS.COLORMAP))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(encode_gif(frames_out, fps / cfg.DATA.SAMPLING_RATE if fps > 0 else 4.0))
    return out


def model_input(cfg: CfgNode, frames, dev: torch.device) -> torch.Tensor:
    """uint8 RGB frames [T, H, W, 3] -> the model input [1, 3, T, H, W] on `dev`, through the
    input step of training and testing."""
    clip = torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous()
    return InputStep(cfg, dev).clips(clip[None])


def class_index(label: str, names: Sequence[str]) -> int:
    """--label as a class index or a class name."""
    from vov3d.visualization.class_names import closest_names
    from vov3d.visualization.video import VideoInputError

    if label.isdigit() and int(label) < len(names):
        return int(label)
    if label in names:
        return list(names).index(label)
    raise VideoInputError(f"--label {label!r} is neither a class index below {len(names)} nor a class name; "
                          f"{closest_names(label, names)}.")
