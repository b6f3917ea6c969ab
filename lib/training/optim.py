"""What lib.training.train.fit steps with: the optimizer, the LR schedule, and the optional weight
tricks (SAM, an EMA of the weights, MixUp/CutMix batches). Each reads the fit's Config."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD; weight decay on weights only, not on biases and norm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def scheduler(opt, cfg, steps_per_epoch: int):
    """The LR schedule of cfg.schedule (stepped per batch; 'plateau' per epoch), or None."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total // 2)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=0.5, patience=max(1, (cfg.patience or 4) // 2))
    return None


class SAM:
    """Sharpness-aware minimisation (Foret et al. 2021) around a base optimizer:
    first_step moves to w + rho * g / |g|, second_step restores w and steps with the new g.
    Run the forward pass between them inside `frozen_bn_stats`."""

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05):
        self.base, self.rho, self._e = base, rho, {}

    @torch.no_grad()
    def first_step(self) -> None:
        ps = [p for grp in self.base.param_groups for p in grp["params"] if p.grad is not None]
        norm = torch.norm(torch.stack([p.grad.norm(2) for p in ps]), 2) if ps else torch.tensor(0.0)
        scale = self.rho / (norm + 1e-12)
        for p in ps:
            e = p.grad * scale
            p.add_(e)
            self._e[p] = e

    @torch.no_grad()
    def second_step(self) -> None:
        for p, e in self._e.items():
            p.sub_(e)
        self._e = {}
        self.base.step()


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics (and batch counts) come out as they went in.

    SAM's second forward sees the same batch at perturbed weights: counting it again would
    pull the running statistics towards weights the model never takes (the fix of
    davda54/sam's disable_running_stats). Saved and restored rather than momentum 0, so
    num_batches_tracked and momentum=None layers are left exactly as they were too."""
    bufs = [b for m in model.modules() if isinstance(m, _BatchNorm)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in bufs]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(bufs, saved):
                b.copy_(s)


def ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of `model` (call `.update_parameters(model)` after each
    step); BatchNorm statistics are averaged with the weights (use_buffers=True), so the
    average carries its own and needs no update_bn pass over the data."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def mixer(mixup: float | None, cutmix: float | None,
          num_classes: int) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None:
    """(x, y) -> (mixed x, soft targets (B, K)) by v2.MixUp and/or v2.CutMix (Beta(alpha)),
    one of the two at random per batch when both are set; None when neither is.
    Draws from the global torch RNG, which fit seeds and its resume state restores."""
    if not mixup and not cutmix:
        return None
    from torchvision.transforms import v2  # lazy: importing it costs ~1.5 s

    ops = [op(alpha=float(a), num_classes=num_classes)
           for op, a in ((v2.MixUp, mixup), (v2.CutMix, cutmix)) if a]
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)
