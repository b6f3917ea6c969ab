"""One training loop for every model: `fit`, `predict_proba`, early stopping, checkpoints.

Data stay uint8 CPU tensors; each batch is gathered by index, (pinned and) moved to the
device non-blocking, augmented there as uint8 (lib.training.augment), then preprocessed for the model
(resize, channel adapt, normalise with `model.fer_cfg`). The same code runs on CPU and CUDA;
on CUDA it adds AMP, pinned memory and channels_last.

Randomness: the batch order and augmentation of epoch e come from a torch.Generator seeded
with (cfg.seed, e), and the global torch RNG (dropout) is seeded with cfg.seed at the start,
so the same seed and initial weights give the same History, and a resumed fit continues
exactly where the interrupted one stopped.

Options off by default (lib.training.optim): SAM, an EMA of the weights (`ema`: validation, the
checkpoint and the returned model use the average), MixUp / CutMix batches with soft targets.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch import Tensor

from lib.training import augment as augmentation
from lib import config
from lib.evaluation import inference
from lib.training import losses, optim
from lib.atomic import write_with
# re-exported: callers find them here
from lib.evaluation.inference import evaluate_loss, macro_f1, predict_logits, predict_proba  # noqa: F401
from lib.progress import tqdm

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
    loss: str = "ce"  # see lib.training.losses.NAMES
    loss_kwargs: dict = field(default_factory=dict)  # gamma (focal), tau (logit_adjusted)
    label_smoothing: float = 0.0
    class_weights: bool | str | Tensor | None = None  # True/'balanced': n / (K * count)
    # cap on 'balanced' weights: facial_expressions' contempt (6 train images) would get 200,
    # 800x neutral's, and a SmallCNN collapsed onto it (val macro-F1 0.000 after 4 epochs)
    max_class_weight: float | None = 10.0
    sampler: str | None = None  # None | 'balanced' (class-balanced sampling with replacement)
    augment: str | augmentation.Policy = "none"  # a policy name or Policy object
    augment_strength: float = 1.0
    # (op, class indices) pairs added to the policy for those classes only (JSON-friendly
    # lists, so a recipe with them can be a fit-store spec): 04's targeted policy
    augment_extra: list | None = None
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
    ema: float | None = None  # decay of an EMA of the weights (e.g. 0.999), which is what is kept
    mixup: float | None = None  # MixUp Beta alpha (e.g. 0.2): soft targets, losses.SOFT_TARGETS
    cutmix: float | None = None  # CutMix Beta alpha (e.g. 1.0); with mixup, one of them a batch
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

    def policy_extra(self) -> list[tuple]:
        """`augment_extra` as the (op, classes) tuples augment.Policy takes."""
        return [(op, tuple(classes)) if classes is not None else op
                for op, classes in (self.augment_extra or [])]

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
        if isinstance(self.augment, str):  # fail now, not mid-fit
            augmentation.policy(self.augment, self.augment_strength, self.policy_extra())
        if self.ema is not None and not 0 < self.ema < 1:
            raise ValueError(f"Config.ema={self.ema!r}; a decay in (0, 1) or None")
        for name, alpha in (("mixup", self.mixup), ("cutmix", self.cutmix)):
            if alpha is not None and not alpha > 0:
                raise ValueError(f"Config.{name}={alpha!r}; a Beta alpha > 0 or None")
        if (self.mixup or self.cutmix) and self.loss not in losses.SOFT_TARGETS:
            raise ValueError(f"loss {self.loss!r} cannot take the soft targets of mixup/cutmix; "
                             f"choose from {losses.SOFT_TARGETS}")


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


def resume_path(checkpoint: str | Path) -> Path:
    """Where fit keeps its per-epoch training state next to the best checkpoint."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".resume.pt")


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
        blob = {"state_dict": model.state_dict(), "classes": list(classes or []),
                "fer_cfg": dict(getattr(model, "fer_cfg", {})), "extra": meta}
        write_with(path, lambda tmp: torch.save(blob, tmp))


