"""Training losses by MODEL.LOSS_FUNC, all with mean reduction.

Integer class labels are turned into one-hot targets for the losses that need a
distribution (soft_cross_entropy, bce, bce_logit), so the same loaders serve all four.
"""
from typing import Callable

import torch
import torch.nn.functional as F


def _as_targets(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.dtype in (torch.int64, torch.int32) and labels.ndim == 1:
        return F.one_hot(labels, num_classes=logits.shape[1]).to(logits.dtype)
    return labels.to(logits.dtype)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Against class indices, or against class distributions (mixup / label smoothing)."""
    if labels.is_floating_point():
        labels = labels.to(logits.dtype)
    return F.cross_entropy(logits, labels)


def soft_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a target distribution per sample (e.g. mixup targets)."""
    targets = _as_targets(logits, labels)
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def bce(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on probabilities (the model must end in a sigmoid)."""
    return F.binary_cross_entropy(probs, _as_targets(probs, labels))


def bce_logit(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, _as_targets(logits, labels))


_LOSSES = {f.__name__: f for f in (cross_entropy, soft_cross_entropy, bce, bce_logit)}


def get_loss_func(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return _LOSSES[name]
    except KeyError:
        raise NotImplementedError(f"Unknown loss {name!r} (MODEL.LOSS_FUNC); known: "
                                  f"{', '.join(_LOSSES)}.") from None
