"""Classification metrics, bootstrap intervals, paired tests and seed aggregation (calibration: lib.evaluation.calibration).

Conventions (the same in point estimates and in every bootstrap resample):
- per-class precision / recall / F1 use zero_division=0;
- macro averages run over the classes present in y_true or y_pred (scikit-learn's default
  `labels=None`): a class nobody has and nobody predicts does not drag the mean down, a
  class predicted but absent from y_true counts as F1 0 (its false positives are real);
- balanced accuracy is the mean recall over the classes present in y_true;
- ROC-AUC is one-vs-rest per class, NaN for a class absent from y_true, macro over the rest.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from lib.evaluation.arrays import as_labels, as_numpy, as_preds, check_probs, check_range  # noqa: F401
from lib.evaluation.calibration import ece, nll

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
def confusion_batch(y_true: np.ndarray, y_pred: np.ndarray, k: int,
                    idx: np.ndarray | None = None) -> np.ndarray:
    """Confusion counts (rows true), one matrix per row of `idx` (B, M) -> (B, K, K).

    Without `idx`, a single (1, K, K) matrix of all items. One bincount for the whole batch.
    """
    code = y_true * k + y_pred
    if idx is None:
        idx = np.arange(len(code))[None]
    b = idx.shape[0]
    flat = (np.arange(b)[:, None] * (k * k) + code[idx]).ravel()
    return np.bincount(flat, minlength=b * k * k).reshape(b, k, k)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b with 0 where b == 0 (zero_division=0)."""
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of a (B, K, K) stack of confusion matrices, each a (B,) array (per-class: (B, K))."""
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(2), cm.sum(1)
    n = cm.sum((1, 2))
    precision, recall = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * tp, support + predicted)
    seen, present = (support + predicted) > 0, support > 0
    n_seen, n_present = seen.sum(1), present.sum(1)
    return {
        "accuracy": _div(tp.sum(1), n),
        "balanced_accuracy": _div((recall * present).sum(1), n_present),
        "macro_precision": _div((precision * seen).sum(1), n_seen),
        "macro_recall": _div((recall * seen).sum(1), n_seen),
        "macro_f1": _div((f1 * seen).sum(1), n_seen),
        "weighted_precision": _div((precision * support).sum(1), n),
        "weighted_recall": _div((recall * support).sum(1), n),
        "weighted_f1": _div((f1 * support).sum(1), n),
        "precision": precision, "recall": recall, "f1": f1, "support": support,
    }


def _bootstrap_stats(y_true: np.ndarray, y_pred: np.ndarray, k: int, names: Sequence[str],
                     n: int, seed: int, chunk_items: int = 4_000_000) -> dict[str, np.ndarray]:
    """Each named metric over `n` resamples (with replacement) of the items, vectorised.

    Resamples are drawn in chunks so memory stays ~chunk_items * 8 bytes for big test sets.
    """
    m = len(y_true)
    if m == 0:
        raise ValueError("cannot bootstrap an empty set")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, chunk_items // m)
    out: dict[str, list] = {name: [] for name in names}
    for start in range(0, n, per_chunk):
        idx = rng.integers(0, m, size=(min(per_chunk, n - start), m))
        res = from_confusion(confusion_batch(y_true, y_pred, k, idx))
        for name in names:
            out[name].append(res[name])
    return {name: np.concatenate(v) for name, v in out.items()}


def _interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def roc_auc_ovr(y, p) -> np.ndarray:
    """One-vs-rest AUC per class; NaN when a class has no positives (or no negatives)."""
    from sklearn.metrics import roc_auc_score  # lazy: importing sklearn costs seconds

    y, p = as_labels(y), as_numpy(p)
    out = np.full(p.shape[1], np.nan)
    for j in range(p.shape[1]):
        pos = y == j
        if 0 < pos.sum() < len(y):
            out[j] = roc_auc_score(pos, p[:, j])
    return out


def evaluate(y_true, probs, classes: Sequence[str], bootstrap: int = 0, seed: int = 0,
             alpha: float = 0.05) -> dict:
    """Every test-set number a notebook reports, from labels and (N, K) probabilities.

    With bootstrap > 0, `ci` holds 95% percentile intervals for accuracy, balanced
    accuracy and macro-F1 (same resamples for all three).
    """
    classes = [str(c) for c in classes]
    k = len(classes)
    y = as_labels(y_true, classes)
    if y.size == 0:
        raise ValueError("evaluate() got no items")
    p = check_probs(probs, len(y), k)
    check_range(k, y)
    y_pred = p.argmax(1)
    cm = confusion_batch(y, y_pred, k)
    res = from_confusion(cm)
    auc = roc_auc_ovr(y, p)
    defined = auc[~np.isnan(auc)]
    per_class = pd.DataFrame({
        "class": classes, "precision": res["precision"][0], "recall": res["recall"][0],
        "f1": res["f1"][0], "support": res["support"][0].astype(np.int64), "roc_auc": auc,
    })
    report = {k_: float(res[k_][0]) for k_ in (
        "accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1",
        "weighted_precision", "weighted_recall", "weighted_f1")}
    report.update(
        per_class=per_class, confusion=cm[0], classes=classes,
        roc_auc=dict(zip(classes, auc.tolist())),
        roc_auc_macro=float(defined.mean()) if defined.size else float("nan"),
        ece=ece(y, p), nll=nll(y, p), n=int(len(y)),
    )
    if bootstrap > 0:
        boot = _bootstrap_stats(y, y_pred, k, METRICS, bootstrap, seed)
        report["ci"] = {name: _interval(boot[name], alpha) for name in METRICS}
    return report


def _metric_fn(metric: str | Callable, k: int):
    """(y_true, y_pred) -> float for a metric name or a user callable."""
    if callable(metric):
        return metric
    names = ("accuracy", "balanced_accuracy", "macro_f1", "macro_precision", "macro_recall",
             "weighted_f1")
    if metric not in names:
        raise ValueError(f"unknown metric {metric!r}; use one of {names} or a callable")
    return lambda yt, yp: float(from_confusion(confusion_batch(yt, yp, k))[metric][0])


def _num_classes(num_classes: int | None, *arrays) -> int:
    if num_classes is not None:
        return num_classes
    return int(max(int(a.max()) if a.size else 0 for a in arrays)) + 1


def bootstrap_ci(y_true, y_pred_or_probs, metric: str | Callable = "macro_f1", n: int = 1000,
                 seed: int = 0, alpha: float = 0.05, num_classes: int | None = None
                 ) -> tuple[float, float, float]:
    """(point, lo, hi): the metric and its (1 - alpha) percentile bootstrap interval.

    Named metrics are vectorised over resamples; a callable `metric(y_true, y_pred)` is
    called once per resample (slow, for anything else).
    """
    y = as_labels(y_true)
    yp = as_preds(y_pred_or_probs)
    if len(yp) != len(y):
        raise ValueError(f"{len(y)} labels but {len(yp)} predictions")
    raw = as_numpy(y_pred_or_probs)
    k = num_classes or (raw.shape[1] if raw.ndim == 2 else _num_classes(None, y, yp))
    check_range(k, y, yp)
    fn = _metric_fn(metric, k)
    point = float(fn(y, yp))
    if callable(metric):
        rng = np.random.default_rng(seed)
        samples = np.array([fn(y[i], yp[i]) for i in rng.integers(0, len(y), (n, len(y)))])
    else:
        samples = _bootstrap_stats(y, yp, k, (metric,), n, seed)[metric]
    return (point, *_interval(samples, alpha))


def paired_bootstrap(y_true, pred_a, pred_b, metric: str = "macro_f1", n: int = 1000,
                     seed: int = 0, alpha: float = 0.05, num_classes: int | None = None) -> dict:
    """Difference metric(A) - metric(B) on the same test set, with a paired bootstrap.

    Both models see the same resampled items. `p` is two-sided for H0: delta = 0, from the
    bootstrap distribution shifted to zero: (1 + #|d* - delta| >= |delta|) / (n + 1).
    """
    y, a, b = as_labels(y_true), as_preds(pred_a), as_preds(pred_b)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"lengths differ: y={len(y)}, a={len(a)}, b={len(b)}")
    k = _num_classes(num_classes, y, a, b)
    check_range(k, y, a, b)
    fn = _metric_fn(metric, k)
    delta = float(fn(y, a) - fn(y, b))
    if callable(metric):
        idx = np.random.default_rng(seed).integers(0, len(y), (n, len(y)))
        d = np.array([fn(y[i], a[i]) - fn(y[i], b[i]) for i in idx])
    else:  # same seed -> same resamples for both models
        d = (_bootstrap_stats(y, a, k, (metric,), n, seed)[metric]
             - _bootstrap_stats(y, b, k, (metric,), n, seed)[metric])
    lo, hi = _interval(d, alpha)
    p = (1 + np.sum(np.abs(d - delta) >= abs(delta) - 1e-12)) / (n + 1)
    return {"delta": delta, "lo": lo, "hi": hi, "p": float(min(1.0, p)), "n": int(len(y))}


def mcnemar(y_true, pred_a, pred_b, exact: bool | None = None) -> dict:
    """McNemar's test on the items where exactly one model is right.

    b = A right & B wrong, c = A wrong & B right. Exact two-sided binomial when b + c < 25
    (or exact=True), else chi-square with continuity correction.
    """
    y, a, bb = as_labels(y_true), as_preds(pred_a), as_preds(pred_b)
    if not len(y) == len(a) == len(bb):
        raise ValueError(f"lengths differ: y={len(y)}, a={len(a)}, b={len(bb)}")
    ra, rb = a == y, bb == y
    b, c = int(np.sum(ra & ~rb)), int(np.sum(~ra & rb))
    return mcnemar_counts(b, c, exact)


def mcnemar_counts(b: int, c: int, exact: bool | None = None) -> dict:
    """McNemar's test from the two discordant counts."""
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    exact = (b + c) < 25 if exact is None else exact
    if b + c == 0:
        stat, p = 0.0, 1.0
    elif exact:
        stat, p = float(min(b, c)), float(stats.binomtest(b, b + c, 0.5).pvalue)
    else:
        stat = (abs(b - c) - 1) ** 2 / (b + c)
        p = float(stats.chi2.sf(stat, 1))
    method = "exact binomial" if exact else "chi-square (continuity corrected)"
    return {"b": b, "c": c, "statistic": float(stat), "p_value": p, "p": p, "method": method}


def paired_test(a, b) -> dict:
    """Paired t-test (and Wilcoxon signed-rank when n >= 5) of per-seed scores a vs b."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D arrays of equal length, got {a.shape} and {b.shape}")
    n, d = len(a), a - b
    t = p = w = float("nan")
    with warnings.catch_warnings():  # constant differences: scipy warns and returns NaN
        warnings.simplefilter("ignore")
        if n >= 2:
            r = stats.ttest_rel(a, b)
            t, p = float(r.statistic), float(r.pvalue)
        if n >= 5 and np.any(d != 0):
            w = float(stats.wilcoxon(a, b).pvalue)
    return {"mean_diff": float(d.mean()) if n else float("nan"), "t": t, "p_value": p,
            "wilcoxon_p": w, "n": n}


def aggregate(df: pd.DataFrame, by: str | Sequence[str],
              metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """mean, std (ddof=1), min, max of each metric and n rows per group (e.g. over seeds).

    Columns: the `by` keys, then `<metric>_mean`, `_std`, `_min`, `_max`, then `n`.
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [*by, *metrics] if c not in df.columns]
    if missing:
        raise KeyError(f"aggregate: columns {missing} not in {list(df.columns)}")
    g = df.groupby(by, sort=False, dropna=False)
    parts = [g[list(metrics)].agg(["mean", "std", "min", "max"])]
    parts[0].columns = [f"{m}_{s}" for m, s in parts[0].columns]
    out = pd.concat([*parts, g.size().rename("n")], axis=1)
    return out.reset_index()


