"""Profiles, paths, seeding and device choice: the one place run settings live."""
from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(os.environ.get("FER_PROJECT_ROOT", Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class Paths:
    """Where everything lives; every path is derived from the project root or FER_DATA_ROOT."""

    root: Path
    data_root: Path
    splits: Path
    cache: Path
    figures: Path
    reports: Path
    results: Path
    runs: Path


def paths() -> Paths:
    """Resolve the project's paths now (FER_DATA_ROOT may change between calls in tests).

    The one data-root rule: $FER_DATA_ROOT if set, else <root>/../shared/data when that folder
    exists, else <root>/data/raw.
    """
    shared = ROOT.parent / "shared" / "data"
    default = shared if shared.is_dir() else ROOT / "data" / "raw"
    # an empty FER_DATA_ROOT (e.g. `FER_DATA_ROOT= make ...`) counts as unset, not as the cwd
    data_root = Path(os.environ.get("FER_DATA_ROOT") or default).expanduser()
    if not data_root.is_absolute():
        data_root = (Path.cwd() / data_root).resolve()
    return Paths(
        root=ROOT,
        data_root=data_root,
        splits=Path(os.environ.get("FER_SPLITS_DIR", ROOT / "data" / "splits")),
        cache=Path(os.environ.get("FER_CACHE_DIR", ROOT / "data" / "cache")),
        figures=Path(os.environ.get("FER_FIGURES_DIR", ROOT / "figures")),
        reports=Path(os.environ.get("FER_REPORTS_DIR", ROOT / "reports")),
        results=Path(os.environ.get("FER_RESULTS_DIR", ROOT / "results")),
        runs=Path(os.environ.get("FER_RUNS_DIR", ROOT / "runs")),
    )


@dataclass(frozen=True)
class Profile:
    """A run budget. Notebooks read every size, epoch and seed count from here."""

    name: str
    img_size: int  # input side for the small CNNs
    backbone_size: int  # input side for ImageNet backbones (resnet, mobilenet, convnext...)
    channels: int  # 1 = grayscale, 3 = RGB, for the small CNNs
    seeds: tuple[int, ...]  # seeds for the key comparisons
    max_epochs: int  # upper bound on epochs of one fit
    train_images: int  # images seen per fit; epochs = clamp(train_images / n_train)
    patience: int  # early stopping on validation macro-F1
    batch_size: int
    max_per_class: int | None  # subsample each class (smoke) or use all (None)
    pretrained: bool  # ImageNet weights for backbones
    backbones: tuple[str, ...]  # capacity study models beyond the small CNNs
    few_shot_k: tuple[int, ...] = (1, 5, 10, 20)
    large_epochs: int | None = None  # epoch cap on training sets over 5,000 images (lib.training.plan)
    bootstrap: int = 1000  # bootstrap resamples for intervals
    extra: dict = field(default_factory=dict)

    def epochs_for(self, n_train: int) -> int:
        """Epochs so that one fit sees about `train_images` images, within [1, max_epochs]."""
        if n_train <= 0:
            raise ValueError("empty training set")
        return int(max(1, min(self.max_epochs, round(self.train_images / n_train))))

    def as_params(self) -> dict:
        """UPPER_CASE notebook parameters (papermill) for this profile."""
        d = asdict(self)
        d.pop("extra")
        out = {k.upper(): (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
        out["PROFILE"] = out.pop("NAME")
        return out


PROFILES: dict[str, Profile] = {
    # the whole series in a few minutes on 2 CPU cores; used by the tests
    "smoke": Profile(
        name="smoke", img_size=48, backbone_size=48, channels=1, seeds=(0,), max_epochs=1,
        train_images=1, patience=1, batch_size=32, max_per_class=24, pretrained=False,
        backbones=("resnet18",), few_shot_k=(1, 5), bootstrap=100,
    ),
    # all the data, native small inputs (48 px gray, 112 px RGB for ImageNet backbones),
    # 3 seeds; the fits of lib.training.plan train to convergence (cosine over max_epochs, early
    # stopping with patience 8) once, into the fit store, over as many runs as they need.
    # train_images sizes the few-shot fine-tunes of 05 (epochs = train_images / n, capped)
    "cpu": Profile(
        name="cpu", img_size=64, backbone_size=112, channels=3, seeds=(0, 1, 2), max_epochs=40,
        train_images=12_000, patience=8, batch_size=64, max_per_class=None, pretrained=True,
        backbones=("resnet18", "mobilenet_v2"), few_shot_k=(1, 5, 10, 20), bootstrap=1000,
        large_epochs=25,  # fer2013: 25 cosine epochs of 28.7k images; 40 for six_emotions
    ),
    # the seed studies' own settings on a GPU
    "gpu": Profile(
        name="gpu", img_size=160, backbone_size=224, channels=3, seeds=(0, 1, 2, 3, 4),
        max_epochs=30, train_images=10**9, patience=8, batch_size=128, max_per_class=None,
        pretrained=True,
        backbones=("resnet18", "mobilenet_v2", "efficientnet_b0", "convnextv2_tiny",
                   "inception_v3", "vit_small"),
        few_shot_k=(1, 5, 10, 20), bootstrap=2000,
    ),
}


def rel(path: Path | str) -> str:
    """`path` relative to the project root when it lies inside it (printed output and reports
    name no machine's folders), else as given."""
    try:
        return str(Path(path).resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def default_profile() -> str:
    """`gpu` when CUDA is present, else `cpu`."""
    return "gpu" if torch.cuda.is_available() else "cpu"


# the profile this process runs under: figures (and anything else keyed by profile) follow it
# without every caller passing it, since notebooks resolve their profile once, at the top
_ACTIVE_PROFILE: str | None = None


def active_profile() -> str:
    """The profile name last resolved by `get_profile` in this process, else the default."""
    return _ACTIVE_PROFILE or default_profile()


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The named profile (default from hardware), with non-None overrides applied.

    Overrides may be given in lower or UPPER case, as notebooks pass their parameters.
    """
    name = name or default_profile()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    fields = set(Profile.__dataclass_fields__)
    clean = {}
    for k, v in overrides.items():
        key = k.lower()
        if v is None:
            continue
        if key not in fields:
            raise ValueError(f"unknown profile field {k!r}; known: {sorted(fields)}")
        clean[key] = tuple(v) if isinstance(v, list) else v
    global _ACTIVE_PROFILE
    _ACTIVE_PROFILE = name
    return replace(PROFILES[name], **clean)


def device() -> torch.device:
    """The one device choice: CUDA when present, else CPU (MPS is left out: AMP/ops gaps)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
