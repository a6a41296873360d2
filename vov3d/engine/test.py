"""Multi-view testing: every video's K = NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS views are
forwarded, combined by TEST.ENSEMBLE_METHOD, and each video is counted exactly once
(also across ranks: per-video results are gathered, not per-clip tensors)."""
import json
import logging
import os
import pickle
from typing import Dict, List, Optional, Tuple

import torch
from yacs.config import CfgNode

from vov3d.engine import distributed as du
from vov3d.engine.checkpointer import Checkpointer
from vov3d.engine.evaluation import report_test
from vov3d.engine.input_step import InputStep
from vov3d.engine.logging import log_json_stats
from vov3d.engine.meters import Timer, VideoEnsembleMeter, format_eta
from vov3d.engine.metrics import ensemble_views, subset_hits, view_subsets
from vov3d.engine.preflight import results_path
from vov3d.engine.runtime import device, prepare_model, setup_process
from vov3d.utils import comm
from vov3d.utils.files import write_atomic
from vov3d.utils.processes import per_process_batch
from vov3d.utils.threads import governed

logger = logging.getLogger(__name__)


def forward_views(model: torch.nn.Module, clips: torch.Tensor, chunk: int, input_step: InputStep) -> torch.Tensor:
    """Eval-mode probabilities of uint8 [N, 3, T, H, W] clips, `chunk` clips per forward (each
    normalised on the device just before it); [N, C] on the CPU."""
    out = [model(input_step.inputs([clips[i:i + chunk]])).float().cpu() for i in range(0, clips.shape[0], chunk)]
    return torch.cat(out)


def _failed_flags(meta: Dict, batch: int) -> torch.Tensor:
    failed = meta.get("failed") if isinstance(meta, dict) else None
    return torch.zeros(batch, dtype=torch.bool) if failed is None else failed.bool().reshape(batch)


def _video_frames(meta: Dict, batch: int) -> torch.Tensor:
    """Frames each video holds, -1 where the loader does not say."""
    frames = meta.get("video_frames") if isinstance(meta, dict) else None
    return torch.full((batch,), -1, dtype=torch.int64) if frames is None else frames.long().reshape(batch)


# A video that holds fewer frames is a still image: every view of it is one frame repeated.
MIN_VIDEO_FRAMES = 2


@torch.no_grad()
def run_views(cfg: CfgNode, model: torch.nn.Module, loader) -> List[Tuple[torch.Tensor, ...]]:
    """This rank's per-video results: (indices, ensembled probs, labels, failed, frames held
    by each video, top-1/top-5 hits of every view subset) per batch."""
    model.eval()
    input_step = InputStep(cfg, device(cfg))
    chunk = per_process_batch(cfg, "test")
    subsets = view_subsets(cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS)
    results = []
    timer, iters = Timer(), len(loader)
    for it, (inputs, labels, index, meta) in enumerate(governed(loader)):
        views = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        batch, k = views.shape[:2]
        failed = _failed_flags(meta, batch)
        ok = (~failed).nonzero().flatten()
        video_probs = torch.zeros(batch, cfg.MODEL.NUM_CLASSES)
        hits = torch.zeros(batch, len(subsets), 2, dtype=torch.bool)
        if len(ok):
            # All readable (the usual case): slices of the (pinned) batch, no gathered copy.
            clips = views if len(ok) == batch else views[ok]
            view_probs = forward_views(model, clips.flatten(0, 1), chunk, input_step).reshape(len(ok), k, -1)
            video_probs[ok] = ensemble_views(view_probs, cfg.TEST.ENSEMBLE_METHOD)
            hits[ok] = subset_hits(view_probs, labels[ok], subsets, cfg.TEST.ENSEMBLE_METHOD)
        results.append((index.long().cpu(), video_probs, labels.long().cpu(), failed, _video_frames(meta, batch),
                        hits))
        if (it + 1) % cfg.LOG_PERIOD == 0 or it + 1 == iters:
            per_iter = timer.seconds() / (it + 1)
            log_json_stats({"split": "test_iter", "_type": "test_iter", "cur_iter": f"{it + 1}/{iters}",
                            "eta": format_eta(per_iter * (iters - it - 1)), "time_diff": per_iter})
    return results


