"""Named augmentation policies on uint8 image batches (N, C, H, W), on any device.

Every policy is vectorised over the batch: random parameters are drawn per sample from one
`torch.Generator` (on the generator's device, then moved to the batch's device, so a seed
gives the same augmentation on CPU and CUDA), and all geometric changes of a sample are
folded into one affine matrix applied with a single `grid_sample`.

Policies (`available()`):
  none      identity
  flip      horizontal flip, p=.5 (study 004's single trial)
  rotate    rotation within +-30 deg (study 004 tried 0/10/20/30 deg)
  standard  study 000: random resized crop scale (.8, 1), flip, rotation +-10 deg,
            brightness/contrast jitter .1
  targeted  study 000's refinement: standard + translation +-10 %, gamma jitter and
            random grayscale (RGB only); `policy('targeted', extra=[...])` adds ops, optionally
            only for some classes: extra=[('erase', {class_idx, ...})]
  shift     flip + a random integer shift of up to 1/12 of the side (reflect-padded): exact
            pixels, no resampling; the fast default for 48 px grayscale (measured: a bilinear
            sub-pixel crop cost about 5 points of fer2013 accuracy at 48 px)
  shift_erase  shift + random erasing (p=.5, up to 20 % of the face, mid-grey): the
            regulariser for fer2013's 40-epoch fits, whose validation loss rises from
            about epoch 22 while training accuracy reaches .82 against .64 on validation
  strong    flip + TrivialAugment-style op (one random op per image, uniform magnitude) +
            random erasing

`strength` in [0, 2] scales every magnitude (angles, shifts, jitter ranges, crop and erase
areas) and the probability of flip/grayscale/erase (capped at the policy's maximum), so
strength 0 is the identity for every policy.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

# An op takes a float batch in [0, 1], a generator and a strength and returns a batch.
Op = Callable[[Tensor, "torch.Generator | None", float], Tensor]


# ---------------------------------------------------------------- random parameters --
def _rand(g: torch.Generator | None, n: int, like: Tensor) -> Tensor:
    """n uniforms in [0, 1) drawn from g on g's device, returned on like's device."""
    dev = g.device if g is not None else torch.device("cpu")
    return torch.rand(n, generator=g, device=dev).to(like.device)


def _uniform(g, n: int, lo: float, hi: float, like: Tensor) -> Tensor:
    return lo + (hi - lo) * _rand(g, n, like)


def _coin(g, n: int, p: float, like: Tensor) -> Tensor:
    return _rand(g, n, like) < p


# ---------------------------------------------------------------- geometry (affine) --
def _warp(x: Tensor, theta: Tensor) -> Tensor:
    """Sample x at output->input affine maps theta (N, 2, 3) in normalised coordinates.

    Reflection padding: rotated/shifted faces keep plausible borders instead of black corners.
    """
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _affine(x: Tensor, *, scale_x=None, scale_y=None, angle_deg=None, shift_x=None,
            shift_y=None, shear_x=None, shear_y=None, flip=None) -> Tensor:
    """Apply per-sample flip, rotation, shear, scale and shift (each an (N,) tensor or None).

    Rotation and shear act in pixel units (so non-square images are not skewed); shifts are
    fractions of the image side; scale < 1 zooms in (a crop of that side fraction).
    """
    n, _, h, w = x.shape
    eye = torch.eye(3, device=x.device, dtype=torch.float32).expand(n, 3, 3).clone()

    def mat(a=None, b=None, c=None, d=None, tx=None, ty=None) -> Tensor:
        m = eye.clone()
        entries = {(0, 0): a, (0, 1): b, (1, 0): c, (1, 1): d, (0, 2): tx, (1, 2): ty}
        for (i, j), v in entries.items():
            if v is not None:
                m[:, i, j] = v.float()
        return m

    m = eye.clone()
    if flip is not None:
        m = mat(a=1.0 - 2.0 * flip.float()) @ m
    if angle_deg is not None or shear_x is not None or shear_y is not None:
        # to pixel-like units, rotate/shear, back: D^-1 R D with D = diag(w, h)
        to_px = mat(a=torch.full((n,), w / 2.0), d=torch.full((n,), h / 2.0))
        from_px = mat(a=torch.full((n,), 2.0 / w), d=torch.full((n,), 2.0 / h))
        lin = eye.clone()
        if angle_deg is not None:
            r = torch.deg2rad(angle_deg.float())
            lin = mat(a=torch.cos(r), b=-torch.sin(r), c=torch.sin(r), d=torch.cos(r)) @ lin
        if shear_x is not None or shear_y is not None:
            lin = mat(b=shear_x, c=shear_y) @ lin
        m = from_px @ lin @ to_px @ m
    if scale_x is not None or scale_y is not None:
        m = mat(a=scale_x, d=scale_y) @ m
    if shift_x is not None or shift_y is not None:
        sx = None if shift_x is None else 2.0 * shift_x
        sy = None if shift_y is None else 2.0 * shift_y
        m = mat(tx=sx, ty=sy) @ m
    return _warp(x, m[:, :2, :])


def _crop_params(g, x: Tensor, s: float, min_scale: float = 0.8) -> dict:
    """Random-resized-crop parameters: area fraction in (1 - (1-min)*s, 1), aspect in
    (3/4, 4/3)**s, centre anywhere the crop fits (as torchvision's RandomResizedCrop)."""
    n = x.shape[0]
    area = _uniform(g, n, max(0.05, 1.0 - (1.0 - min_scale) * s), 1.0, x)
    log_r = _uniform(g, n, -math.log(4 / 3) * s, math.log(4 / 3) * s, x)
    sw = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
    sh = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    # centre offset in half-side units: |c| <= 1 - side, as a fraction of the full side /2
    cx = (_rand(g, n, x) * 2 - 1) * (1 - sw) / 2
    cy = (_rand(g, n, x) * 2 - 1) * (1 - sh) / 2
    return dict(scale_x=sw, scale_y=sh, shift_x=cx, shift_y=cy)


def op_flip(x: Tensor, g, s: float) -> Tensor:
    """Horizontal flip with p = .5 * min(s, 1); exact (no resampling)."""
    m = _coin(g, x.shape[0], 0.5 * min(s, 1.0), x).view(-1, 1, 1, 1)
    return torch.where(m, x.flip(-1), x)


def op_shift(x: Tensor, g, s: float, frac: float = 1 / 12) -> Tensor:
    """Random integer shift in +-frac * side * s per sample, reflect padding (a random crop
    of the padded image, as the usual FER2013 recipe); gathers pixels, never resamples."""
    n, _, h, w = x.shape
    m = int(round(frac * min(h, w) * min(s, 2.0)))
    if m == 0:
        return x
    pad = F.pad(x, (m, m, m, m), mode="reflect")
    dy = (_rand(g, n, x) * (2 * m + 1)).long().clamp_(max=2 * m)
    dx = (_rand(g, n, x) * (2 * m + 1)).long().clamp_(max=2 * m)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return pad[torch.arange(n, device=x.device)[:, None, None, None], chan, rows, cols]


def op_rotate(x: Tensor, g, s: float, max_deg: float = 30.0) -> Tensor:
    """Rotation by a uniform angle in +-max_deg * s."""
    if s == 0:
        return x
    return _affine(x, angle_deg=_uniform(g, x.shape[0], -max_deg * s, max_deg * s, x))


def _geometric(x: Tensor, g, s: float, *, rotate: float, translate: float = 0.0) -> Tensor:
    """Crop + flip + rotation (+ translation) in one resampling."""
    if s == 0:
        return x
    n = x.shape[0]
    p = _crop_params(g, x, s)
    p["flip"] = _coin(g, n, 0.5 * min(s, 1.0), x)
    p["angle_deg"] = _uniform(g, n, -rotate * s, rotate * s, x)
    if translate:
        p["shift_x"] = p["shift_x"] + _uniform(g, n, -translate * s, translate * s, x)
        p["shift_y"] = p["shift_y"] + _uniform(g, n, -translate * s, translate * s, x)
    return _affine(x, **p)


# ---------------------------------------------------------------- photometric --------
def _gray(x: Tensor) -> Tensor:
    """Luma (N, 1, H, W) of a 1- or 3-channel batch."""
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def _per(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def op_brightness(x: Tensor, g, s: float, mag: float = 0.1) -> Tensor:
    return (x * _per(_uniform(g, x.shape[0], 1 - mag * s, 1 + mag * s, x))).clamp(0, 1)


def op_contrast(x: Tensor, g, s: float, mag: float = 0.1) -> Tensor:
    mean = _gray(x).mean((1, 2, 3), keepdim=True)
    c = _per(_uniform(g, x.shape[0], 1 - mag * s, 1 + mag * s, x))
    return ((x - mean) * c + mean).clamp(0, 1)


def op_gamma(x: Tensor, g, s: float, mag: float = 0.3) -> Tensor:
    """Gamma in exp(+-mag * s): simulates lighting changes (study 000's targeted policy)."""
    return x.clamp_min(1e-6) ** _per(torch.exp(_uniform(g, x.shape[0], -mag * s, mag * s, x)))


def op_grayscale(x: Tensor, g, s: float, p: float = 0.2) -> Tensor:
    """Random grayscale (RGB only; a 1-channel batch is returned unchanged)."""
    if x.shape[1] == 1:
        return x
    m = _per(_coin(g, x.shape[0], p * min(s, 1.0), x))
    return torch.where(m, _gray(x).expand_as(x), x)


def op_translate(x: Tensor, g, s: float, mag: float = 0.1) -> Tensor:
    n = x.shape[0]
    return _affine(x, shift_x=_uniform(g, n, -mag * s, mag * s, x),
                   shift_y=_uniform(g, n, -mag * s, mag * s, x))


def op_erase(x: Tensor, g, s: float, p: float = 0.5, max_area: float = 0.2) -> Tensor:
    """Random erasing: one rectangle per chosen image (area up to max_area * s, aspect
    (.3, 3.3)), filled with mid-grey so that normalisation maps it near zero."""
    n, _, h, w = x.shape
    area = _uniform(g, n, 0.02 * min(s, 1.0), max_area * s, x)
    log_r = _uniform(g, n, math.log(0.3), math.log(3.3), x)
    eh = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    ew = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
    y0 = _rand(g, n, x) * (1 - eh)
    x0 = _rand(g, n, x) * (1 - ew)
    on = _coin(g, n, p * min(s, 1.0), x)
    ys = (torch.arange(h, device=x.device) + 0.5) / h
    xs = (torch.arange(w, device=x.device) + 0.5) / w
    inside_y = (ys[None] >= y0[:, None]) & (ys[None] < (y0 + eh)[:, None])
    inside_x = (xs[None] >= x0[:, None]) & (xs[None] < (x0 + ew)[:, None])
    mask = (inside_y[:, :, None] & inside_x[:, None, :] & on[:, None, None]).unsqueeze(1)
    return torch.where(mask, torch.full_like(x, 0.5), x)


def _blur3(x: Tensor) -> Tensor:
    k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype) / 13
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)


