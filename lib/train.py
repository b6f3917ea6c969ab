"""One training loop for every model: `fit`, `predict_proba`, early stopping, checkpoints.

Data stay uint8 CPU tensors; each batch is gathered by index, (pinned and) moved to the
device non-blocking, augmented there as uint8 (lib.augment), then preprocessed for the model
(resize, channel adapt, normalise with `model.fer_cfg`). The same code runs on CPU and CUDA;
on CUDA it adds AMP, pinned memory and channels_last.

Randomness: the batch order and augmentation of epoch e come from a torch.Generator seeded
with (cfg.seed, e), and the global torch RNG (dropout) is seeded with cfg.seed at the start,
so the same seed and initial weights give the same History, and a resumed fit continues
exactly where the interrupted one stopped.
"""
from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch import Tensor
from lib.progress import tqdm

from lib import augment as augmentation
from lib import config, losses

# channels_last on CPU, from `python -m lib.bench train` on the 2-core dev machine (training
# images/s at batch 64, 3 channels, fastest of 2 steps, off -> on; 2 threads):
#   small_cnn    48 px 107 -> 136, 64 px 222 -> 270, 112 px 62 -> 81
#   resnet18     48 px 142 -> 157, 64 px 102 -> 121, 112 px 39 -> 44
#   mobilenet_v2 48 px 236 -> 291, 64 px 165 -> 175, 112 px 67 -> 79
# faster in 9/9 cells (geo-mean 1.18x; 1.25x with 1 thread), so on.
CPU_CHANNELS_LAST = True

History = pd.DataFrame  # one row per epoch; metadata in .attrs
SCHEDULES = ("cosine", "onecycle", "plateau", "none")


