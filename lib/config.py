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
    """Resolve the project's paths now (FER_DATA_ROOT may change between calls in tests)."""
    data_root = Path(os.environ.get("FER_DATA_ROOT", ROOT / "data" / "raw")).expanduser()
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
    bootstrap: int = 1000  # bootstrap resamples for intervals
    extra: dict = field(default_factory=dict)

    def epochs_for(self, n_train: int) -> int:
        """Epochs so that one fit sees about `train_images` images, within [1, max_epochs]."""
        if n_train <= 0:
            raise ValueError("empty training set")
        return int(max(1, min(self.max_epochs, round(self.train_images / n_train))))

    def budget(self, n_train: int, share: float = 1.0) -> tuple[int, int | None]:
        """(epochs, epoch_images) so a fit sees about `share` of `train_images`: whole epochs
        while that is at least one pass, else one epoch of a random `epoch_images` subset
        (never fewer than 4 batches, so the smoke profile still makes one full pass)."""
        images = max(round(self.train_images * share), 4 * self.batch_size)  # a few steps at least
        if images >= n_train:  # epochs_for raises on an empty set
            return replace(self, train_images=images).epochs_for(n_train), None
        return 1, images

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
    # all the data, small inputs, 3 seeds; 12k images per fit (14 epochs of six_emotions, one
    # random 12k-image epoch of fer2013), so the series on six_emotions, facial_expressions
    # and fer2013 side by side fits one run on 2 cores (139 min measured, one make report)
    "cpu": Profile(
        name="cpu", img_size=64, backbone_size=96, channels=3, seeds=(0, 1, 2), max_epochs=30,
        train_images=12_000, patience=6, batch_size=64, max_per_class=None, pretrained=True,
        backbones=("resnet18", "mobilenet_v2"), few_shot_k=(1, 5, 10, 20), bootstrap=1000,
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


def default_profile() -> str:
    """`gpu` when CUDA is present, else `cpu`."""
    return "gpu" if torch.cuda.is_available() else "cpu"


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
