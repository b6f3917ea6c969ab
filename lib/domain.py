"""Cross-dataset evaluation and adaptation.

Two datasets share canonical labels (lib.labels), so their label mapping is the intersection
of their classes. A source model is scored on a target over the shared classes only: its
probabilities are restricted to those classes and renormalised (the same as a softmax over the
shared classes' logits), and target images of other classes are excluded and counted.

    ev = domain.evaluate_on(model, target_test, source_classes, bootstrap=1000)
    adapted = domain.adabn(model, target_train)                # BN statistics of the target
    tuned, hist = domain.few_shot(model, source_classes, target_train, target_val, k=5,
                                  mode="head", cfg=train.Config(...), seed=0)

Only the target's train (unlabelled for AdaBN; k labelled per class for few-shot) and val
splits are used for adaptation; its test split is for scoring.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib import labels, metrics, train

MODES = ("head", "whole")
NAMED = ("fer2013", "facial_expressions", "six_emotions", "ckplus48")  # cross-dataset set


# ---------------------------------------------------------------- datasets -----------
def present_datasets(exclude: str | None = None, names: Sequence[str] = NAMED
                     ) -> tuple[list[str], dict[str, str]]:
    """The named datasets found under the data root (minus `exclude`), and why the others
    are missing (the first sentence of data.DatasetNotFound)."""
    from lib import data

    present, missing = [], {}
    for n in names:
        if n == exclude:
            continue
        try:
            data.resolve(n)
            present.append(n)
        except data.DatasetNotFound as e:
            missing[n] = str(e).split(". ")[0]
    return present, missing


def load_target(name: str, size: int, channels: int, max_per_class: int | None = None,
                seed: int = 0, splits: Sequence[str] = ("test",),
                caps: Mapping[str, int | None] | None = None) -> dict:
    """{split: ImageTensors} of a dataset's shared split file; `caps` limits images per class
    of a split (data.subsample, seeded) on top of `max_per_class`."""
    from lib import data

    s = data.load_splits(name, max_per_class=max_per_class, seed=seed)
    out = {}
    for sp in splits:
        rows = s[sp]
        cap = (caps or {}).get(sp)
        if cap is not None:
            rows = data.subsample(rows, cap, seed)
        out[sp] = data.ImageTensors(rows, size=size, channels=channels, classes=s.classes)
    return out


# ---------------------------------------------------------------- label mapping ------
def shared_classes(source: Sequence[str], target: Sequence[str]) -> list[str]:
    """Classes present in both, in canonical order (raises on non-canonical names)."""
    src, tgt = labels.canonicalize(source), labels.canonicalize(target)
    return labels.ordered(set(src) & set(tgt))


def mapping_table(source_classes: Sequence[str], target_classes: Sequence[str],
                  source: str = "source", target: str = "target",
                  target_counts: Mapping[str, int] | None = None) -> pd.DataFrame:
    """One row per class of either dataset: present in source / target, and what happens to it
    (scored, excluded from the target, or never predicted), with target image counts."""
    src, tgt = set(source_classes), set(target_classes)
    rows = []
    for c in labels.ordered(src | tgt):
        status = ("shared: scored" if c in src and c in tgt else
                  "target only: images excluded" if c in tgt else "source only: logit dropped")
        row = {"class": c, source: c in src, target: c in tgt, "status": status}
        if target_counts is not None:
            row[f"{target} images"] = int(target_counts.get(c, 0))
        rows.append(row)
    return pd.DataFrame(rows)


def restrict_probs(probs: np.ndarray, classes: Sequence[str], shared: Sequence[str]) -> np.ndarray:
    """Columns of `shared` (in that order), renormalised per row: equal to the softmax of the
    logits restricted to the shared classes."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs of shape {probs.shape} for {len(classes)} classes")
    missing = [c for c in shared if c not in classes]
    if missing or not shared:
        raise ValueError(f"shared classes {list(shared)} not all in {list(classes)}")
    p = probs[:, [list(classes).index(c) for c in shared]]
    total = p.sum(1, keepdims=True)
    # a row with no mass on any shared class (only possible with exact zeros): uniform
    return np.where(total > 0, p / np.where(total > 0, total, 1), 1.0 / len(shared))