@dataclass
class Config:
    """Everything one fit needs. 'auto' settings resolve from the device at fit time."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4  # not applied to biases and norm parameters
    optimizer: str = "adamw"  # 'adamw' | 'sgd' (momentum, Nesterov)
    momentum: float = 0.9
    schedule: str = "cosine"  # 'cosine' (linear warm-up) | 'onecycle' | 'plateau' | 'none'
    warmup_epochs: float = 1.0  # capped at half the steps so a 1-epoch fit still trains
    loss: str = "ce"  # see lib.losses.NAMES
    loss_kwargs: dict = field(default_factory=dict)  # gamma (focal), tau (logit_adjusted)
    label_smoothing: float = 0.0
    class_weights: bool | str | Tensor | None = None  # True/'balanced': n / (K * count)
    # cap on 'balanced' weights: facial_expressions' contempt (6 train images) would get 200,
    # 800x neutral's, and a SmallCNN collapsed onto it (val macro-F1 0.000 after 4 epochs)
    max_class_weight: float | None = 10.0
    sampler: str | None = None  # None | 'balanced' (class-balanced sampling with replacement)
    augment: str | augmentation.Policy = "none"  # a policy name or Policy object
    augment_strength: float = 1.0
    batch_size: int = 64
    # at most this many (randomly drawn, fresh each epoch) training images per epoch, so that a
    # large dataset (fer2013: 28k) can get less than one full pass within a CPU budget
    epoch_images: int | None = None
    eval_batch_size: int = 256
    patience: int | None = None  # early stopping on validation macro-F1
    clip_grad: float | None = 5.0  # max grad norm; a guard against blow-ups, not a regulariser
    amp: bool | str = "auto"  # 'auto' = on CUDA only
    channels_last: bool | str = "auto"  # 'auto' = CUDA: on; CPU: CPU_CHANNELS_LAST
    compile: bool = False
    sam: bool = False  # sharpness-aware minimisation around the optimizer
    sam_rho: float = 0.05
    aux_weight: float = 0.4  # weight of auxiliary logits (Inception-v3)
    extra_loss: Callable | None = None  # fn(outputs, targets) -> scalar, added to the loss
    # (a model's own no-argument `model.extra_loss()`, DDAMFN's diversity term, is always added)
    seed: int = 0
    checkpoint: str | Path | None = None  # best model, written atomically
    resume: bool | str | Path = False  # True: <checkpoint>.resume.pt if present; or a path
    progress: bool = True
    desc: str = "fit"
    callback: Callable[[dict], bool | None] | None = None  # gets each epoch row; True stops
    device: str | None = None  # default lib.config.device()

    def __post_init__(self) -> None:
        checks = {"optimizer": ("adamw", "sgd"), "schedule": SCHEDULES, "loss": losses.NAMES,
                  "sampler": (None, "balanced")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"Config.{name}={getattr(self, name)!r}; choose from {allowed}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.epoch_images is not None and self.epoch_images < 1:
            raise ValueError(f"epoch_images={self.epoch_images}; must be >= 1 or None")
        if isinstance(self.augment, str):
            augmentation.policy(self.augment, self.augment_strength)  # fail now, not mid-fit


# ---------------------------------------------------------------- preprocessing ------
def _preprocess_fn() -> Callable:
    """lib.models.preprocess (imported lazily: models imports timm, which is slow)."""
    from lib import models

    return models.preprocess


# ---------------------------------------------------------------- helpers ------------
def _num_classes(model: nn.Module, ds) -> int:
    k = getattr(model, "fer_cfg", {}).get("num_classes") or len(getattr(ds, "classes", []))
    if not k:
        raise ValueError("cannot tell the number of classes: set model.fer_cfg['num_classes']")
    return int(k)


def _check_ds(ds, k: int, what: str) -> None:
    x, y = ds.images, torch.as_tensor(ds.labels)
    if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
        raise TypeError(f"{what}.images must be a uint8 (N, C, H, W) tensor")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{what}: {len(x)} images, {len(y)} labels")
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"{what} labels outside [0, {k}) (model has {k} classes)")


def _resolve_flags(cfg: Config, dev: torch.device) -> tuple[bool, torch.dtype, bool]:
    cuda = dev.type == "cuda"
    amp = cuda if cfg.amp == "auto" else bool(cfg.amp)
    dtype = torch.bfloat16
    if amp and cuda and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
        if cfg.sam:  # fp16 needs a GradScaler, which cannot step twice per update
            print("train: SAM with fp16 AMP is not supported; training in float32")
            amp = False
    cl = (cuda or CPU_CHANNELS_LAST) if cfg.channels_last == "auto" else bool(cfg.channels_last)
    return amp, dtype, cl


def _batches(images: Tensor, labels: Tensor, order: Tensor, bs: int, dev: torch.device,
             drop_single: bool = False):
    """Yield (x_uint8, y) batches on dev; pinned + non_blocking copies on CUDA."""
    for i in range(0, len(order), bs):
        idx = order[i:i + bs]
        if drop_single and len(idx) == 1:
            return  # BatchNorm cannot train on one sample; the order is reshuffled each epoch
        x, y = images[idx.to(images.device)], labels[idx.to(labels.device)]
        if dev.type == "cuda" and x.device.type == "cpu":
            x, y = x.pin_memory(), y.pin_memory()
        yield x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)


def _split_outputs(out) -> tuple[Tensor, list[Tensor]]:
    """(logits, auxiliary logits) from a model output: a tensor or a tuple (Inception, DDAMFN)."""
    if isinstance(out, Tensor):
        return out, []
    logits = out[0]
    return logits, [o for o in out[1:] if isinstance(o, Tensor) and o.shape == logits.shape]


def _order(labels: Tensor, sampler: str | None, g: torch.Generator) -> Tensor:
    if sampler == "balanced":  # WeightedRandomSampler with 1/count weights, seeded
        counts = torch.bincount(labels).float()
        return torch.multinomial(1.0 / counts[labels], len(labels), replacement=True, generator=g)
    return torch.randperm(len(labels), generator=g)


def _class_weights(spec, counts: Tensor, cap: float | None = None) -> Tensor | None:
    if spec is None or spec is False:
        return None
    if spec is True or spec == "balanced":
        w = losses.balanced_weights(counts)
        return w if cap is None else w.clamp(max=cap)
    w = torch.as_tensor(spec, dtype=torch.float32)
    if w.shape != counts.shape:
        raise ValueError(f"class_weights has shape {tuple(w.shape)}, "
                         f"expected {tuple(counts.shape)}")
    return w


def _optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _scheduler(opt, cfg: Config, steps_per_epoch: int):
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
    first_step moves to w + rho * g / |g|, second_step restores w and steps with the new g."""

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


