"""Classification losses for imbalanced FER data, all `loss(logits, targets) -> scalar`.

ce               cross-entropy (optional class weights, label smoothing)
focal            focal loss (Lin et al. 2017): CE scaled by (1 - p_t)**gamma, optional alpha weights
soft_f1          1 - mean over classes of a differentiable F1 from softmax probabilities
                 (study 003's proposal: optimise the metric rather than a proxy)
logit_adjusted   CE on logits + tau * log(prior) (Menon et al. 2021); predict with raw logits
balanced_softmax CE on logits + log(class count) (Ren et al. 2020): logit adjustment with tau=1
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

NAMES = ("ce", "focal", "soft_f1", "logit_adjusted", "balanced_softmax")
# the losses that take soft (N, K) targets (MixUp / CutMix) as well as class indices: those
# that are F.cross_entropy underneath; focal and soft_f1 index by the target class
SOFT_TARGETS = ("ce", "logit_adjusted", "balanced_softmax")


def _class_indices(targets: Tensor, loss: str) -> Tensor:
    if targets.ndim != 1:
        raise ValueError(f"the {loss} loss needs class indices, got targets of shape "
                         f"{tuple(targets.shape)} (soft targets from mixup/cutmix?); "
                         f"losses that take soft targets: {SOFT_TARGETS}")
    return targets


class FocalLoss(nn.Module):
    """Focal loss; `weight` plays the role of alpha. Mean is weighted like nn.CrossEntropyLoss."""

    def __init__(self, gamma: float = 2.0, weight: Tensor | None = None,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = float(gamma), float(label_smoothing)
        self.register_buffer("weight", None if weight is None else weight.float())

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        targets = _class_indices(targets, "focal")
        logp = F.log_softmax(logits.float(), dim=1)
        ce = F.cross_entropy(logits.float(), targets, reduction="none",
                             label_smoothing=self.label_smoothing)
        pt = logp.gather(1, targets[:, None]).squeeze(1).exp()
        loss = (1.0 - pt).pow(self.gamma) * ce
        if self.weight is None:
            return loss.mean()
        w = self.weight[targets]
        return (loss * w).sum() / w.sum().clamp_min(1e-12)


class SoftF1Loss(nn.Module):
    """1 - macro soft-F1: TP, FP, FN are sums of softmax probabilities over the batch.

    Averaged over the classes present in the batch (an absent class has TP = FN = 0, so its
    soft-F1 is 0 whatever the model does and would only shift the loss). `weight` gives a
    weighted mean over classes.
    """

    def __init__(self, weight: Tensor | None = None, eps: float = 1e-7):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", None if weight is None else weight.float())

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        p = F.softmax(logits.float(), dim=1)
        y = F.one_hot(_class_indices(targets, "soft_f1"), p.shape[1]).float()
        tp = (p * y).sum(0)
        fp = (p * (1 - y)).sum(0)
        fn = ((1 - p) * y).sum(0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)
        present = y.sum(0) > 0
        w = present.float() if self.weight is None else self.weight * present
        return 1.0 - (f1 * w).sum() / w.sum().clamp_min(1e-12)


class LogitAdjustedLoss(nn.Module):
    """CE on logits + tau * log(prior): the loss is Fisher-consistent for balanced error.

    With tau = 1 this is Balanced Softmax. Uniform priors add a constant per row: plain CE.
    """

    def __init__(self, class_counts: Tensor, tau: float = 1.0, weight: Tensor | None = None,
                 label_smoothing: float = 0.0):
        super().__init__()
        counts = torch.as_tensor(class_counts, dtype=torch.float32).clamp_min(1.0)  # no log(0)
        self.register_buffer("adjust", float(tau) * torch.log(counts / counts.sum()))
        self.register_buffer("weight", None if weight is None else weight.float())
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.float() + self.adjust, targets, weight=self.weight,
                               label_smoothing=self.label_smoothing)


class CrossEntropy(nn.Module):
    """nn.CrossEntropyLoss computed in float32 (AMP-safe)."""

    def __init__(self, weight: Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", None if weight is None else weight.float())
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), targets, weight=self.weight,
                               label_smoothing=self.label_smoothing)


def class_counts(labels: Tensor | Sequence[int], num_classes: int) -> Tensor:
    """Count of each class index in labels (length num_classes)."""
    return torch.bincount(torch.as_tensor(labels).long().flatten(), minlength=num_classes).float()


def balanced_weights(counts: Tensor) -> Tensor:
    """sklearn's 'balanced' weights n / (K * count); a class with no samples gets weight 0."""
    counts = torch.as_tensor(counts, dtype=torch.float32)
    present = counts > 0
    k = int(present.sum())
    w = torch.zeros_like(counts)
    w[present] = counts.sum() / (k * counts[present])
    return w


def make_loss(name: str, class_counts: Tensor | None = None, weights: Tensor | None = None,
              label_smoothing: float = 0.0, gamma: float = 2.0, tau: float = 1.0) -> nn.Module:
    """Build a loss by name; `class_counts` is required by the prior-based losses."""
    if name == "ce":
        return CrossEntropy(weights, label_smoothing)
    if name == "focal":
        return FocalLoss(gamma, weights, label_smoothing)
    if name == "soft_f1":
        if label_smoothing:
            raise ValueError("label smoothing is not defined for soft_f1")
        return SoftF1Loss(weights)
    if name in ("logit_adjusted", "balanced_softmax"):
        if class_counts is None:
            raise ValueError(f"loss {name!r} needs class_counts (the training label counts)")
        return LogitAdjustedLoss(class_counts, 1.0 if name == "balanced_softmax" else tau,
                                 weights, label_smoothing)
    raise ValueError(f"unknown loss {name!r}; choose from {NAMES}")
