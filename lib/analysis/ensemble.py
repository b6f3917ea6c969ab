"""Ensembles of trained classifiers' probabilities, and sentiment-scale scoring.

Every combiner has `fit(probs, y)` (a list of (N, K) validation probabilities, one per member)
and `predict_proba(probs) -> (N, K)`:

    stack = ensemble.Stacking(seed=0).fit([p_val_a, p_val_b], y_val)   # validation only
    p_test = stack.predict_proba([p_test_a, p_test_b])                   # test, once
    p_oof = ensemble.out_of_fold(ensemble.Stacking, [p_val_a, p_val_b], y_val)

`out_of_fold` gives honest validation predictions for combiners that are fit on validation
(weighted vote, stacking), so ensembles can be compared and selected on validation without
scoring a meta-learner on the items it was fit to.
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib.data import labels as L
from lib.evaluation import calibration, metrics

Probs = Sequence[np.ndarray]


def _check(probs: Probs, y=None) -> list[np.ndarray]:
    """Members as float64 (N, K) arrays of the same shape (and N labels when y is given)."""
    ps = [np.asarray(p, dtype=np.float64) for p in probs]
    if not ps:
        raise ValueError("an ensemble needs at least one member")
    shape = ps[0].shape
    if len(shape) != 2 or any(p.shape != shape for p in ps):
        raise ValueError(f"members must be (N, K) arrays of one shape, got {[p.shape for p in ps]}")
    if y is not None and len(y) != shape[0]:
        raise ValueError(f"{shape[0]} predictions but {len(y)} labels")
    return ps


def soft_vote(probs: Probs) -> np.ndarray:
    """Mean of the members' probabilities."""
    return np.mean(_check(probs), axis=0)


def weighted_vote(probs: Probs, weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of the members' probabilities (weights are normalised to sum to 1)."""
    ps = _check(probs)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(ps),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"need {len(ps)} non-negative weights with a positive sum, got {w}")
    w = w / w.sum()
    return np.tensordot(w, np.stack(ps), axes=1)


