"""Classification metrics as pure functions of score and label tensors: top-k, the confusion
matrix, per-class and mean class accuracy, and the multi-view gain of a test.

Ties are broken one way everywhere: among equal scores the lower class index ranks first
(numpy's and torch's argmax do the same), so top-1, the confusion matrix and the
multi-view table always agree with each other.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch


def label_ranks(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0-based rank of each sample's label among its scores [N, C] (0 = the top-1 class)."""
    labels = labels.long().reshape(-1, 1)
    own = scores.gather(1, labels)
    ahead = (scores > own).sum(dim=1)
    lower = torch.arange(scores.shape[1], device=scores.device).reshape(1, -1) < labels
    return ahead + ((scores == own) & lower).sum(dim=1)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> List[torch.Tensor]:
    """Per k, how many samples have their label among the k highest scores."""
    ranks = label_ranks(scores, labels)
    return [(ranks < k).sum().float() for k in ks]


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [C, C] counts: row = true class, column = predicted class."""
    index = labels.long().reshape(-1) * num_classes + predicted.long().reshape(-1)
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def predicted_classes(scores: torch.Tensor) -> torch.Tensor:
    """The top-1 class of each row (the lowest index among tied maxima)."""
    return scores.argmax(dim=1)


def class_accuracy(confusion: torch.Tensor) -> Dict:
    """Support, correct count and accuracy (%) per class from a confusion matrix, and the mean
    class accuracy over the classes that have test samples (a class without support has no
    accuracy: it is listed, not counted as 0 %)."""
    support = confusion.sum(dim=1)
    correct = confusion.diagonal()
    present = support > 0
    accuracy = [100.0 * c / s if s else None for c, s in zip(correct.tolist(), support.tolist())]
    mean = (100.0 * (correct[present].double() / support[present].double()).mean().item()
            if bool(present.any()) else float("nan"))
    return {"support": support.tolist(), "correct": correct.tolist(), "accuracy": accuracy,
            "mean_class_acc": mean, "classes_without_support": (~present).nonzero().flatten().tolist()}


def ensemble_views(view_probs: torch.Tensor, method: str) -> torch.Tensor:
    """Combine the views of each video: [B, K, C] -> [B, C] by "sum" or "max"."""
    if method == "sum":
        return view_probs.sum(dim=1)
    if method == "max":
        return view_probs.max(dim=1).values
    raise NotImplementedError(f"Unknown TEST.ENSEMBLE_METHOD {method!r}; expected 'sum' or 'max'.")


# ------------------------------------------------------------------------------------
# Multi-view gain
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewSubset:
    """`temporal` clips x `spatial` crops of a video's K views; `views` are their indices
    (view v = temporal index * NUM_SPATIAL_CROPS + spatial index)."""
    temporal: int
    spatial: int
    views: Tuple[int, ...]


def spread(count: int, total: int) -> List[int]:
    """`count` of `total` evenly spaced positions: the middle one of each of `count` equal
    parts (1 of 10 -> 5, 2 of 10 -> 2, 7; `total` of `total` -> all)."""
    return [(2 * i + 1) * total // (2 * count) for i in range(count)]


def view_subsets(num_temporal: int, num_spatial: int) -> List[ViewSubset]:
    """Every temporal x spatial subset a test can score from the views it computed: 1..T
    evenly spread temporal clips, each with the centre crop alone and (with 3 crops) with
    all crops. The last subset is the full ensemble, with the views in their test order."""
    crops = [(1, [num_spatial // 2])] + ([(num_spatial, list(range(num_spatial)))] if num_spatial > 1 else [])
    return [ViewSubset(t, s, tuple(c * num_spatial + x for c in spread(t, num_temporal) for x in chosen))
            for t in range(1, num_temporal + 1) for s, chosen in crops]


def subset_hits(view_probs: torch.Tensor, labels: torch.Tensor, subsets: Sequence[ViewSubset],
                method: str, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """bool [B, len(subsets), len(ks)]: whether each video's label is in the top-k of the
    ensemble of each subset of its views [B, K, C]."""
    batch, k_views, num_classes = view_probs.shape
    full = tuple(range(k_views))
    if method == "sum":  # every subset's sum in one product with a 0/1 selection matrix
        select = torch.zeros(len(subsets), k_views, dtype=view_probs.dtype, device=view_probs.device)
        for j, subset in enumerate(subsets):
            select[j, list(subset.views)] = 1
        scores = torch.matmul(select, view_probs)  # [S, K] @ [B, K, C] -> [B, S, C]
    else:
        scores = torch.stack([ensemble_views(view_probs[:, list(s.views)], method) for s in subsets], dim=1)
    for j, subset in enumerate(subsets):
        if subset.views == full:  # bit for bit the test's own ensemble
            scores[:, j] = ensemble_views(view_probs, method)
    ranks = label_ranks(scores.reshape(-1, num_classes), labels.reshape(-1, 1).expand(batch, len(subsets)).reshape(-1))
    ranks = ranks.reshape(batch, len(subsets), 1).cpu()
    return ranks < torch.tensor(list(ks)).reshape(1, 1, -1)


def multiview_gain(hits: torch.Tensor, subsets: Sequence[ViewSubset], ks: Sequence[int] = (1, 5)) -> List[Dict]:
    """Accuracy (%) of every subset from the hits [N, len(subsets), len(ks)] of N scored videos."""
    counts, n = hits.sum(dim=0).tolist(), len(hits)
    # The same arithmetic as evaluate's top-k, so the full-set row equals the test's numbers.
    return [dict({"temporal_clips": s.temporal, "spatial_crops": s.spatial, "views": len(s.views)},
                 **{f"top{k}_acc": 100.0 * float(counts[j][i]) / n if n else float("nan") for i, k in enumerate(ks)})
            for j, s in enumerate(subsets)]


# ------------------------------------------------------------------------------------
# One evaluation
# ------------------------------------------------------------------------------------
def evaluate(scores: torch.Tensor, labels: torch.Tensor, failed: Optional[torch.Tensor] = None,
             ks: Sequence[int] = (1, 5)) -> Tuple[Dict, torch.Tensor]:
    """(metrics, confusion matrix) of per-video scores [V, C]; failed videos are left out
    and counted."""
    failed = torch.zeros(len(labels), dtype=torch.bool) if failed is None else failed.bool()
    ok = ~failed
    scores, labels = scores[ok], labels[ok].long()
    count = len(labels)
    correct = topk_correct(scores, labels, ks)
    confusion = confusion_matrix(predicted_classes(scores), labels, scores.shape[1])
    per_class = class_accuracy(confusion)
    out = {f"top{k}_acc": 100.0 * float(c) / count if count else float("nan") for k, c in zip(ks, correct)}
    out.update(mean_class_acc=per_class.pop("mean_class_acc"), num_videos=count,
               num_failed=int(failed.sum()), per_class=per_class)
    return out, confusion