def op_trivial(x: Tensor, g, s: float) -> Tensor:
    """TrivialAugment-style: each image gets ONE op with a uniform random magnitude.

    Magnitudes are milder than torchvision's TrivialAugmentWide (135 deg rotations, .99 shear)
    because 48-112 px faces lose their expression under those.
    """
    n = x.shape[0]
    names = ("identity", "rotate", "shear_x", "shear_y", "shift_x", "shift_y", "brightness",
             "contrast", "sharpness", "posterize", "solarize", "autocontrast")
    choice = (_rand(g, n, x) * len(names)).long().clamp(max=len(names) - 1)
    mag = _rand(g, n, x) * s  # in [0, s]
    sign = torch.where(_coin(g, n, 0.5, x), 1.0, -1.0)
    zero = torch.zeros(n, device=x.device)
    sel = lambda name: choice == names.index(name)  # noqa: E731
    geo = dict(
        angle_deg=torch.where(sel("rotate"), 30.0 * mag * sign, zero),
        shear_x=torch.where(sel("shear_x"), 0.3 * mag * sign, zero),
        shear_y=torch.where(sel("shear_y"), 0.3 * mag * sign, zero),
        shift_x=torch.where(sel("shift_x"), 0.15 * mag * sign, zero),
        shift_y=torch.where(sel("shift_y"), 0.15 * mag * sign, zero),
    )
    is_geo = sum(sel(k) for k in ("rotate", "shear_x", "shear_y", "shift_x", "shift_y")).bool()
    out = torch.where(_per(is_geo), _affine(x, **geo), x) if bool(is_geo.any()) else x
    f = _per(1 + 0.5 * mag * sign)  # enhancement factor for brightness/contrast/sharpness
    mean = _gray(out).mean((1, 2, 3), keepdim=True)
    bits = _per(8 - torch.round(4 * mag.clamp(max=1)))  # 8..4 bits kept
    q = 2.0 ** (8 - bits)
    thr = _per(1 - 0.5 * mag.clamp(max=1))
    lo = out.amin((1, 2, 3), keepdim=True)
    hi = out.amax((1, 2, 3), keepdim=True)
    variants = {
        "brightness": out * f,
        "contrast": (out - mean) * f + mean,
        "sharpness": _blur3(out) + (out - _blur3(out)) * f,
        "posterize": torch.floor(out * 255 / q) * q / 255,
        "solarize": torch.where(out >= thr, 1 - out, out),
        "autocontrast": (out - lo) / (hi - lo).clamp_min(1e-3),
    }
    for name, v in variants.items():
        out = torch.where(_per(sel(name)), v, out)
    return out.clamp(0, 1)


