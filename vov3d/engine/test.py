"""Multi-view testing: every video's K = NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS views are
forwarded, combined by TEST.ENSEMBLE_METHOD, and each video is counted exactly once
(also across ranks: per-video results are gathered, not per-clip tensors)."""
import json
import logging
import os
import pickle
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from yacs.config import CfgNode

from vov3d.config.merge import ConfigError
from vov3d.engine import checkpoint as cu
from vov3d.engine import distributed as du
from vov3d.engine.logging import log_json_stats
from vov3d.engine.meters import Timer, VideoEnsembleMeter, ensemble_views, format_eta
from vov3d.engine.runtime import device, prepare_model, setup_process, to_device
from vov3d.utils.files import write_atomic
from vov3d.utils.processes import per_process_batch
from vov3d.utils.threads import governed

logger = logging.getLogger(__name__)


class NoCheckpointError(cu.CheckpointError):
    """Testing was asked for, but there are no weights to test."""


def _choose(cfg: CfgNode) -> Tuple[Optional[str], str, Optional[Dict]]:
    """The checkpoint to test: TEST.CHECKPOINT_FILE_PATH > newest readable OUTPUT_DIR/checkpoints
    file > TRAIN.CHECKPOINT_FILE_PATH, as (path or None, the setting it came from, the file's
    contents when already read)."""
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        return cfg.TEST.CHECKPOINT_FILE_PATH, "TEST.CHECKPOINT_FILE_PATH", None
    path, obj = cu.newest_readable(cfg.OUTPUT_DIR, unsafe=cfg.TEST.CHECKPOINT_UNSAFE_LOAD)
    if path is not None:
        return path, "checkpoint", obj
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        logger.warning("No checkpoint in %s and TEST.CHECKPOINT_FILE_PATH is empty: testing the "
                       "initialisation file TRAIN.CHECKPOINT_FILE_PATH %s.", cu.checkpoint_dir(cfg.OUTPUT_DIR),
                       cfg.TRAIN.CHECKPOINT_FILE_PATH)
        return cfg.TRAIN.CHECKPOINT_FILE_PATH, "TRAIN.CHECKPOINT_FILE_PATH", None
    return None, "", None


def load_test_weights(cfg: CfgNode, model: torch.nn.Module, class_names: Optional[Sequence[str]] = None
                      ) -> Tuple[Optional[str], Optional[int]]:
    """Strictly load the chosen checkpoint; refuse random weights unless TEST.ALLOW_RANDOM_INIT."""
    path = source = obj = error = None
    if du.is_root_proc():
        try:
            path, source, obj = _choose(cfg)
        except cu.CheckpointError as e:
            error = e
    # Rank 0 alone looks at OUTPUT_DIR; its verdict (or error) is shared so no rank waits
    # in a collective for a peer that already failed.
    path, source, error = du.broadcast_object((path, source, error))
    if error is not None:
        raise error
    if path is None:
        if not cfg.TEST.ALLOW_RANDOM_INIT:
            broken = cu.list_checkpoints(cfg.OUTPUT_DIR)
            held = (f"holds {len(broken)} checkpoint(s), none readable (see the errors above)" if broken
                    else "holds no checkpoint")
            raise NoCheckpointError(
                f"no checkpoint to test: TEST.CHECKPOINT_FILE_PATH is empty, "
                f"{cu.checkpoint_dir(cfg.OUTPUT_DIR)} {held} and TRAIN.CHECKPOINT_FILE_PATH is "
                "empty. Set TEST.CHECKPOINT_FILE_PATH, or TEST.ALLOW_RANDOM_INIT True to test random weights.")
        logger.warning("!!! Testing a RANDOMLY INITIALISED model (TEST.ALLOW_RANDOM_INIT True). !!!")
        return None, None
    epoch = cu.load_for_test(path, model, cfg, source=source, obj=obj, class_names=class_names)
    logger.info("Testing weights from %s%s.", path, f" (epoch {epoch + 1})" if epoch is not None else "")
    return path, epoch


def forward_views(model: torch.nn.Module, clips: torch.Tensor, chunk: int, dev: torch.device) -> torch.Tensor:
    """Eval-mode probabilities of [N, 3, T, H, W] clips, `chunk` clips per forward; [N, C] on the CPU."""
    out = [model([to_device(clips[i:i + chunk], dev)]).float().cpu() for i in range(0, clips.shape[0], chunk)]
    return torch.cat(out)


def _failed_flags(meta: Dict, batch: int) -> torch.Tensor:
    failed = meta.get("failed") if isinstance(meta, dict) else None
    return torch.zeros(batch, dtype=torch.bool) if failed is None else failed.bool().reshape(batch)


@torch.no_grad()
def run_views(cfg: CfgNode, model: torch.nn.Module, loader) -> List[Tuple[torch.Tensor, ...]]:
    """This rank's per-video results: (indices, ensembled probs, labels, failed) per batch."""
    model.eval()
    dev = device(cfg)
    chunk = per_process_batch(cfg, "test")
    results = []
    timer, iters = Timer(), len(loader)
    for it, (inputs, labels, index, meta) in enumerate(governed(loader)):
        views = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        batch, k = views.shape[:2]
        failed = _failed_flags(meta, batch)
        ok = (~failed).nonzero().flatten()
        video_probs = torch.zeros(batch, cfg.MODEL.NUM_CLASSES)
        if len(ok):
            probs = forward_views(model, views[ok].flatten(0, 1), chunk, dev)
            video_probs[ok] = ensemble_views(probs.reshape(len(ok), k, -1), cfg.TEST.ENSEMBLE_METHOD)
        results.append((index.long().cpu(), video_probs, labels.long().cpu(), failed))
        if (it + 1) % cfg.LOG_PERIOD == 0 or it + 1 == iters:
            per_iter = timer.seconds() / (it + 1)
            log_json_stats({"split": "test_iter", "_type": "test_iter", "cur_iter": f"{it + 1}/{iters}",
                            "eta": format_eta(per_iter * (iters - it - 1)), "time_diff": per_iter})
    return results