@dataclass
class Subset:
    """Images and labels of some classes of a dataset, relabelled to `classes` indices."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    excluded: dict[str, int] = field(default_factory=dict)  # class -> images left out
    index: np.ndarray | None = None  # positions in the original dataset

    def __len__(self) -> int:
        return len(self.labels)


def restrict(ds, shared: Sequence[str]) -> Subset:
    """The images of `ds` whose class is in `shared`, labels re-indexed into `shared`;
    the others are counted per class in `.excluded`."""
    classes, y = list(ds.classes), torch.as_tensor(ds.labels).long()
    unknown = [c for c in shared if c not in classes]
    if unknown:
        raise ValueError(f"classes {unknown} are not in the dataset's {classes}")
    remap = torch.full((len(classes),), -1, dtype=torch.long)
    for j, c in enumerate(shared):
        remap[classes.index(c)] = j
    new = remap[y]
    keep = new >= 0
    counts = torch.bincount(y[~keep], minlength=len(classes)).tolist()
    excluded = {c: int(n) for c, n in zip(classes, counts) if n}
    idx = torch.nonzero(keep).flatten()
    return Subset(ds.images[idx], new[idx], list(shared), excluded, idx.numpy())


def per_class(ds, max_per_class: int, seed: int = 0) -> Subset:
    """At most `max_per_class` images of each class (a seeded random choice, e.g. the k-shot
    set); classes with fewer images give all they have (see `.excluded` for what was left)."""
    y = torch.as_tensor(ds.labels).long()
    rng = np.random.default_rng(seed)
    idx = []
    for j in range(len(ds.classes)):
        pos = np.flatnonzero(y.numpy() == j)
        idx.extend(rng.permutation(pos)[:max_per_class].tolist())
    idx = np.sort(np.asarray(idx, dtype=np.int64))
    left = torch.bincount(y, minlength=len(ds.classes)) - torch.bincount(
        y[idx], minlength=len(ds.classes))
    return Subset(ds.images[idx], y[idx], list(ds.classes),
                  {c: int(n) for c, n in zip(ds.classes, left.tolist()) if n}, idx)


# ---------------------------------------------------------------- scoring ------------
@dataclass
class CrossEval:
    """A model scored on a (target) dataset over the classes it shares with the source."""

    shared: list[str]
    report: dict
    probs: np.ndarray
    labels: np.ndarray
    excluded: dict[str, int]

    @property
    def n_excluded(self) -> int:
        return int(sum(self.excluded.values()))


def score_probs(probs: np.ndarray, prob_classes: Sequence[str], ds, bootstrap: int = 0,
                seed: int = 0, classes: Sequence[str] | None = None) -> CrossEval:
    """Score probabilities over `prob_classes` (one row per image of ds) on the classes shared
    with ds (and with `classes` when given): other classes' images excluded, other classes'
    probabilities dropped."""
    shared = shared_classes(prob_classes, ds.classes)
    if classes is not None:
        shared = [c for c in shared if c in set(labels.canonicalize(classes))]
    if not shared:
        raise ValueError(f"no class in common between {list(prob_classes)} and {list(ds.classes)}")
    sub = restrict(ds, shared)
    if len(sub) == 0:
        raise ValueError(f"no images of the shared classes {shared} in this dataset")
    p = restrict_probs(np.asarray(probs)[sub.index], prob_classes, shared)
    y = sub.labels.numpy()
    rep = metrics.evaluate(y, p, shared, bootstrap=bootstrap, seed=seed)
    return CrossEval(shared, rep, p, y, sub.excluded)


def evaluate_on(model: nn.Module, ds, source_classes: Sequence[str], bootstrap: int = 0,
                seed: int = 0, tta: bool = False, classes: Sequence[str] | None = None) -> CrossEval:
    """Predict `ds` with a model trained on `source_classes`, score over the shared classes
    (and only `classes` when given)."""
    return score_with(lambda sub: train.predict_proba(model, sub, tta=tta), source_classes, ds,
                      bootstrap, seed, classes)


def score_with(predict, prob_classes: Sequence[str], ds, bootstrap: int = 0, seed: int = 0,
               classes: Sequence[str] | None = None) -> CrossEval:
    """score_probs for a `predict(subset) -> (n, len(prob_classes))` function called only on
    the images that are scored (predicting excluded classes would be wasted time)."""
    shared = shared_classes(prob_classes, ds.classes)
    if classes is not None:
        shared = [c for c in shared if c in set(labels.canonicalize(classes))]
    if not shared:
        raise ValueError(f"no class in common between {list(prob_classes)} and {list(ds.classes)}")
    sub = restrict(ds, shared)
    probs = np.full((len(ds.labels), len(prob_classes)), 1.0 / len(prob_classes))
    if len(sub):
        probs[sub.index] = predict(sub)
    return score_probs(probs, prob_classes, ds, bootstrap, seed, classes)


def class_drop(in_domain: pd.DataFrame, out_domain: pd.DataFrame, metric: str = "f1") -> pd.DataFrame:
    """Per-class `metric` in and out of domain (per_class tables, several seeds allowed: means)
    and the drop in - out, for the classes in both."""
    a = in_domain.groupby("class", sort=False)[metric].mean().rename("in_domain")
    b = out_domain.groupby("class", sort=False)[metric].mean().rename("out_of_domain")
    out = pd.concat([a, b], axis=1, join="inner")
    out["drop"] = out["in_domain"] - out["out_of_domain"]
    return out.reset_index()


# ---------------------------------------------------------------- AdaBN --------------
def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adabn(model: nn.Module, ds, batch_size: int = 256, max_images: int | None = 2000,
          seed: int = 0) -> nn.Module:
    """A copy of `model` whose BatchNorm running statistics are recomputed on `ds`'s images
    (labels unused; Li et al. 2016). Everything else in eval mode, so dropout does not
    distort the statistics; cumulative averages over at most `max_images` images."""
    from lib import models  # lazily: models imports timm

    out = copy.deepcopy(model)
    bns = batchnorms(out)
    if not bns:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer: AdaBN does not apply")
    dev, cl = train._model_flags(out)
    images = ds.images
    if max_images is not None and len(images) > max_images:
        g = torch.Generator().manual_seed(seed)
        images = images[torch.randperm(len(images), generator=g)[:max_images]]
    out.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs by its count
        bn.train()
    for i in range(0, len(images), batch_size):
        xb = images[i:i + batch_size]
        if len(xb) < 2:
            break  # one image gives no variance
        out(models.preprocess(xb, out.fer_cfg, dev, channels_last=cl))
    out.eval()
    return out


# ---------------------------------------------------------------- few-shot -----------
class FrozenBN(nn.Module):
    """A BatchNorm that always normalises with its stored running statistics (training
    mode included), so tiny few-shot batches cannot corrupt them; affine kept trainable."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.eps = bn.eps
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean.clone())
        self.register_buffer("running_var", bn.running_var.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def classifier_name(model: nn.Module) -> str:
    """Name of the final nn.Linear (the classification head) of a model."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head")
    k = getattr(model, "fer_cfg", {}).get("num_classes")
    last = names[-1]
    if k is not None and model.get_submodule(last).out_features != k:
        raise ValueError(f"last Linear {last!r} has {model.get_submodule(last).out_features} "
                         f"outputs, model has {k} classes")
    return last


def head_for(model: nn.Module, classes: Sequence[str], shared: Sequence[str]) -> nn.Module:
    """A copy of `model` whose head outputs only the `shared` classes (their rows of the final
    Linear): its softmax equals restrict_probs of the full model's."""
    out = copy.deepcopy(model)
    name = classifier_name(out)
    old = out.get_submodule(name)
    rows = torch.tensor([list(classes).index(c) for c in shared])
    new = nn.Linear(old.in_features, len(shared), bias=old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        new.weight.copy_(old.weight[rows])
        if old.bias is not None:
            new.bias.copy_(old.bias[rows])
    _set_module(out, name, new)
    if hasattr(out, "fer_cfg"):
        out.fer_cfg = {**out.fer_cfg, "num_classes": len(shared)}
    return out


def prepare_finetune(model: nn.Module, mode: str) -> nn.Module:
    """In place: BatchNorms frozen at their statistics; mode 'head' trains only the final
    Linear, 'whole' every parameter."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}; choose from {MODES}")
    for n, m in list(model.named_modules()):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            _set_module(model, n, FrozenBN(m))
    head = classifier_name(model)
    for n, p in model.named_parameters():
        p.requires_grad = mode == "whole" or n.startswith(head + ".")
    return model


def few_shot(model: nn.Module, source_classes: Sequence[str], target_train, target_val, k: int,
             mode: str, cfg: train.Config, seed: int = 0) -> tuple[nn.Module, pd.DataFrame, dict]:
    """Fine-tune a copy of a source model on k labelled target images per shared class (from
    target_train), early stopping on at most k per class from target_val.

    Returns (model over the shared classes, History, info with n_train, n_val, shared and
    the classes that had fewer than k images)."""
    shared = shared_classes(source_classes, target_train.classes)
    if not shared:
        raise ValueError("source and target share no class")
    tr = per_class(restrict(target_train, shared), k, seed)
    va = per_class(restrict(target_val, shared), k, seed + 1)
    short = {c: int(n) for c, n in zip(shared, torch.bincount(tr.labels, minlength=len(shared)))
             if n < k}
    if len(tr) < 2:
        raise ValueError(f"only {len(tr)} labelled target image(s) for k={k}")
    net = prepare_finetune(head_for(model, source_classes, shared), mode)
    has_val = len(va) > 0
    cfg = replace(cfg, seed=seed, batch_size=min(cfg.batch_size, len(tr)),
                  patience=cfg.patience if has_val else None,
                  schedule="cosine" if cfg.schedule == "plateau" and not has_val else cfg.schedule)
    hist = train.fit(net, tr, va if has_val else None, cfg)
    info = dict(k=k, mode=mode, n_train=len(tr), n_val=len(va), shared=shared, short=short)
    return net, hist, info