def resume_path(checkpoint: str | Path) -> Path:
    """Where fit keeps its per-epoch training state next to the best checkpoint."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".resume.pt")


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_best(path: Path, model: nn.Module, train_ds, meta: dict) -> None:
    """lib.models.save_checkpoint for registry models; a plain atomic dict otherwise.

    The decode settings of the training data (size, channels, face crop) go into the
    checkpoint so that lib.predict prepares new images exactly as in training."""
    from lib import models

    classes = getattr(train_ds, "classes", None)
    if classes is not None and "name" in getattr(model, "fer_cfg", {}):
        models.save_checkpoint(path, model, list(classes), extra=meta,
                               img_size=getattr(train_ds, "size", None),
                               channels=getattr(train_ds, "channels", None),
                               face_crop=bool(getattr(train_ds, "face_crop", False)))
    else:  # ad-hoc models (tests, notebooks' own nn.Modules) cannot be rebuilt by name
        _atomic_save({"state_dict": model.state_dict(), "classes": list(classes or []),
                      "fer_cfg": dict(getattr(model, "fer_cfg", {})), "extra": meta}, path)


# ---------------------------------------------------------------- fit -----------------
def fit(model: nn.Module, train_ds, val_ds, cfg: Config | None = None) -> History:
    """Train `model` in place; return the per-epoch History; restore the best epoch's weights."""
    cfg = cfg or Config()
    dev = torch.device(cfg.device) if cfg.device else config.device()
    k = _num_classes(model, train_ds)
    _check_ds(train_ds, k, "train_ds")
    if len(train_ds.images) < 2:
        raise ValueError("need at least 2 training images")
    if val_ds is not None:
        _check_ds(val_ds, k, "val_ds")
        tc, vc = getattr(train_ds, "classes", None), getattr(val_ds, "classes", None)
        if tc is not None and vc is not None and list(tc) != list(vc):
            raise ValueError(f"train and val classes differ: {list(tc)} vs {list(vc)}")
    elif cfg.schedule == "plateau" or cfg.patience:
        raise ValueError("schedule='plateau' and patience need a validation set")
    amp, amp_dtype, cl = _resolve_flags(cfg, dev)
    torch.manual_seed(cfg.seed)
    model.to(dev)
    if cl:
        model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if cfg.compile else model
    prep, fer_cfg = _preprocess_fn(), model.fer_cfg
    images, labels = train_ds.images, torch.as_tensor(train_ds.labels).long()
    counts = losses.class_counts(labels, k)
    weights = _class_weights(cfg.class_weights, counts, cfg.max_class_weight)
    loss_fn = losses.make_loss(cfg.loss, counts, weights, cfg.label_smoothing,
                               **cfg.loss_kwargs).to(dev)
    pol = cfg.augment if isinstance(cfg.augment, augmentation.Policy) else augmentation.policy(
        cfg.augment, cfg.augment_strength)
    per_epoch = min(len(labels), cfg.epoch_images or len(labels))
    steps = per_epoch // cfg.batch_size + int(per_epoch % cfg.batch_size > 1)
    opt = _optimizer(model, cfg)
    sam = SAM(opt, cfg.sam_rho) if cfg.sam else None
    sched = _scheduler(opt, cfg, max(1, steps))
    scaler = torch.amp.GradScaler(dev.type, enabled=amp and amp_dtype == torch.float16)

    model_extra = getattr(model, "extra_loss", None)
    model_extra = model_extra if callable(model_extra) else None

    def forward_loss(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits, objective, main loss): the History records the main loss, which is the
        one val_loss measures, so train and val curves compare like with like."""
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            out = run(x)
        logits, aux = _split_outputs(out)
        main = loss_fn(logits, y)
        loss = main + sum(cfg.aux_weight * loss_fn(a, y) for a in aux)
        if model_extra is not None:  # DDAMFN: attention diversity of this forward
            loss = loss + model_extra()
        if cfg.extra_loss is not None:
            loss = loss + cfg.extra_loss(out, y)
        return logits, loss, main

    def clip() -> None:
        if cfg.clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)

    st = dict(epoch=0, rows=[], best_state=None, best=(-math.inf, math.inf), best_epoch=0,
              bad=0, seconds=0.0)
    rpath = _resume_file(cfg)
    if rpath is not None:
        saved = torch.load(rpath, map_location=dev, weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if sched is not None:
            sched.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"].cpu())
        st.update({k_: saved[k_] for k_ in st})
        st["best"] = tuple(st["best"])
    stop_reason = None
    bar = tqdm(range(st["epoch"], cfg.epochs), desc=cfg.desc, disable=not cfg.progress,
               leave=False, unit="ep")
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = _order(labels, cfg.sampler, g)[:per_epoch]
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen, lr_sum, n_steps = 0, 0.0, 0
        for xb, yb in _batches(images, labels, order, cfg.batch_size, dev, drop_single=True):
            xb = prep(pol(xb, g, yb), fer_cfg, dev, channels_last=cl)
            lr_sum += opt.param_groups[0]["lr"]
            opt.zero_grad(set_to_none=True)
            logits, loss, main = forward_loss(xb, yb)
            scaler.scale(loss).backward()
            if sam is not None:
                sam.first_step()
                opt.zero_grad(set_to_none=True)
                forward_loss(xb, yb)[1].backward()
                clip()
                sam.second_step()
            else:
                scaler.unscale_(opt)
                clip()
                scaler.step(opt)
                scaler.update()
            if sched is not None and cfg.schedule != "plateau":
                sched.step()
            loss_sum += main.detach().float() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen, n_steps = seen + len(yb), n_steps + 1
        row = dict(epoch=epoch + 1, train_loss=loss_sum.item() / seen,
                   train_acc=correct.item() / seen, val_loss=np.nan, val_acc=np.nan,
                   val_macro_f1=np.nan, lr=lr_sum / n_steps)
        if val_ds is not None:
            row.update(_evaluate(run, val_ds, loss_fn, cfg.eval_batch_size, dev, cl, amp,
                                 amp_dtype, prep, fer_cfg))
            score = (row["val_macro_f1"], row["val_loss"])
            if sched is not None and cfg.schedule == "plateau":
                sched.step(row["val_macro_f1"])
        else:
            score = (epoch, 0.0)  # no validation: the last epoch is the best
        if score[0] > st["best"][0] or (score[0] == st["best"][0] and score[1] < st["best"][1]):
            st.update(best=score, best_epoch=epoch + 1, bad=0,
                      best_state={n: v.detach().clone() for n, v in model.state_dict().items()})
            if cfg.checkpoint:
                _save_best(Path(cfg.checkpoint), model, train_ds,
                           {"epoch": epoch + 1, "val_macro_f1": row["val_macro_f1"]})
        else:
            st["bad"] += 1
        row["seconds"] = time.perf_counter() - t0
        st["seconds"] += row["seconds"]
        st["rows"].append(row)
        st["epoch"] = epoch + 1
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_loss=f"{row['val_loss']:.3f}",
                        val_f1=f"{row['val_macro_f1']:.3f}")
        if cfg.checkpoint:
            _atomic_save({**st, "model": model.state_dict(), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict() if sched is not None else {},
                          "scaler": scaler.state_dict(), "rng": torch.get_rng_state()},
                         resume_path(cfg.checkpoint))
        if cfg.patience and st["bad"] >= cfg.patience:
            stop_reason = "patience"
        elif cfg.callback is not None and cfg.callback(dict(row)):
            stop_reason = "callback"
        if stop_reason:
            break
    bar.close()
    if st["best_state"] is not None:
        model.load_state_dict(st["best_state"])
    hist = pd.DataFrame(st["rows"], columns=["epoch", "train_loss", "train_acc", "val_loss",
                                             "val_acc", "val_macro_f1", "lr", "seconds"])
    hist.attrs.update(best_epoch=st["best_epoch"],
                      best_val_macro_f1=float(st["best"][0]) if val_ds is not None else np.nan,
                      train_seconds=st["seconds"], stopped_early=stop_reason == "patience",
                      stop_reason=stop_reason, n_train=len(labels), epochs_run=len(st["rows"]),
                      device=str(dev), amp=amp, channels_last=cl)
    return hist


def _resume_file(cfg: Config) -> Path | None:
    if cfg.resume is False or cfg.resume is None:
        return None
    if cfg.resume is True:
        if not cfg.checkpoint:
            raise ValueError("resume=True needs cfg.checkpoint (the state sits next to it)")
        p = resume_path(cfg.checkpoint)
        if not p.exists():
            print(f"train: no training state at {p}; starting from scratch")
            return None
        return p
    p = Path(cfg.resume)
    if not p.exists():
        raise FileNotFoundError(f"resume state {p} does not exist")
    return p


# ---------------------------------------------------------------- inference ----------
def _model_flags(model: nn.Module) -> tuple[torch.device, bool]:
    p = next(model.parameters())
    cl = any(q.ndim == 4 and not q.is_contiguous()
             and q.is_contiguous(memory_format=torch.channels_last) for q in model.parameters())
    return p.device, cl


@torch.inference_mode()
def _logits(model, ds, bs, dev, cl, amp, amp_dtype, prep, fer_cfg, flip=False) -> Tensor:
    """Eval-mode logits (float32, CPU) for every image of ds, in order."""
    images = ds.images
    if len(images) == 0:
        raise ValueError("cannot predict on an empty dataset")
    was_training = model.training
    model.eval()
    out = []
    order = torch.arange(len(images))
    for xb, _ in _batches(images, order, order, bs, dev):
        xb = prep(xb.flip(-1) if flip else xb, fer_cfg, dev, channels_last=cl)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            o = model(xb)
        out.append(_split_outputs(o)[0].float().cpu())
    model.train(was_training)
    return torch.cat(out)


def macro_f1(y: Tensor, pred: Tensor) -> float:
    """Macro-F1 over the labels present in y or pred (sklearn's default), without sklearn
    (its import costs seconds on every fit's first use)."""
    labels = torch.unique(torch.cat([y, pred]))
    tp = torch.stack([((pred == c) & (y == c)).sum() for c in labels]).double()
    n_pred = torch.stack([(pred == c).sum() for c in labels]).double()
    n_true = torch.stack([(y == c).sum() for c in labels]).double()
    return float((2 * tp / (n_pred + n_true).clamp_min(1)).mean())


def _evaluate(model, ds, loss_fn, bs, dev, cl, amp, amp_dtype, prep, fer_cfg) -> dict:
    logits = _logits(model, ds, bs, dev, cl, amp, amp_dtype, prep, fer_cfg)
    y = torch.as_tensor(ds.labels).long()
    pred = logits.argmax(1)
    with torch.no_grad():
        loss = loss_fn(logits.to(dev), y.to(dev)).item()
    return dict(val_loss=loss, val_acc=(pred == y).float().mean().item(),
                val_macro_f1=macro_f1(y, pred))


def _infer_setup(model: nn.Module) -> tuple:
    dev, cl = _model_flags(model)
    amp = dev.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    return dev, cl, amp, dtype, _preprocess_fn(), model.fer_cfg


def predict_logits(model: nn.Module, ds, batch_size: int = 256, tta: bool = False) -> np.ndarray:
    """(N, K) logits in eval mode; tta averages with the horizontally flipped images."""
    s = _infer_setup(model)
    z = _logits(model, ds, batch_size, *s)
    if tta:
        z = (z + _logits(model, ds, batch_size, *s, flip=True)) / 2
    return z.numpy()


def predict_proba(model: nn.Module, ds, batch_size: int = 256, tta: bool = False) -> np.ndarray:
    """(N, K) softmax probabilities; tta averages the probabilities of image and its mirror."""
    s = _infer_setup(model)
    p = torch.softmax(_logits(model, ds, batch_size, *s), 1)
    if tta:
        p = (p + torch.softmax(_logits(model, ds, batch_size, *s, flip=True), 1)) / 2
    return p.numpy()


def evaluate_loss(model: nn.Module, ds, loss_fn: Callable | None = None,
                  batch_size: int = 256) -> float:
    """Mean loss on ds (default plain cross-entropy), eval mode."""
    z = torch.from_numpy(predict_logits(model, ds, batch_size))
    y = torch.as_tensor(ds.labels).long()
    return float((loss_fn or nn.CrossEntropyLoss())(z, y))


def label_shuffle(ds, seed: int = 0):
    """A shallow copy of ds with `.labels` randomly permuted (the label-shuffling sanity check:
    a model trained on it should fall to chance on real validation labels). Only `.labels`
    changes; other attributes (paths, rows) are shared and keep the true labels."""
    out = copy.copy(ds)
    g = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(ds.labels)
    out.labels = y[torch.randperm(len(y), generator=g)]
    return out