def simplex_grid(members: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors on the simplex with the given step (rows sum to 1)."""
    n = int(round(1 / step))
    if members < 1 or n < 1 or abs(n * step - 1) > 1e-9:
        raise ValueError(f"step must divide 1 (got {step}) and members >= 1 (got {members})")
    rows = [c for c in itertools.product(range(n + 1), repeat=members - 1) if sum(c) <= n]
    return np.array([[*c, n - sum(c)] for c in rows], dtype=np.float64) / n


def _score(y: np.ndarray, p: np.ndarray, k: int, metric: str) -> float:
    """`metric` (a lib.evaluation.metrics.from_confusion key) of the argmax predictions."""
    return float(metrics.from_confusion(metrics.confusion_batch(y, p.argmax(1), k))[metric][0])


class SoftVote:
    """Mean of probabilities; nothing to fit."""

    def fit(self, probs: Probs, y) -> SoftVote:
        _check(probs, y)
        return self

    def predict_proba(self, probs: Probs) -> np.ndarray:
        return soft_vote(probs)


@dataclass
class WeightedVote:
    """Weighted mean; weights from a simplex grid, chosen by validation `metric`.

    Ties (common on small validation sets) go to the lowest validation log-loss, which is
    continuous, so the uniform vote is not favoured or disfavoured by accident.
    """

    step: float = 0.1
    metric: str = "macro_f1"
    weights_: np.ndarray | None = None

    def fit(self, probs: Probs, y) -> WeightedVote:
        ps, y = _check(probs, y), np.asarray(y)
        k = ps[0].shape[1]
        best = (-np.inf, np.inf)
        for w in simplex_grid(len(ps), self.step):
            p = weighted_vote(ps, w)
            key = (_score(y, p, k, self.metric), -calibration.nll(y, p))
            if key[0] > best[0] or (key[0] == best[0] and key[1] > best[1]):
                best, self.weights_ = key, w
        return self

    def predict_proba(self, probs: Probs) -> np.ndarray:
        if self.weights_ is None:
            raise RuntimeError("WeightedVote: call fit first")
        return weighted_vote(probs, self.weights_)


def _folds(y: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds; fewer splits when a class is tiny (at least 2)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    k = int(max(2, min(n_splits, counts[counts > 0].min())))
    if counts.max() < k:
        raise ValueError(f"{len(y)} items with at most {counts.max()} per class are too few "
                         f"for {k}-fold cross-validation")
    with warnings.catch_warnings():  # a class with < k members: sklearn warns, still stratifies
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def out_of_fold(make: Callable[[], object], probs: Probs, y, n_splits: int = 5,
                seed: int = 0) -> np.ndarray:
    """Cross-validated predictions on the fitting set: each item is predicted by a combiner
    `make()` fit on the other folds. Honest validation scores for fitted ensembles."""
    ps, y = _check(probs, y), np.asarray(y, dtype=np.int64)
    out = np.zeros_like(ps[0])
    for tr, te in _folds(y, n_splits, seed):
        comb = make().fit([p[tr] for p in ps], y[tr])
        out[te] = comb.predict_proba([p[te] for p in ps])
    return out


@dataclass
class Stacking:
    """Logistic-regression meta-learner on the members' concatenated probabilities.

    C is chosen from `Cs` by cross-validated `metric` on the fitting (validation) set, then
    the model is refit on all of it. Classes absent from the fitting set get probability 0
    (a logistic regression cannot learn them) and are listed in `missing_`.
    """

    Cs: Sequence[float] = (0.1, 1.0, 10.0)
    cv: int = 5
    seed: int = 0
    class_weight: str | None = "balanced"  # the series scores macro-F1: minority classes count
    metric: str = "macro_f1"
    C_: float | None = None
    cv_scores_: dict = field(default_factory=dict)
    missing_: list[int] = field(default_factory=list)
    note_: str = ""
    model_: object = None
    k_: int = 0

    def _lr(self, C: float):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=2000, class_weight=self.class_weight)

    def _fit_one(self, X: np.ndarray, y: np.ndarray, C: float):
        from threadpoolctl import threadpool_limits

        present = np.unique(y)
        if len(present) == 1:  # nothing to learn: a constant predictor of that class
            return ("const", int(present[0]))
        # one BLAS thread: these fits are tiny, and on a shared 2-core machine the threaded
        # L-BFGS was measured 8x slower (0.32 s vs 0.04 s per fit) than the single-threaded
        with threadpool_limits(1):
            return self._lr(C).fit(X, y)

    def _proba(self, model, X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), self.k_))
        if isinstance(model, tuple):
            out[:, model[1]] = 1.0
        else:
            out[:, model.classes_] = model.predict_proba(X)
        return out

    def fit(self, probs: Probs, y) -> Stacking:
        ps, y = _check(probs, y), np.asarray(y, dtype=np.int64)
        self.k_ = ps[0].shape[1]
        X = np.hstack(ps)
        self.missing_ = sorted(set(range(self.k_)) - set(np.unique(y).tolist()))
        try:
            folds = _folds(y, self.cv, self.seed) if len(self.Cs) > 1 else []
        except ValueError as err:  # too few items to tune: the middle of the grid, said
            folds, self.note_ = [], f"C not tuned: {err}"
            print(f"Stacking: {self.note_}; C = {self.Cs[len(self.Cs) // 2]}")
        if not folds:
            self.C_ = float(self.Cs[len(self.Cs) // 2])
        else:
            for C in self.Cs:
                oof = np.zeros((len(y), self.k_))
                for tr, te in folds:
                    oof[te] = self._proba(self._fit_one(X[tr], y[tr], C), X[te])
                self.cv_scores_[float(C)] = _score(y, oof, self.k_, self.metric)
            # ties -> the smallest C (strongest regularisation): fewest effective parameters
            self.C_ = max(self.cv_scores_, key=lambda c: (self.cv_scores_[c], -c))
        self.model_ = self._fit_one(X, y, self.C_)
        return self

    def predict_proba(self, probs: Probs) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("Stacking: call fit first")
        ps = _check(probs)
        if ps[0].shape[1] != self.k_:
            raise ValueError(f"fitted on {self.k_} classes, got {ps[0].shape[1]}")
        return self._proba(self.model_, np.hstack(ps))


METHODS: dict[str, Callable[[], object]] = {
    "soft_vote": SoftVote, "weighted_vote": WeightedVote, "stacking_lr": Stacking,
}


def combine(members: Sequence, method: str, classes: Sequence[str], bootstrap: int = 0,
            cv: int = 5, seed: int | None = None):
    """An experiment.Run for ensemble `method` over member Runs of one seed.

    The combiner is fit on the members' validation probabilities; the run's 'val' report is
    scored on out-of-fold validation predictions (honest for fitted combiners; in-sample,
    said in `run.note`, when validation is too small to split) and its 'test' report on the
    test probabilities, predicted once, and likewise on any further split every member
    holds labels and probabilities for (e.g. 'test_official'). It needs only the members'
    probabilities (stored fits need no model); `run.params` is the members' total,
    `run.combiner` the combiner. Members come from one seed unless `seed` is given: an
    ensemble of one arm's seeds, which takes that seed's name.
    """
    from lib.training import experiment

    if method not in METHODS:
        raise ValueError(f"unknown ensemble {method!r}; choose from {sorted(METHODS)}")
    seeds = {m.seed for m in members}
    if len(seeds) != 1 and seed is None:
        raise ValueError(f"members come from several seeds {sorted(seeds)}; combine one seed")
    seed = seeds.pop() if seed is None else seed
    extra = [s for s in members[0].labels if s not in ("val", "test")
             and all(s in m.labels and s in m.probs for m in members)]
    for split in ("val", "test", *extra):
        ys = [m.labels[split] for m in members]
        if any(not np.array_equal(ys[0], y) for y in ys[1:]):
            raise ValueError(f"members were scored on different {split} items")
    y_val = members[0].labels["val"]
    make = (lambda: METHODS[method](seed=seed, cv=cv)) if method == "stacking_lr" \
        else METHODS[method]
    val = [m.probs["val"] for m in members]
    comb = make().fit(val, y_val)
    try:
        val_p, note = out_of_fold(make, val, y_val, cv, seed), "val: out-of-fold"
    except ValueError as err:  # a validation set too small to split: score in-sample, said
        val_p, note = comb.predict_proba(val), f"val: in-sample ({err})"
        print(f"combine {method} seed {seed}: {note}")
    probs = {"val": val_p, **{s: comb.predict_proba([m.probs[s] for m in members])
                              for s in ("test", *extra)}}
    history = pd.DataFrame()
    history.attrs["train_seconds"] = sum(m.history.attrs.get("train_seconds") or 0
                                         for m in members)
    run = experiment.Run(method, seed, None, history, n_params=sum(m.params for m in members))
    for split, p in probs.items():
        y = members[0].labels[split]
        run.probs[split], run.labels[split] = p, y
        run.reports[split] = metrics.evaluate(y, p, list(classes), bootstrap=bootstrap, seed=seed)
    run.combiner, run.note = comb, note
    return run


# ---------------------------------------------------------------- sentiment scales ------

def scale(probs: np.ndarray, y, classes: Sequence[str], levels: int | None
          ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(level probabilities, level labels, level names) via lib.data.labels.to_scale.

    levels=None keeps the emotions themselves (the K-level scale).
    """
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if levels is None:
        return p, y, list(classes)
    m, names = L.to_scale(list(classes), levels)
    return p @ m, m.argmax(1)[y], names


def scale_table(classes: Sequence[str]) -> pd.DataFrame:
    """The emotion -> 5-level and 3-level mapping for these classes (lib.data.labels)."""
    return pd.DataFrame({"emotion": list(classes),
                         "5-level": [L.SCALE_5[c] for c in classes],
                         "3-level": [L.SCALE_3[c] for c in classes]})


# ---------------------------------------------------------------- reporting -------------

METRIC_NAMES = ("accuracy", "balanced_accuracy", "macro_f1")
_BOUNDS = {"accuracy": ("acc_lo", "acc_hi"), "balanced_accuracy": ("bacc_lo", "bacc_hi"),
           "macro_f1": ("f1_lo", "f1_hi")}


def ablation(rows: pd.DataFrame, by: Sequence[str] = ("experiment", "variant", "model")
             ) -> pd.DataFrame:
    """Study 001's ablation table from result rows: per model, each test metric's mean and
    std over seeds and the mean of its per-seed bootstrap bounds, beside the validation
    macro-F1 (the selection score) and the number of seeds."""
    by = list(by)
    cols = [c for m in METRIC_NAMES for c in (m, *_BOUNDS[m])]
    agg = metrics.aggregate(rows[rows["split"] == "test"], by, cols)
    out = agg[by].copy()
    for m in METRIC_NAMES:
        out[m], out[f"{m}_std"] = agg[f"{m}_mean"], agg[f"{m}_std"]
        for b in _BOUNDS[m]:
            out[b] = agg[f"{b}_mean"]
    out["seeds"] = agg["n"]
    val = (rows[rows["split"] == "val"].groupby(by, sort=False, dropna=False)["macro_f1"]
           .mean().rename("val_macro_f1").reset_index())
    return out.merge(val, on=by, how="left")


def ablation_text(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The ablation table as 'mean ± std [lo, hi]' strings (no std for a single seed)."""
    out = table[[c for c in table.columns if c not in METRIC_NAMES and not c.endswith(
        ("_std", "_lo", "_hi"))]].copy()
    for m in METRIC_NAMES:
        lo, hi = _BOUNDS[m]
        out[m] = [f"{v:.{digits}f}" + ("" if pd.isna(s) else f" ± {s:.{digits}f}")
                  + f" [{a:.{digits}f}, {b:.{digits}f}]"
                  for v, s, a, b in zip(table[m], table[f"{m}_std"], table[lo], table[hi])]
    out["val_macro_f1"] = out["val_macro_f1"].round(digits)
    return out


def temperature(run, eps: float = 1e-12) -> tuple[float, np.ndarray]:
    """(T, temperature-scaled test probabilities) for a scored Run, T fit on its validation
    predictions. log-probabilities serve as logits: softmax(log p / T) = softmax(z / T)."""
    logp = {s: np.log(np.clip(run.probs[s], eps, None)) for s in ("val", "test")}
    t = calibration.temperature_scale(logp["val"], run.labels["val"])
    return t, calibration.apply_temperature(logp["test"], t)