# ---------------------------------------------------------------- fit -----------------
def fit(model: nn.Module, train_ds, val_ds, cfg: Config | None = None) -> History:
    """Train `model` in place; return the per-epoch History; restore the best epoch's weights
    (with cfg.ema, the best epoch's average)."""
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
    prep, fer_cfg = inference.preprocess_fn(), model.fer_cfg
    images, labels = train_ds.images, torch.as_tensor(train_ds.labels).long()
    counts = losses.class_counts(labels, k)
    weights = _class_weights(cfg.class_weights, counts, cfg.max_class_weight)
    loss_fn = losses.make_loss(cfg.loss, counts, weights, cfg.label_smoothing,
                               **cfg.loss_kwargs).to(dev)
    pol = cfg.augment if isinstance(cfg.augment, augmentation.Policy) else augmentation.policy(
        cfg.augment, cfg.augment_strength, cfg.policy_extra())
    mix = optim.mixer(cfg.mixup, cfg.cutmix, k)
    per_epoch = min(len(labels), cfg.epoch_images or len(labels))
    steps = per_epoch // cfg.batch_size + int(per_epoch % cfg.batch_size > 1)
    opt = optim.optimizer(model, cfg)
    sam = optim.SAM(opt, cfg.sam_rho) if cfg.sam else None
    sched = optim.scheduler(opt, cfg, max(1, steps))
    scaler = torch.amp.GradScaler(dev.type, enabled=amp and amp_dtype == torch.float16)

    model_extra = getattr(model, "extra_loss", None)
    model_extra = model_extra if callable(model_extra) else None

    def forward_loss(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits, objective, main loss): the History records the main loss, which is the
        one val_loss measures, so train and val curves compare like with like."""
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            out = run(x)
        logits, aux = inference.split_outputs(out)
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
    saved = _restore(_resume_file(cfg), dev, model, opt, sched, scaler, st)
    ema = optim.ema(model, cfg.ema) if cfg.ema else None  # from the resumed weights, if any
    if ema is not None and "ema" in saved:
        ema.load_state_dict(saved["ema"])
    kept = model if ema is None else ema.module  # the weights validated, saved and returned
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
        for xb, yb in inference.batches(images, labels, order, cfg.batch_size, dev,
                                        drop_single=True):
            xb = prep(pol(xb, g, yb), fer_cfg, dev, channels_last=cl)
            xb, target = (xb, yb) if mix is None else mix(xb, yb)  # soft (B, K) targets
            lr_sum += opt.param_groups[0]["lr"]
            opt.zero_grad(set_to_none=True)
            logits, loss, main = forward_loss(xb, target)
            scaler.scale(loss).backward()
            if sam is not None:
                sam.first_step()
                opt.zero_grad(set_to_none=True)
                with optim.frozen_bn_stats(model):  # BatchNorm has counted this batch already
                    forward_loss(xb, target)[1].backward()
                clip()
                sam.second_step()
            else:
                scaler.unscale_(opt)
                clip()
                scaler.step(opt)
                scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            if sched is not None and cfg.schedule != "plateau":
                sched.step()
            loss_sum += main.detach().float() * len(yb)
            correct += (logits.argmax(1) == (yb if mix is None else target.argmax(1))).sum()
            seen, n_steps = seen + len(yb), n_steps + 1
        row = dict(epoch=epoch + 1, train_loss=loss_sum.item() / seen,
                   train_acc=correct.item() / seen, val_loss=np.nan, val_acc=np.nan,
                   val_macro_f1=np.nan, lr=lr_sum / n_steps)
        if val_ds is not None:
            row.update(inference.evaluate(run if ema is None else kept, val_ds, loss_fn,
                                          cfg.eval_batch_size, dev, cl, amp, amp_dtype, prep,
                                          fer_cfg))
            score = (row["val_macro_f1"], row["val_loss"])
            if sched is not None and cfg.schedule == "plateau":
                sched.step(row["val_macro_f1"])
        else:
            score = (epoch, 0.0)  # no validation: the last epoch is the best
        if score[0] > st["best"][0] or (score[0] == st["best"][0] and score[1] < st["best"][1]):
            st.update(best=score, best_epoch=epoch + 1, bad=0,
                      best_state={n: v.detach().clone() for n, v in kept.state_dict().items()})
            if cfg.checkpoint:
                _save_best(Path(cfg.checkpoint), kept, train_ds,
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
            _save_state(resume_path(cfg.checkpoint), st, model, opt, sched, scaler, ema)
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


def _save_state(path: Path, st: dict, model, opt, sched, scaler, ema) -> None:
    """The per-epoch training state a resumed fit continues from (the EMA's too, when on)."""
    state = {**st, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict() if sched is not None else {},
             "scaler": scaler.state_dict(), "rng": torch.get_rng_state()}
    if ema is not None:
        state["ema"] = ema.state_dict()
    write_with(path, lambda tmp: torch.save(state, tmp))


def _restore(path: Path | None, dev, model, opt, sched, scaler, st: dict) -> dict:
    """Load the training state at `path` into the fit's objects and `st`; the state ({} for
    none), for what only some fits keep (the EMA)."""
    if path is None:
        return {}
    saved = torch.load(path, map_location=dev, weights_only=True)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    if sched is not None:
        sched.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng"].cpu())
    st.update({k: saved[k] for k in st})
    st["best"] = tuple(st["best"])
    return saved


def _resume_file(cfg: Config) -> Path | None:
    if cfg.resume is False or cfg.resume is None:
        return None
    if cfg.resume is True:
        if not cfg.checkpoint:
            raise ValueError("resume=True needs cfg.checkpoint (the state sits next to it)")
        p = resume_path(cfg.checkpoint)
        if not p.exists():
            print(f"train: no saved training state ({p.name}); starting from scratch")
            return None
        return p
    p = Path(cfg.resume)
    if not p.exists():
        raise FileNotFoundError(f"resume state {p} does not exist")
    return p
