"""Calibration: reliability bins, expected calibration error, NLL and temperature scaling."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize

from lib.evaluation.arrays import EPS, as_labels, as_numpy, check_probs, check_range


def reliability(y_true, probs, bins: int = 15) -> pd.DataFrame:
    """Per confidence bin (equal width, (lo, hi]): mean confidence, accuracy, count."""
    y = as_labels(y_true)
    p = check_probs(probs, len(y))
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, bins) / count
        acc = np.bincount(which, correct, bins) / count
    edges = np.linspace(0, 1, bins + 1)
    return pd.DataFrame({"bin": np.arange(bins), "lo": edges[:-1], "hi": edges[1:],
                         "confidence": mean_conf, "accuracy": acc, "count": count})


def ece(y_true, probs, bins: int = 15) -> float:
    """Expected calibration error: count-weighted |accuracy - confidence| over bins."""
    r = reliability(y_true, probs, bins)
    r = r[r["count"] > 0]
    return float((r["count"] * (r["accuracy"] - r["confidence"]).abs()).sum() / r["count"].sum())


def nll(y_true, probs) -> float:
    """Mean negative log-likelihood of the true class."""
    y = as_labels(y_true)
    p = check_probs(probs, len(y))
    check_range(p.shape[1], y)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], EPS, None)).mean())


def softmax(logits) -> np.ndarray:
    z = as_numpy(logits).astype(np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def apply_temperature(logits, T: float) -> np.ndarray:
    """Probabilities softmax(logits / T). log(probs) works as logits too."""
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    return softmax(as_numpy(logits).astype(np.float64) / T)


def temperature_scale(logits_val, y_val, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature T minimising validation NLL of softmax(logits / T).

    NLL is convex in 1/T, so a bounded scalar search finds the optimum. Fit on validation only.
    """
    z = as_numpy(logits_val).astype(np.float64)
    y = as_labels(y_val)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need (N, K) logits and N labels, got {z.shape} and {len(y)}")
    if not np.all(np.isfinite(z)):  # log(0) probabilities: clip them rather than fail
        z = np.where(np.isfinite(z), z, math.log(EPS))
    check_range(z.shape[1], y)
    rows = np.arange(len(y))

    def loss(beta: float) -> float:
        s = beta * z
        m = s.max(1)
        return float(np.mean(m + np.log(np.exp(s - m[:, None]).sum(1)) - s[rows, y]))

    res = optimize.minimize_scalar(loss, bounds=(1 / bounds[1], 1 / bounds[0]), method="bounded",
                                   options={"xatol": 1e-6})
    return float(1.0 / res.x)
