"""What a trained model looks at: Grad-CAM, first-layer filters, early activation maps.

Images go through `lib.models.preprocess` with the model's own `fer_cfg`, exactly as in
training and prediction, so the explanations are of the model as it was evaluated.

    layer = explain.target_layer(model)                 # last conv stage of a registry model
    cams = explain.gradcam(model, test_ds.images[:8])   # (8, H, W) in [0, 1], H, W = input
    fig = explain.cam_grid(model, test_ds, probs, classes)
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib import models


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _last(model: nn.Module, kind: type) -> nn.Module:
    found = [m for m in model.modules() if isinstance(m, kind)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no {kind.__name__} layer")
    return found[-1]


def target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM reads: the output of the model's last convolutional stage.

    Plain CNNs (small_cnn, wider_cnn, conv4net, vgg_cnn): the ReLU after the last conv (its in-place
    ReLU would otherwise overwrite the conv output the hooks hold); resnet: layer4's last
    block; mobilenet_v2 / efficientnet: the last features block (1x1 conv to 1280 channels);
    ddamfn: the backbone's last 1x1 conv (512 channels, before the attention heads);
    convnextv2: the last stage. Other models: the last Conv2d.
    """
    name = getattr(model, "fer_cfg", {}).get("name", "")
    if name in ("small_cnn", "wider_cnn", "conv4net", "vgg_cnn"):
        return _last(model.features, nn.ReLU)
    if name.startswith("resnet"):
        return model.layer4[-1]
    if name in ("mobilenet_v2", "efficientnet_b0"):
        return model.features[-1]
    if name == "ddamfn":
        return model.backbone.conv_6_sep
    if name.startswith("convnextv2"):
        return model.stages[-1]
    return _last(model, nn.Conv2d)


