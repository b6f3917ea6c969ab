"""lib.evaluation.metrics against scikit-learn and against hand-computed values."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from lib.evaluation import calibration, metrics

CLASSES = ["anger", "disgust", "fear", "happiness", "sadness"]


def _data(n=400, k=5, missing=2, seed=0):
    """Labels without class `missing`, probabilities informative enough to vary per class."""
    rng = np.random.default_rng(seed)
    present = [c for c in range(k) if c != missing]
    y = rng.choice(present, size=n, p=[0.4, 0.3, 0.2, 0.1])
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y] * rng.random((n, 1))
    return y, calibration.softmax(logits)


def test_evaluate_matches_sklearn_with_missing_class():
    y, p = _data()
    pred = p.argmax(1)
    assert 2 in pred and 2 not in y  # the missing class is predicted: a real edge case
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # evaluate itself must not spam warnings
        r = metrics.evaluate(y, p, CLASSES)
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        P, R, F, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert r[f"{avg}_precision"] == pytest.approx(P)
        assert r[f"{avg}_recall"] == pytest.approx(R)
        assert r[f"{avg}_f1"] == pytest.approx(F)
    P, R, F, S = skm.precision_recall_fscore_support(y, pred, labels=range(5), zero_division=0)
    pc = r["per_class"]
    assert list(pc["class"]) == CLASSES
    np.testing.assert_allclose(pc["precision"], P)
    np.testing.assert_allclose(pc["recall"], R)
    np.testing.assert_allclose(pc["f1"], F)
    np.testing.assert_array_equal(pc["support"], S)
    np.testing.assert_array_equal(r["confusion"], skm.confusion_matrix(y, pred, labels=range(5)))
    assert np.isnan(r["roc_auc"]["fear"])
    for j, c in enumerate(CLASSES):
        if c != "fear":
            assert r["roc_auc"][c] == pytest.approx(skm.roc_auc_score(y == j, p[:, j]))
    assert r["roc_auc_macro"] == pytest.approx(np.nanmean(list(r["roc_auc"].values())))
    assert r["nll"] == pytest.approx(skm.log_loss(y, p, labels=range(5)))
    assert r["n"] == len(y) and 0 <= r["ece"] <= 1


def test_evaluate_accepts_string_labels_and_rejects_bad_probs():
    y, p = _data(n=50)
    r1 = metrics.evaluate(y, p, CLASSES)
    r2 = metrics.evaluate([CLASSES[i] for i in y], p, CLASSES)
    assert r1["macro_f1"] == r2["macro_f1"]
    with pytest.raises(ValueError, match="sum"):
        metrics.evaluate(y, np.log(p), CLASSES)  # logits, not probabilities
    with pytest.raises(ValueError, match="columns"):
        metrics.evaluate(y, p[:, :4], CLASSES)
    with pytest.raises(ValueError, match="not in classes"):
        metrics.evaluate(["joy"] * 50, p, CLASSES)


def test_ece_known_value():
    # all predictions at confidence 0.9 in one bin, 60% correct -> ECE = 0.3
    p = np.tile([0.9, 0.1], (10, 1))
    y = np.array([0] * 6 + [1] * 4)
    assert calibration.ece(y, p) == pytest.approx(0.3)
    rel = calibration.reliability(y, p)
    assert rel["count"].sum() == 10 and len(rel) == 15
    assert rel.loc[rel["count"] > 0, "accuracy"].item() == pytest.approx(0.6)


def test_bootstrap_ci_contains_point_and_shrinks():
    widths = []
    for n in (200, 3000):
        y, p = _data(n=n, seed=1)
        point, lo, hi = metrics.bootstrap_ci(y, p, "macro_f1", n=500, seed=0)
        ref = skm.f1_score(y, p.argmax(1), average="macro", zero_division=0)
        assert point == pytest.approx(ref)
        assert lo < point < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 3000 vs 200 items
    y, p = _data(n=300)
    acc = metrics.bootstrap_ci(y, p, "accuracy", n=300)
    fn = metrics.bootstrap_ci(y, p, lambda a, b: float(np.mean(a == b)), n=300)
    assert acc[0] == pytest.approx(fn[0]) and acc[1] == pytest.approx(fn[1], abs=1e-9)


def test_evaluate_bootstrap_is_fast_and_consistent():
    y, p = _data(n=5000, seed=2)
    t = time.perf_counter()
    r = metrics.evaluate(y, p, CLASSES, bootstrap=1000, seed=0)
    assert time.perf_counter() - t < 5.0
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        lo, hi = r["ci"][name]
        assert lo < r[name] < hi and hi - lo < 0.1


def test_paired_bootstrap_detects_a_better_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 800)
    good = np.where(rng.random(800) < 0.7, y, rng.integers(0, 4, 800))
    bad = np.where(rng.random(800) < 0.4, y, rng.integers(0, 4, 800))
    r = metrics.paired_bootstrap(y, good, bad, "accuracy", n=500, seed=0)
    assert r["delta"] == pytest.approx(np.mean(good == y) - np.mean(bad == y))
    assert r["lo"] > 0 and r["p"] < 0.01
    same = metrics.paired_bootstrap(y, good, good, "macro_f1", n=200)
    assert same["delta"] == 0 and same["p"] == 1.0


def test_mcnemar_known_counts():
    r = metrics.mcnemar_counts(10, 2)
    assert r["method"] == "exact binomial"
    assert r["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 0.0386
    big = metrics.mcnemar_counts(30, 10)
    assert big["statistic"] == pytest.approx((20 - 1) ** 2 / 40)
    assert big["p_value"] == pytest.approx(0.002663, rel=1e-3)
    # from predictions: A right on 10 items where B is wrong, B right on 2 where A is wrong
    y = np.zeros(30, int)
    a = np.r_[np.zeros(10), np.ones(2), np.zeros(18)].astype(int)
    b = np.r_[np.ones(10), np.zeros(2), np.zeros(18)].astype(int)
    r2 = metrics.mcnemar(y, a, b)
    assert (r2["b"], r2["c"]) == (10, 2) and r2["p"] == r["p_value"]


def test_temperature_scaling_lowers_nll():
    rng = np.random.default_rng(0)
    n, k = 600, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.0 * np.eye(k)[y]
    hot = 5 * logits  # over-confident
    T = calibration.temperature_scale(hot, y)
    assert T > 2
    before, after = calibration.nll(y, calibration.softmax(hot)), calibration.nll(y, calibration.apply_temperature(hot, T))
    assert after < before
    assert calibration.ece(y, calibration.apply_temperature(hot, T)) < calibration.ece(y, calibration.softmax(hot))
    # the fitted T is the NLL minimum: nudging it either way is worse
    for f in (0.9, 1.1):
        assert calibration.nll(y, calibration.apply_temperature(hot, T * f)) > after


def test_paired_test_and_aggregate():
    a, b = [0.60, 0.62, 0.61, 0.64, 0.63], [0.55, 0.58, 0.56, 0.57, 0.59]
    r = metrics.paired_test(a, b)
    assert r["mean_diff"] == pytest.approx(0.05) and r["n"] == 5
    assert r["p_value"] < 0.01 and 0 < r["wilcoxon_p"] < 0.1
    assert np.isnan(metrics.paired_test(a[:3], b[:3])["wilcoxon_p"])
    with pytest.raises(ValueError):
        metrics.paired_test(a, b[:4])
    df = pd.DataFrame({"model": ["x"] * 3 + ["y"] * 2, "seed": [0, 1, 2, 0, 1],
                       "accuracy": [0.5, 0.6, 0.7, 0.2, 0.4], "macro_f1": [0.4, 0.5, 0.9, 0.1, 0.3]})
    agg = metrics.aggregate(df, "model", metrics=("accuracy", "macro_f1"))
    x = agg.set_index("model").loc["x"]
    assert x["accuracy_mean"] == pytest.approx(0.6) and x["accuracy_std"] == pytest.approx(0.1)
    assert x["macro_f1_min"] == 0.4 and x["macro_f1_max"] == 0.9 and x["n"] == 3
    assert list(metrics.fmt_mean_std(agg, "accuracy")) == ["0.600 ± 0.100", "0.300 ± 0.141"]
    with pytest.raises(KeyError):
        metrics.aggregate(df, "model")  # balanced_accuracy missing


def test_chance_level():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    c = metrics.chance_level(y)
    assert c["accuracy_majority"] == pytest.approx(0.6)
    # simulate uniform guessing: its expected macro-F1 matches the closed form
    rng = np.random.default_rng(0)
    sims = [skm.f1_score(y, rng.integers(0, 3, 100), average="macro") for _ in range(400)]
    assert c["macro_f1_uniform"] == pytest.approx(np.mean(sims), abs=0.01)
    assert metrics.chance_level(y, num_classes=6)["macro_f1_uniform"] < c["macro_f1_uniform"]