def save_results(path: str, meter: VideoEnsembleMeter, dataset, summary: Dict) -> None:
    """Pickle [video_preds float [V, C], video_labels int64 [V]] (reference format, dataset
    order, zero rows for failed videos) and a readable JSON with top-5 per video beside it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # Atomic: a job killed mid-write must not leave a truncated file that looks like a result.
    write_atomic(path, lambda f: pickle.dump([meter.preds, meter.labels], f), binary=True)
    k = min(5, meter.preds.shape[1])
    scores, classes = torch.topk(meter.preds, k, dim=1)
    failed = set(meter.failed_indices())
    name = getattr(dataset, "video_path", lambda i: str(i))
    videos = [{"index": i, "path": name(i), "label": int(meter.labels[i]), "failed": i in failed,
               "top5_classes": [] if i in failed else classes[i].tolist(),
               "top5_scores": [] if i in failed else [round(s, 6) for s in scores[i].tolist()]}
              for i in range(len(meter.labels))]
    report = dict(summary, videos=videos, failed_videos=[name(i) for i in sorted(failed)])
    json_path = os.path.splitext(path)[0] + ".json"
    if json_path == path:
        json_path = path + ".json"
    write_atomic(json_path, lambda f: json.dump(report, f, indent=1), binary=False)
    logger.info("Saved predictions to %s and a per-video summary to %s.", path, json_path)


def results_path(cfg: CfgNode) -> Optional[str]:
    """Where TEST.SAVE_RESULTS_PATH (relative to OUTPUT_DIR) puts the predictions, checked
    before the test runs so that a directory given by mistake costs no test."""
    out = cfg.TEST.SAVE_RESULTS_PATH
    if not out:
        return None
    out = out if os.path.isabs(out) else os.path.join(cfg.OUTPUT_DIR, out)
    if out.endswith(os.sep) or os.path.isdir(out):
        raise ConfigError(f"TEST.SAVE_RESULTS_PATH {cfg.TEST.SAVE_RESULTS_PATH!r} is a directory; expected "
                          "a file name such as preds.pkl (a per-video JSON is written beside it).")
    return out


def test(cfg: CfgNode) -> Optional[Dict]:
    """Entry point for `launch_job`; returns the final metrics on global rank 0."""
    setup_process(cfg)
    out = results_path(cfg)
    logger.info("Test with config:\n%s", cfg.dump())
    model = prepare_model(cfg, train=False)

    from vov3d.datasets.loader import construct_loader

    loader = construct_loader(cfg, "test")
    dataset = loader.dataset
    path, epoch = load_test_weights(cfg, model, dataset.class_names)
    views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    logger.info("Test protocol: %d videos x %d views (%d temporal clips x %d spatial crops of %d px), "
                "%d frames per clip, views combined by %s of softmax scores; %d clips per forward per process.",
                dataset.num_videos, views, cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS,
                cfg.DATA.TEST_CROP_SIZE, cfg.DATA.NUM_FRAMES, cfg.TEST.ENSEMBLE_METHOD,
                per_process_batch(cfg, "test"))
    local = run_views(cfg, model, loader)
    gathered = du.all_gather_object(local)
    if not du.is_root_proc():
        return None

    meter = VideoEnsembleMeter(dataset.num_videos, cfg.MODEL.NUM_CLASSES, video_path=dataset.video_path)
    for rank_results in gathered:
        for indices, preds, labels, failed in rank_results:
            meter.add(indices, preds, labels, failed)
    metrics = meter.finalize()
    failed_ids = meter.failed_indices()
    if failed_ids:
        name = getattr(dataset, "video_path", str)
        logger.warning("%d test video(s) could not be read and are excluded from the accuracy: %s%s",
                       len(failed_ids), ", ".join(name(i) for i in failed_ids[:10]),
                       " ..." if len(failed_ids) > 10 else "")
    summary = {"split": "test_final", "_type": "test_final",
               "top1_acc": f"{metrics['top1_acc']:.2f}", "top5_acc": f"{metrics['top5_acc']:.2f}",
               "num_videos": metrics["num_videos"], "num_failed": metrics["num_failed"],
               "views": views, "ensemble": cfg.TEST.ENSEMBLE_METHOD,
               "checkpoint": path or "random init", "checkpoint_epoch": None if epoch is None else epoch + 1}
    log_json_stats(summary)
    # With fewer than 5 classes "top-5" is top-all (100 %); say so rather than print a bare 100.
    top5 = "top-5" if cfg.MODEL.NUM_CLASSES >= 5 else f"top-5 (= top-{cfg.MODEL.NUM_CLASSES}, all classes)"
    logger.info("Test result: top-1 %.2f%%, %s %.2f%% over %d videos (%d views each, %d unreadable).",
                metrics["top1_acc"], top5, metrics["top5_acc"], metrics["num_videos"], views,
                metrics["num_failed"])
    if out is not None:
        save_results(out, meter, dataset, summary)
    return metrics