OPS: dict[str, Op] = {
    "flip": op_flip, "rotate": op_rotate, "brightness": op_brightness,
    "contrast": op_contrast, "gamma": op_gamma, "grayscale": op_grayscale,
    "translate": op_translate, "erase": op_erase, "trivial": op_trivial, "shift": op_shift,
}


def _standard(x, g, s):
    return op_contrast(op_brightness(_geometric(x, g, s, rotate=10.0), g, s), g, s)


def _targeted(x, g, s):
    x = _geometric(x, g, s, rotate=10.0, translate=0.1)
    for op in (op_brightness, op_contrast, op_gamma, op_grayscale):
        x = op(x, g, s)
    return x


POLICIES: dict[str, list[Op]] = {
    "none": [],
    "flip": [op_flip],
    "rotate": [op_rotate],
    "standard": [_standard],
    "shift": [op_flip, op_shift],
    "shift_erase": [op_flip, op_shift, op_erase],
    "targeted": [_targeted],
    "strong": [op_flip, op_trivial, op_erase],
}


# ---------------------------------------------------------------- public API ---------
@dataclass
class Policy:
    """A named list of ops with a strength; call it on a uint8 batch.

    `extra` entries are op names (see `OPS`), callables `fn(x01, generator, strength)`, or
    `(op, class_indices)` pairs that apply only to samples of those classes (needs labels).
    """

    name: str
    strength: float = 1.0
    extra: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"unknown augmentation policy {self.name!r}; "
                             f"choose from {available()}")
        if not 0.0 <= float(self.strength) <= 2.0:
            raise ValueError(f"augmentation strength must be in [0, 2], got {self.strength}")
        self.extra = [self._resolve(e) for e in self.extra]

    @staticmethod
    def _resolve(e):
        op, classes = (e if isinstance(e, tuple) else (e, None))
        if isinstance(op, str):
            if op not in OPS:
                raise ValueError(f"unknown augmentation op {op!r}; choose from {sorted(OPS)}")
            op = OPS[op]
        if not callable(op):
            raise TypeError(f"extra augmentation must be an op name or callable, got {op!r}")
        return op, (None if classes is None else frozenset(int(c) for c in classes))

    @property
    def is_identity(self) -> bool:
        return (not POLICIES[self.name] and not self.extra) or self.strength == 0

    def __call__(self, x: Tensor, generator: torch.Generator | None = None,
                 labels: Tensor | None = None) -> Tensor:
        _check(x)
        if self.is_identity or x.shape[0] == 0:
            return x
        y = x.float() / 255.0
        for op in POLICIES[self.name]:
            y = op(y, generator, self.strength)
        for op, classes in self.extra:
            if classes is None:
                y = op(y, generator, self.strength)
                continue
            if labels is None:
                raise ValueError("a class-specific augmentation needs the batch labels")
            m = torch.isin(labels.to(y.device), torch.tensor(sorted(classes), device=y.device))
            y = torch.where(_per(m), op(y, generator, self.strength), y)
        return (y * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def _check(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
        got = f"{type(x).__name__} {getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}"
        raise TypeError(f"augmentations take a uint8 tensor batch (N, C, H, W); got {got}")


def available() -> list[str]:
    """Names of the built-in policies."""
    return list(POLICIES)


def policy(name: str, strength: float = 1.0, extra: Iterable | None = None) -> Policy:
    """A `Policy` object: `policy('targeted', extra=[('erase', {3})])(x, generator)`."""
    return Policy(name, float(strength), list(extra or []))


def apply(name: str | Policy, x: Tensor, generator: torch.Generator | None = None,
          strength: float = 1.0, labels: Tensor | None = None) -> Tensor:
    """Augment a uint8 batch with a named policy (or a Policy object; then strength is its own)."""
    pol = name if isinstance(name, Policy) else policy(name, strength)
    return pol(x, generator, labels)