def fmt_mean_std(agg: pd.DataFrame, metric: str, digits: int = 3) -> pd.Series:
    """'0.512 ± 0.013' strings from an aggregate() table ('0.512' alone when n = 1)."""
    def one(m: float, s: float) -> str:
        return f"{m:.{digits}f}" if pd.isna(s) else f"{m:.{digits}f} ± {s:.{digits}f}"
    return pd.Series([one(m, s) for m, s in zip(agg[f"{metric}_mean"], agg[f"{metric}_std"])],
                     index=agg.index, name=f"{metric}_mean_std")


def chance_level(y_true, num_classes: int | None = None) -> dict:
    """Reference scores of trivial classifiers on these labels.

    accuracy_majority: always predict the commonest class. macro_f1_uniform: expected macro-F1
    of guessing uniformly among `num_classes` (default: the classes present): class k with
    prevalence p_k gets F1 = 2 p_k (1/K) / (p_k + 1/K). balanced_accuracy_uniform = 1/K.
    """
    y = as_labels(y_true)
    if y.size == 0:
        raise ValueError("chance_level() got no labels")
    counts = np.bincount(y)
    prev = counts[counts > 0] / len(y)
    k = num_classes or len(prev)
    if k < len(prev):
        raise ValueError(f"num_classes={k} but {len(prev)} classes are present")
    # guessing also predicts the absent classes, so they count in the macro mean with F1 = 0
    f1 = 2 * prev / k / (prev + 1 / k)
    return {"accuracy_majority": float(prev.max()),
            "macro_f1_majority": float(2 * prev.max() / (1 + prev.max()) / len(prev)),
            "macro_f1_uniform": float(f1.sum() / k),
            "balanced_accuracy_uniform": 1.0 / k, "num_classes": int(k)}