def gradcam(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | None = None,
            layer: nn.Module | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] at the model's input size for uint8 (N, C, H, W)
    images; `targets` are class indices (default: each image's predicted class)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError("gradcam expects a uint8 (N, C, H, W) tensor")
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images")
    was_training, dev = model.training, _device(model)
    layer = layer if layer is not None else target_layer(model)
    out = []
    try:
        with GradCAM(model=model, target_layers=[layer]) as cam:  # puts the model in eval
            for i in range(0, len(images), batch_size):
                x = models.preprocess(images[i:i + batch_size], model.fer_cfg, dev)
                t = None if targets is None else [ClassifierOutputTarget(int(c))
                                                  for c in targets[i:i + batch_size]]
                out.append(cam(input_tensor=x, targets=t))
    finally:
        model.train(was_training)
    return np.concatenate(out).astype(np.float32)


def _display(img: torch.Tensor) -> np.ndarray:
    """uint8 (C, H, W) -> float (H, W, 3) in [0, 1] for drawing."""
    a = img.detach().cpu().float().div(255)
    a = a.expand(3, -1, -1) if a.shape[0] == 1 else a
    return a.permute(1, 2, 0).numpy()


def overlay(image: torch.Tensor, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A CAM (any size) resized onto a uint8 (C, H, W) image: (H, W, 3) float in [0, 1]."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = _display(image)
    c = torch.from_numpy(np.asarray(cam, dtype=np.float32))[None, None]
    c = F.interpolate(c, size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    return show_cam_on_image(rgb, c.clamp(0, 1).numpy(), use_rgb=True,
                             image_weight=1 - alpha).astype(np.float32) / 255


def pick_examples(y: np.ndarray, pred: np.ndarray, n_each: int = 2,
                  confidence: np.ndarray | None = None) -> dict[tuple[int, str], list[int]]:
    """Indices of up to n_each correct and n_each wrong predictions per true class
    (most confident first when `confidence` is given, else in data order)."""
    y, pred = np.asarray(y), np.asarray(pred)
    order = np.argsort(-confidence, kind="stable") if confidence is not None \
        else np.arange(len(y))
    out = {}
    for c in np.unique(y):
        for kind, ok in (("correct", True), ("wrong", False)):
            hits = [int(i) for i in order if y[i] == c and (pred[i] == c) == ok]
            out[(int(c), kind)] = hits[:n_each]
    return out


def cam_grid(model: nn.Module, ds, probs: np.ndarray, classes: Sequence[str], n_each: int = 2,
             title: str | None = None):
    """One row per true class: n_each correct then n_each wrong test predictions, each with
    the Grad-CAM of its predicted class over the image; empty cells where none exist."""
    y, pred = np.asarray(ds.labels), probs.argmax(1)
    picks = pick_examples(y, pred, n_each, probs.max(1))
    rows = sorted({c for c, _ in picks})
    idx = [i for c in rows for kind in ("correct", "wrong")
           for i in picks[(c, kind)] + [-1] * (n_each - len(picks[(c, kind)]))]
    used = [i for i in idx if i >= 0]
    if not used:
        raise ValueError("cam_grid: no test predictions to explain")
    cams = dict(zip(used, gradcam(model, ds.images[used], pred[used])))
    ncols = 2 * n_each
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.9 * ncols, 2.0 * len(rows) + 0.4),
                             squeeze=False)
    for ax, i in zip(axes.flat, idx):
        ax.axis("off")
        if i >= 0:
            ax.imshow(overlay(ds.images[i], cams[i]))
            ok = "ok" if pred[i] == y[i] else "wrong"
            ax.set_title(f"{classes[y[i]]} -> {classes[pred[i]]}\n{ok}, p={probs[i].max():.2f}",
                         fontsize=7, color="black" if ok == "ok" else "tab:red")
    layer = type(target_layer(model)).__name__
    fig.suptitle(title or f"Grad-CAM ({model.fer_cfg['name']}, layer {layer}): "
                 f"{n_each} correct | {n_each} wrong per true class", fontsize=9)
    fig.tight_layout()
    return fig


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first Conv2d in module order (the stem for every registry model)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError(f"{type(model).__name__} has no Conv2d layer")


def filter_grid(model: nn.Module, max_filters: int = 64, title: str | None = None):
    """First-layer kernels (study 004): RGB when the layer reads 3 channels, else the
    channel mean in grey; each kernel min-max scaled on its own."""
    w = first_conv(model).weight.detach().float().cpu()
    w = w[:max_filters]
    w = w.mean(1, keepdim=True) if w.shape[1] not in (1, 3) else w
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    ncols = min(16, len(w))
    nrows = -(-len(w) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.7 * ncols, 0.7 * nrows + 0.5),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, k in zip(axes.flat, w):
        img = k[0].numpy() if k.shape[0] == 1 else k.permute(1, 2, 0).numpy()
        ax.imshow(img, cmap="gray" if k.shape[0] == 1 else None, vmin=0, vmax=1,
                  interpolation="nearest")
    kh, kw = first_conv(model).kernel_size
    fig.suptitle(title or f"{model.fer_cfg['name']}: first-layer kernels "
                 f"({len(w)} x {first_conv(model).in_channels} x {kh} x {kw})", fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def activations(model: nn.Module, image: torch.Tensor, n_layers: int = 2) -> list[torch.Tensor]:
    """Outputs (C, H, W) of the first n_layers Conv2d layers (before their activation) for
    one uint8 (C, H, W) image, preprocessed as in training."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)][:n_layers]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer")
    got: list[torch.Tensor] = []
    # clone: an in-place activation after the conv (small_cnn's ReLU) would overwrite it
    hooks = [c.register_forward_hook(lambda m, i, o: got.append(o[0].detach().float().cpu()
                                                                .clone())) for c in convs]
    was_training = model.training
    try:
        model.eval()
        model(models.preprocess(image[None], model.fer_cfg, _device(model)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return got


def activation_grid(model: nn.Module, image: torch.Tensor, n_layers: int = 2,
                    n_maps: int = 16, title: str | None = None):
    """The image, then one row per early conv layer with its first n_maps feature maps
    (each scaled on its own; study 004's activation figures)."""
    acts = activations(model, image, n_layers)
    ncols = n_maps + 1
    fig, axes = plt.subplots(len(acts), ncols, figsize=(0.9 * ncols, 1.25 * len(acts) + 0.5),
                             squeeze=False)
    for r, a in enumerate(acts):
        for ax in axes[r]:
            ax.axis("off")
        axes[r, 0].imshow(_display(image))
        axes[r, 0].set_title(f"conv {r + 1}\n{tuple(a.shape)}", fontsize=6)
        for j, fmap in enumerate(a[:n_maps]):
            axes[r, j + 1].imshow(fmap.numpy(), cmap="viridis")
    fig.suptitle(title or f"{model.fer_cfg['name']}: outputs of the first {len(acts)} conv "
                 "layers (before activation)", fontsize=9)
    fig.tight_layout()
    return fig
