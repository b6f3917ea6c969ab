"""Batches, eval-mode logits and validation scores for lib.training.train; `predict_proba` and friends
(re-exported by lib.training.train, where callers find them).

Data stay uint8 CPU tensors; each batch is gathered by index, (pinned and) moved to the
device non-blocking, then preprocessed for the model (resize, channel adapt, normalise with
`model.fer_cfg`); on CUDA with AMP.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor


def preprocess_fn() -> Callable:
    """lib.models.preprocess (imported lazily: models imports timm, which is slow)."""
    from lib import models

    return models.preprocess


def batches(images: Tensor, labels: Tensor, order: Tensor, bs: int, dev: torch.device,
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


def split_outputs(out) -> tuple[Tensor, list[Tensor]]:
    """(logits, auxiliary logits) from a model output: a tensor or a tuple (Inception, DDAMFN)."""
    if isinstance(out, Tensor):
        return out, []
    logits = out[0]
    return logits, [o for o in out[1:] if isinstance(o, Tensor) and o.shape == logits.shape]


def _model_flags(model: nn.Module) -> tuple[torch.device, bool]:
    p = next(model.parameters())
    cl = any(q.ndim == 4 and not q.is_contiguous()
             and q.is_contiguous(memory_format=torch.channels_last) for q in model.parameters())
    return p.device, cl


@torch.inference_mode()
def logits(model, ds, bs, dev, cl, amp, amp_dtype, prep, fer_cfg, flip=False) -> Tensor:
    """Eval-mode logits (float32, CPU) for every image of ds, in order."""
    images = ds.images
    if len(images) == 0:
        raise ValueError("cannot predict on an empty dataset")
    was_training = model.training
    model.eval()
    out = []
    order = torch.arange(len(images))
    for xb, _ in batches(images, order, order, bs, dev):
        xb = prep(xb.flip(-1) if flip else xb, fer_cfg, dev, channels_last=cl)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            o = model(xb)
        out.append(split_outputs(o)[0].float().cpu())
    model.train(was_training)
    return torch.cat(out)


def macro_f1(y, pred) -> float:
    """Macro-F1 over the labels present in y or pred (sklearn's default), from
    lib.evaluation.metrics' confusion counts and per-class F1."""
    from lib.evaluation import metrics  # lazy: lib.evaluation.metrics imports scipy, ~0.9 s

    y, pred = (np.asarray(t.cpu() if isinstance(t, Tensor) else t, dtype=np.int64)
               for t in (y, pred))
    present = np.union1d(y, pred)
    k = int(present.max()) + 1
    f1 = metrics.from_confusion(metrics.confusion_batch(y, pred, k))["f1"][0][present]
    # torch's mean, not from_confusion's macro_f1: its sum runs in another order, and the
    # last bit of val_macro_f1 (stored Histories, best-epoch ties) must not move
    return float(torch.from_numpy(f1).mean())


def evaluate(model, ds, loss_fn, bs, dev, cl, amp, amp_dtype, prep, fer_cfg) -> dict:
    """val_loss, val_acc and val_macro_f1 of `model` on ds."""
    z = logits(model, ds, bs, dev, cl, amp, amp_dtype, prep, fer_cfg)
    y = torch.as_tensor(ds.labels).long()
    pred = z.argmax(1)
    with torch.no_grad():
        loss = loss_fn(z.to(dev), y.to(dev)).item()
    return dict(val_loss=loss, val_acc=(pred == y).float().mean().item(),
                val_macro_f1=macro_f1(y, pred))


def _infer_setup(model: nn.Module) -> tuple:
    dev, cl = _model_flags(model)
    amp = dev.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    return dev, cl, amp, dtype, preprocess_fn(), model.fer_cfg


def predict_logits(model: nn.Module, ds, batch_size: int = 256, tta: bool = False) -> np.ndarray:
    """(N, K) logits in eval mode; tta averages with the horizontally flipped images."""
    s = _infer_setup(model)
    z = logits(model, ds, batch_size, *s)
    if tta:
        z = (z + logits(model, ds, batch_size, *s, flip=True)) / 2
    return z.numpy()


def predict_proba(model: nn.Module, ds, batch_size: int = 256, tta: bool = False) -> np.ndarray:
    """(N, K) softmax probabilities; tta averages the probabilities of image and its mirror."""
    s = _infer_setup(model)
    p = torch.softmax(logits(model, ds, batch_size, *s), 1)
    if tta:
        p = (p + torch.softmax(logits(model, ds, batch_size, *s, flip=True), 1)) / 2
    return p.numpy()


def evaluate_loss(model: nn.Module, ds, loss_fn: Callable | None = None,
                  batch_size: int = 256) -> float:
    """Mean loss on ds (default plain cross-entropy), eval mode."""
    z = torch.from_numpy(predict_logits(model, ds, batch_size))
    y = torch.as_tensor(ds.labels).long()
    return float((loss_fn or nn.CrossEntropyLoss())(z, y))
