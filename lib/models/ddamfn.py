"""DDAMFN: Dual-Direction Attention Mixed Feature Network (Zhang et al., Electronics 2023).

A compact re-implementation after github.com/SainingZhang/DDAMFN (study 001):

* MixedFeatureNet backbone: MobileFaceNet layout (112x112 input -> 512 x 7 x 7) whose
  inverted-residual blocks use mixed depthwise kernels (MixConv 3/5/7/9) followed by
  coordinate attention.
* `num_head` dual-direction attention (DDA) heads: each squeezes the feature map along W
  and along H with learned depthwise "linear" convolutions (kernels 1x7 and 7x1), mixes
  both directions through a shared 1x1 bottleneck, and returns a sigmoid attention map
  A = a_h * a_w of shape (N, 512, 7, 7). The heads are fused by an element-wise max.
* Output: global depthwise conv (7x7 GDConv) over features * attention, then a linear
  classifier. About 4.1 M parameters for 7 classes.
* Attention-diversity loss: `attention_diversity_loss(heads) = P / (sum of pairwise MSE
  + eps)` (P pairs) pushes the heads apart; the paper adds it with weight 0.1.

Design choices (documented deviations):
* `forward` always returns logits (so eval, Grad-CAM and ensembles need no special case);
  the attention maps of the last forward are kept in `model.attention_maps` and
  `model.extra_loss()` returns 0.1 x diversity for `lib.models.compute_loss`.
* The heads' 7-wide kernels need a 7x7 map: at inputs other than 112 px the backbone
  output is adaptively average-pooled to 7x7, so 48/64 px inputs work (cheaper on CPU);
  `fer_cfg` input size is 112 unless `img_size` says otherwise.
* Layers that the reference defines but never uses in forward (a BatchNorm/PReLU inside
  each MixConv, an extra GDConv per head, a BatchNorm1d after fc) are left out.
Module attribute names follow the reference so `load_backbone` can read its checkpoints.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

EPS = sys.float_info.epsilon
GRID = 7  # spatial size of the backbone output at 112 px, baked into the DDA kernels


class ConvBlock(nn.Module):
    """Conv (no bias) + BN (+ PReLU unless linear)."""

    def __init__(self, cin: int, cout: int, k=1, s=1, p=0, groups: int = 1,
                 linear: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if not linear:
            self.prelu = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.prelu(x) if hasattr(self, "prelu") else x


class MixConv(nn.Module):
    """Depthwise conv whose channel groups use different kernel sizes (MixConv)."""

    def __init__(self, splits: list[int], kernels: list[int], stride: int):
        super().__init__()
        self.splits = splits
        self.mixed_depthwise_conv = nn.ModuleList(
            nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False)
            for c, k in zip(splits, kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(t) for conv, t in zip(self.mixed_depthwise_conv, parts)], 1)


class HSwish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3) / 6


class CoordAtt(nn.Module):
    """Coordinate attention (Hou et al. 2021); `squeeze_h/w` replace average pooling in DDA.

    With `squeeze=None` the H and W directions are average-pooled (backbone blocks); with
    `squeeze=GRID` they are learned depthwise 1xG / Gx1 convolutions (the DDA heads), and
    the module returns the attention map itself instead of the re-weighted input.
    """

    def __init__(self, c: int, squeeze: int | None = None, groups: int = 32):
        super().__init__()
        mip = max(8, c // groups)
        self.dda = squeeze is not None
        if self.dda:
            self.Linear_h = ConvBlock(c, c, (1, squeeze), groups=c, linear=True)
            self.Linear_w = ConvBlock(c, c, (squeeze, 1), groups=c, linear=True)
        self.conv1 = nn.Conv2d(c, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = HSwish()
        self.conv2 = nn.Conv2d(mip, c, 1)
        self.conv3 = nn.Conv2d(mip, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.dda:
            x_h, x_w = self.Linear_h(x), self.Linear_w(x)  # (N,C,H,1), (N,C,1,W)
        else:
            x_h, x_w = x.mean(3, keepdim=True), x.mean(2, keepdim=True)
        y = torch.cat([x_h, x_w.transpose(2, 3)], dim=2)  # both directions share conv1
        y = self.act(self.bn1(self.conv1(y)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        att = self.conv2(y_h).sigmoid() * self.conv3(y_w.transpose(2, 3)).sigmoid()
        return att if self.dda else x * att


class MixBlock(nn.Module):
    """1x1 expand -> MixConv depthwise -> coordinate attention -> 1x1 linear project."""

    def __init__(self, cin: int, cout: int, expand: int, kernels: list[int],
                 splits: list[int], stride: int = 1, residual: bool = False):
        super().__init__()
        assert sum(splits) == expand, (splits, expand)
        self.conv = ConvBlock(cin, expand)
        self.conv_dw = MixConv(splits, kernels, stride)
        self.CA = CoordAtt(expand)
        self.project = ConvBlock(expand, cout, linear=True)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.CA(self.conv_dw(self.conv(x))))
        return x + y if self.residual else y


class MixStage(nn.Module):
    def __init__(self, c: int, n: int, expand: int, kernels: list[int], splits: list[int]):
        super().__init__()
        self.model = nn.Sequential(*[MixBlock(c, c, expand, kernels, splits, residual=True)
                                     for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MixedFeatureNet(nn.Module):
    """MixedFeatureNet trunk up to the 512-channel 1x1 conv (the part DDAMFN keeps)."""

    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.conv1 = ConvBlock(in_chans, 64, 3, 2, 1)  # 112 -> 56
        self.conv2_dw = ConvBlock(64, 64, 3, 1, 1, groups=64)
        self.conv_23 = MixBlock(64, 64, 128, [3, 5, 7], [64, 32, 32], stride=2)  # -> 28
        self.conv_3 = MixStage(64, 9, 128, [3, 5], [96, 32])
        self.conv_34 = MixBlock(64, 128, 256, [3, 5, 7], [128, 64, 64], stride=2)  # -> 14
        self.conv_4 = MixStage(128, 16, 256, [3, 5], [192, 64])
        self.conv_45 = MixBlock(128, 256, 1024, [3, 5, 7, 9], [256] * 4, stride=2)  # -> 7
        self.conv_5 = MixStage(256, 6, 512, [3, 5, 7], [172, 170, 170])
        self.conv_6_sep = ConvBlock(256, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


class DDAMFN(nn.Module):
    """MixedFeatureNet + `num_head` dual-direction attention heads + GDConv classifier."""

    def __init__(self, num_classes: int = 7, in_chans: int = 3, num_head: int = 2,
                 diversity_weight: float = 0.1):
        super().__init__()
        self.backbone = MixedFeatureNet(in_chans)
        self.heads = nn.ModuleList(CoordAtt(512, squeeze=GRID) for _ in range(num_head))
        self.gdconv = ConvBlock(512, 512, GRID, groups=512, linear=True)
        self.fc = nn.Linear(512, num_classes)
        self.diversity_weight = diversity_weight
        self.attention_maps: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)
        if feat.shape[-2:] != (GRID, GRID):  # inputs other than 112 px
            feat = F.adaptive_avg_pool2d(feat, GRID)
        self.attention_maps = [head(feat) for head in self.heads]
        att = self.attention_maps[0]
        for a in self.attention_maps[1:]:
            att = torch.maximum(att, a)
        return self.fc(self.gdconv(feat * att).flatten(1))

    def extra_loss(self) -> torch.Tensor | float:
        """Weighted attention-diversity term for the last forward (0 with one head)."""
        return self.diversity_weight * attention_diversity_loss(self.attention_maps)


def attention_diversity_loss(heads: list[torch.Tensor]) -> torch.Tensor | float:
    """P / (sum of pairwise MSE between head maps + eps): large when heads look alike."""
    pairs = [(i, j) for i in range(len(heads)) for j in range(i + 1, len(heads))]
    if not pairs:
        return 0.0
    # float32: under AMP a half-precision MSE can underflow to 0 and the ratio explode
    total = sum(F.mse_loss(heads[i].float(), heads[j].float()) for i, j in pairs)
    return len(pairs) / (total + EPS)


def ddamfn_loss(model: DDAMFN, logits: torch.Tensor, targets: torch.Tensor,
                criterion) -> torch.Tensor:
    """criterion(logits, targets) + weight x attention diversity (the paper's objective)."""
    return criterion(logits, targets) + model.extra_loss()


# checkpoint key translation: reference DDAMNet `features.<i>` = MixedFeatureNet children
_FEATURES = ["conv1", "conv2_dw", "conv_23", "conv_3", "conv_34", "conv_4", "conv_45",
             "conv_5", "conv_6_sep"]


def _translate(key: str) -> str:
    """Map reference MixedFeatureNet / DDAMNet state-dict keys onto this module's names."""
    key = key.removeprefix("module.")
    parts = key.split(".")
    if parts[0] == "features" and parts[1].isdigit():
        return ".".join(["backbone", _FEATURES[int(parts[1])], *parts[2:]])
    if parts[0] in _FEATURES:
        return "backbone." + key
    if parts[0].startswith("cat_head") and len(parts) > 2 and parts[1] == "CoordAtt":
        return ".".join(["heads", parts[0].removeprefix("cat_head"), *parts[2:]])
    if parts[0] == "Linear":
        return "gdconv." + ".".join(parts[1:])
    return key


def load_backbone(model: DDAMFN, path: str | Path, verbose: bool = True) -> dict:
    """Load a MixedFeatureNet (or full DDAMNet) state dict into `model`, non-strictly.

    The file must hold a state dict (or a dict with 'state_dict' / 'model_state_dict');
    it is read with weights_only=True. A reference checkpoint pickled as a whole module
    (MFN_msceleb.pth) must first be converted by whoever trusts it:
    `torch.save(torch.load(p, weights_only=False).state_dict(), out)`.
    Returns {'loaded', 'missing', 'unexpected', 'shape_mismatch'} key lists.
    """
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled modules are refused by weights_only
        raise ValueError(f"{path}: not a plain state dict ({err}); see load_backbone doc") \
            from err
    for k in ("state_dict", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(k), dict):
            sd = sd[k]
    own = model.state_dict()
    new, mismatch = {}, []
    for key, value in sd.items():
        name = _translate(key)
        if name not in own:
            continue
        if value.shape != own[name].shape and name == "backbone.conv1.conv.weight" \
                and own[name].shape[1] == 1 and value.shape[1] == 3:
            value = value.sum(1, keepdim=True)  # RGB stem -> 1 channel: sum the kernels
        if value.shape != own[name].shape:
            mismatch.append(name)  # e.g. the fc of another class count
            continue
        new[name] = value
    result = model.load_state_dict(new, strict=False)
    unexpected = [k for k in sd if _translate(k) not in own]
    report = dict(loaded=sorted(new), missing=sorted(result.missing_keys),
                  unexpected=unexpected, shape_mismatch=mismatch)
    if verbose:
        print(f"load_backbone({Path(path).name}): loaded {len(new)} tensors, "
              f"missing {len(report['missing'])}, unexpected {len(unexpected)}, "
              f"shape mismatch {len(mismatch)}")
    if not new:
        raise ValueError(f"{path}: no tensor matched DDAMFN; first keys {list(sd)[:5]}")
    return report
