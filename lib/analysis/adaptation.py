"""Adapting a source model to a target dataset: AdaBN and few-shot fine-tuning.

    adapted = adaptation.adabn(model, target_train)                # BN statistics of the target
    tuned, hist, info = adaptation.few_shot(model, source_classes, target_train, target_val,
                                            k=5, mode="head", cfg=train.Config(...), seed=0)

Only the target's train (unlabelled for AdaBN; k labelled per class for few-shot) and val
splits are used; its test split is for scoring (lib.analysis.domain).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.analysis.domain import evaluate_on, per_class, restrict, shared_classes
from lib.training import train

MODES = ("head", "whole")




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
    dev = next(out.parameters()).device
    images = ds.images
    if max_images is not None and len(images) > max_images:
        g = torch.Generator().manual_seed(seed)
        images = images[torch.randperm(len(images), generator=g)[:max_images]]
    out.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs by its count
        bn.train()
    for i in range(0, len(images), batch_size):
        xb = images[i:i + batch_size]
        if len(xb) < 2:
            break  # one image gives no variance
        out(models.preprocess(xb, out.fer_cfg, dev))
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    return out.eval()


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


def few_shot_sweep(models: Mapping[int, nn.Module], source_classes: Sequence[str], target_train,
                   target_val, target_test, ks: Sequence[int], make_cfg, bootstrap: int = 0,
                   modes: Sequence[str] = MODES) -> list[dict]:
    """few_shot for every (seed: source model) x k x mode, each scored on target_test over the
    shared classes. `make_cfg(k, mode)` gives the train.Config. One dict per fit: seed, k,
    mode, eval (CrossEval), info, history."""
    from tqdm.auto import tqdm

    grid = [(s, k, m) for s in models for k in ks for m in modes]
    out = []
    for seed, k, mode in tqdm(grid, desc="few-shot", leave=False):
        net, hist, info = few_shot(models[seed], source_classes, target_train, target_val, k,
                                   mode, make_cfg(k, mode), seed=seed)
        ev = evaluate_on(net, target_test, info["shared"], bootstrap, seed)
        out.append(dict(seed=seed, k=k, mode=mode, eval=ev, info=info, history=hist))
    return out
