"""Array checks shared by metrics and calibration: numpy views, integer labels, probabilities."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-12  # floor for log(0) probabilities


def as_numpy(x) -> np.ndarray:
    """numpy view of a list, array or (CPU/CUDA) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def as_labels(y, classes: Sequence[str] | None = None) -> np.ndarray:
    """Integer labels; string labels are mapped through `classes`."""
    y = as_numpy(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.dtype.kind == "O" and all(isinstance(v, (int, np.integer)) for v in y):
        y = y.astype(np.int64)
    if y.dtype.kind in "USO":
        if classes is None:
            raise ValueError("string labels need `classes` to map them to indices")
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({str(v) for v in y} - set(index))
        if unknown:
            raise ValueError(f"labels not in classes {list(classes)}: {unknown}")
        return np.array([index[v] for v in y], dtype=np.int64)
    if y.size and y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise ValueError("labels must be integers")
    return y.astype(np.int64)


def check_probs(probs, n: int, k: int | None = None) -> np.ndarray:
    p = as_numpy(probs).astype(np.float64)
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"probs must be (N={n}, K), got {p.shape}")
    if k is not None and p.shape[1] != k:
        raise ValueError(f"probs have {p.shape[1]} columns but {k} classes were given")
    if not np.all(np.isfinite(p)) or p.min() < 0 or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise ValueError("probs must be finite, non-negative rows summing to 1 "
                         "(got logits? use softmax or apply_temperature)")
    return p


def as_preds(y_pred_or_probs) -> np.ndarray:
    """Predicted indices from labels (1-D) or probabilities / scores (2-D, argmax)."""
    a = as_numpy(y_pred_or_probs)
    return a.argmax(1).astype(np.int64) if a.ndim == 2 else as_labels(a)


def check_range(k: int, *ys: np.ndarray) -> None:
    for y in ys:
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"labels must lie in [0, {k}), got range [{y.min()}, {y.max()}]")