def save_results(path: str, meter: VideoEnsembleMeter, dataset, summary: Dict,
                 video_frames: Optional[Dict[int, int]] = None) -> None:
    """Pickle [video_preds float [V, C], video_labels int64 [V]] (reference format, dataset
    order, zero rows for failed videos) and a readable JSON with top-5 per video beside it,
    flagging videos too short to be videos."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # Atomic: a job killed mid-write must not leave a truncated file that looks like a result.
    write_atomic(path, lambda f: pickle.dump([meter.preds, meter.labels], f), binary=True)
    k = min(5, meter.preds.shape[1])
    scores, classes = torch.topk(meter.preds, k, dim=1)
    failed = set(meter.failed_indices())
    name = getattr(dataset, "video_path", lambda i: str(i))
    frames = {i: n for i, n in (video_frames or {}).items() if n >= 0 and i not in failed}
    short = sorted(i for i, n in frames.items() if n < MIN_VIDEO_FRAMES)
    videos = [{"index": i, "path": name(i), "label": int(meter.labels[i]), "failed": i in failed,
               "video_frames": frames.get(i), "too_short": i in short,
               "top5_classes": [] if i in failed else classes[i].tolist(),
               "top5_scores": [] if i in failed else [round(s, 6) for s in scores[i].tolist()]}
              for i in range(len(meter.labels))]
    report = dict(summary, videos=videos, failed_videos=[name(i) for i in sorted(failed)],
                  too_short_videos=[name(i) for i in short])
    json_path = os.path.splitext(path)[0] + ".json"
    if json_path == path:
        json_path = path + ".json"
    write_atomic(json_path, lambda f: json.dump(report, f, indent=1), binary=False)
    logger.info("Saved predictions to %s and a per-video summary to %s.", path, json_path)


def _warn_too_short(video_frames: Dict[int, int], failed: set, name) -> None:
    short = sorted(i for i, n in video_frames.items() if 0 <= n < MIN_VIDEO_FRAMES and i not in failed)
    if short:
        logger.warning("%d test video(s) hold fewer than %d frames and were scored as still images (flagged "
                       "\"too_short\" in the results JSON): %s%s", len(short), MIN_VIDEO_FRAMES,
                       ", ".join(name(i) for i in short[:10]), " ..." if len(short) > 10 else "")


def test(cfg: CfgNode) -> Optional[Dict]:
    """Entry point for `launch_job`; returns the final metrics on global rank 0."""
    setup_process(cfg)
    out = results_path(cfg)
    logger.info("Test with config:\n%s", cfg.dump())
    model = prepare_model(cfg, train=False)

    from vov3d.datasets.loader import construct_loader

    loader = construct_loader(cfg, "test")
    dataset = loader.dataset
    loaded = Checkpointer(cfg, model, class_names=dataset.class_names).resume_or_load("test")
    views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    logger.info("Test protocol: %d videos x %d views (%d temporal clips x %d spatial crops of %d px), "
                "%d frames per clip, views combined by %s of softmax scores; %d clips per forward per process.",
                dataset.num_videos, views, cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS,
                cfg.DATA.TEST_CROP_SIZE, cfg.DATA.NUM_FRAMES, cfg.TEST.ENSEMBLE_METHOD,
                per_process_batch(cfg, "test"))
    local = run_views(cfg, model, loader)
    gathered = du.all_gather_object(local)
    if not comm.is_root_proc():
        return None

    meter = VideoEnsembleMeter(dataset.num_videos, cfg.MODEL.NUM_CLASSES, video_path=dataset.video_path,
                               subsets=view_subsets(cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS))
    video_frames = {}
    for rank_results in gathered:
        for indices, preds, labels, failed, frames, hits in rank_results:
            meter.add(indices, preds, labels, failed, hits)
            video_frames.update(zip(indices.tolist(), frames.tolist()))
    metrics = meter.finalize()
    failed_ids = meter.failed_indices()
    if failed_ids:
        name = getattr(dataset, "video_path", str)
        logger.warning("%d test video(s) could not be read and are excluded from the accuracy: %s%s",
                       len(failed_ids), ", ".join(name(i) for i in failed_ids[:10]),
                       " ..." if len(failed_ids) > 10 else "")
    summary = {"split": "test_final", "_type": "test_final",
               "top1_acc": f"{metrics['top1_acc']:.2f}", "top5_acc": f"{metrics['top5_acc']:.2f}",
               "mean_class_acc": f"{metrics['mean_class_acc']:.2f}",
               "num_videos": metrics["num_videos"], "num_failed": metrics["num_failed"],
               "views": views, "ensemble": cfg.TEST.ENSEMBLE_METHOD,
               "checkpoint": loaded.path or "random init",
               "checkpoint_epoch": None if loaded.epoch is None else loaded.epoch + 1}
    log_json_stats(summary)
    # With fewer than 5 classes "top-5" is top-all (100 %); say so rather than print a bare 100.
    top5 = "top-5" if cfg.MODEL.NUM_CLASSES >= 5 else f"top-5 (= top-{cfg.MODEL.NUM_CLASSES}, all classes)"
    logger.info("Test result: top-1 %.2f%%, %s %.2f%% over %d videos (%d views each, %d unreadable).",
                metrics["top1_acc"], top5, metrics["top5_acc"], metrics["num_videos"], views,
                metrics["num_failed"])
    _warn_too_short(video_frames, set(failed_ids), getattr(dataset, "video_path", str))
    if out is not None:
        save_results(out, meter, dataset, summary, video_frames)
    report_test(cfg, metrics, meter.confusion, dataset.class_names, loaded, summary)
    return metrics
