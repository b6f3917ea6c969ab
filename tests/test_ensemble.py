"""lib.analysis.ensemble on synthetic probabilities: votes, weights, stacking, out-of-fold, scales."""
from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest
import torch.nn as nn

from lib.analysis import ensemble
from lib.training import experiment
from lib.data import labels
from lib.evaluation import calibration, metrics

K = 3


def _onehotish(y: np.ndarray, k: int, strength: float, rng) -> np.ndarray:
    """Noisy probabilities that lean towards class y (softmax of strength*onehot + noise)."""
    z = rng.normal(0, 1, (len(y), k))
    z[np.arange(len(y)), y] += strength
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _useless(n: int, k: int, rng) -> np.ndarray:
    return rng.dirichlet(np.ones(k), n)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, 600)
    good = _onehotish(y, K, 1.5, rng)
    noise = _useless(len(y), K, rng)
    shifted = _onehotish((y + 1) % K, K, 3.0, rng)  # confident, but always one class off
    return y, good, noise, shifted


def _acc(y, p) -> float:
    return float((p.argmax(1) == y).mean())


def test_soft_vote_of_identical_members_is_the_member(data):
    y, good, *_ = data
    np.testing.assert_allclose(ensemble.soft_vote([good, good, good]), good)
    np.testing.assert_allclose(ensemble.SoftVote().fit([good], y).predict_proba([good]), good)


def test_soft_vote_is_the_mean_and_checks_shapes(data):
    _, good, noise, _ = data
    np.testing.assert_allclose(ensemble.soft_vote([good, noise]), (good + noise) / 2)
    with pytest.raises(ValueError, match="one shape"):
        ensemble.soft_vote([good, noise[:10]])
    with pytest.raises(ValueError, match="at least one"):
        ensemble.soft_vote([])


def test_weighted_vote_normalises_weights(data):
    _, good, noise, _ = data
    np.testing.assert_allclose(ensemble.weighted_vote([good, noise], [3, 1]),
                               0.75 * good + 0.25 * noise)
    with pytest.raises(ValueError):
        ensemble.weighted_vote([good, noise], [1, -1])


def test_simplex_grid_rows_sum_to_one():
    g = ensemble.simplex_grid(3, 0.1)
    assert len(g) == comb(10 + 2, 2)
    np.testing.assert_allclose(g.sum(1), 1.0)
    assert (g >= 0).all()
    with pytest.raises(ValueError):
        ensemble.simplex_grid(3, 0.3)


def test_fitted_weights_sum_to_one_and_favour_the_informative_member(data):
    y, good, noise, _ = data
    wv = ensemble.WeightedVote().fit([noise, good], y)
    assert wv.weights_.sum() == pytest.approx(1.0)
    assert (wv.weights_ >= 0).all()
    assert wv.weights_[1] > wv.weights_[0]


def test_stacking_beats_a_useless_member_and_learns_a_systematic_confusion(data):
    y, good, noise, shifted = data
    fit, held = slice(0, 300), slice(300, None)
    members = [good, noise, shifted]
    st = ensemble.Stacking(seed=0).fit([m[fit] for m in members], y[fit])
    p = st.predict_proba([m[held] for m in members])
    np.testing.assert_allclose(p.sum(1), 1.0)
    # the shifted member is wrong almost always, but a linear meta-learner can undo the shift
    assert _acc(y[held], shifted[held]) < 0.2
    assert _acc(y[held], p) > _acc(y[held], noise[held]) + 0.3
    assert _acc(y[held], p) > _acc(y[held], good[held]) + 0.05
    assert _acc(y[held], p) > _acc(y[held], ensemble.soft_vote([m[held] for m in members]))
    assert st.C_ in st.Cs and set(st.cv_scores_) == {float(c) for c in st.Cs}


def test_out_of_fold_is_honest_where_in_sample_is_not():
    rng = np.random.default_rng(1)
    y = rng.integers(0, K, 60)
    members = [_useless(60, K, rng) for _ in range(8)]  # no signal at all
    make = lambda: ensemble.Stacking(Cs=(100.0,), class_weight=None)  # noqa: E731
    in_sample = make().fit(members, y).predict_proba(members)
    oof = ensemble.out_of_fold(make, members, y, n_splits=5, seed=0)
    assert oof.shape == (60, K)
    np.testing.assert_allclose(oof.sum(1), 1.0)
    assert _acc(y, in_sample) > _acc(y, oof) + 0.1  # fitting on the scored items flatters
    assert _acc(y, oof) < 0.5  # chance is 1/3


def test_stacking_with_a_class_missing_from_validation():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)  # class 2 never appears
    members = [_onehotish(y, K, 2.0, rng), _useless(80, K, rng)]
    st = ensemble.Stacking(seed=0).fit(members, y)
    p = st.predict_proba(members)
    assert p.shape == (80, K) and st.missing_ == [2]
    np.testing.assert_allclose(p[:, 2], 0.0)
    np.testing.assert_allclose(p.sum(1), 1.0)


def test_scale_maps_probabilities_and_labels():
    classes = ["anger", "happiness", "sadness", "surprise"]
    p = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    y = np.array([3, 2])
    p3, y3, names = ensemble.scale(p, y, classes, 3)
    assert names == ["negative", "positive"]
    np.testing.assert_allclose(p3, [[0.4, 0.6], [0.8, 0.2]])
    assert list(y3) == [1, 0]
    p7, y7, names7 = ensemble.scale(p, y, classes, None)
    np.testing.assert_allclose(p7, p)
    assert names7 == classes and list(y7) == [3, 2]
    table = ensemble.scale_table(classes)
    assert list(table["3-level"]) == [labels.SCALE_3[c] for c in classes]


def _run(seed: int, probs: dict, labels_: dict) -> experiment.Run:
    r = experiment.Run("m", seed, nn.Linear(2, 3), pd.DataFrame())
    r.probs, r.labels = probs, labels_
    return r


def test_combine_builds_a_scored_run(data):
    y, good, noise, _ = data
    y, good, noise = y[:200], good[:200], noise[:200]
    lab = {"val": y[:100], "test": y[100:]}
    a = _run(0, {"val": good[:100], "test": good[100:]}, lab)
    b = _run(0, {"val": noise[:100], "test": noise[100:]}, lab)
    run = ensemble.combine([a, b], "stacking_lr", ["a", "b", "c"], bootstrap=20, cv=3)
    assert run.name == "stacking_lr" and run.seed == 0 and run.params == 2 * 9
    assert set(run.reports) == {"val", "test"} and "ci" in run.reports["test"]
    assert run.reports["test"]["accuracy"] == pytest.approx(
        metrics.evaluate(y[100:], run.combiner.predict_proba([good[100:], noise[100:]]),
                         ["a", "b", "c"])["accuracy"])
    rows = experiment.rows([run], experiment="ensemble")
    assert {r["split"] for r in rows} == {"val", "test"}
    with pytest.raises(ValueError, match="seeds"):
        ensemble.combine([a, _run(1, b.probs, lab)], "soft_vote", ["a", "b", "c"])
    with pytest.raises(ValueError, match="unknown ensemble"):
        ensemble.combine([a, b], "median", ["a", "b", "c"])


def test_ablation_table_means_over_seeds():
    base = dict(experiment="e", variant="v", acc_lo=0.1, acc_hi=0.9, bacc_lo=0.1, bacc_hi=0.9,
                f1_lo=0.2, f1_hi=0.8, balanced_accuracy=0.5)
    rows = pd.DataFrame([
        {**base, "model": "a", "seed": 0, "split": "test", "accuracy": 0.5, "macro_f1": 0.4},
        {**base, "model": "a", "seed": 1, "split": "test", "accuracy": 0.7, "macro_f1": 0.6},
        {**base, "model": "a", "seed": 0, "split": "val", "accuracy": 0.9, "macro_f1": 0.9},
        {**base, "model": "b", "seed": 0, "split": "test", "accuracy": 0.3, "macro_f1": 0.2},
    ])
    t = ensemble.ablation(rows).set_index("model")
    assert t.loc["a", "accuracy"] == pytest.approx(0.6)
    assert t.loc["a", "macro_f1_std"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert t.loc["a", "seeds"] == 2 and t.loc["a", "val_macro_f1"] == pytest.approx(0.9)
    assert np.isnan(t.loc["b", "val_macro_f1"])
    text = ensemble.ablation_text(t.reset_index()).set_index("model")
    assert text.loc["a", "accuracy"] == "0.600 ± 0.141 [0.100, 0.900]"
    assert text.loc["b", "macro_f1"] == "0.200 [0.200, 0.800]"


def test_temperature_cools_an_overconfident_model():
    rng = np.random.default_rng(3)
    y = rng.integers(0, K, 400)
    p = _onehotish(y, K, 1.0, rng) ** 4  # sharpened: overconfident for its accuracy
    p /= p.sum(1, keepdims=True)
    r = _run(0, {"val": p[:200], "test": p[200:]}, {"val": y[:200], "test": y[200:]})
    t, after = ensemble.temperature(r)
    assert t > 1.5
    assert calibration.ece(y[200:], after) < calibration.ece(y[200:], p[200:])
    np.testing.assert_array_equal(after.argmax(1), p[200:].argmax(1))


def test_member_sets_add_the_arms_best_on_validation():
    from types import SimpleNamespace

    from lib.analysis import ensemble_study

    def runs(*val):
        return [SimpleNamespace(seed=i, reports={"val": {"macro_f1": v}, "test": {"macro_f1": 1 - v}})
                for i, v in enumerate(val)]

    base = {"a": runs(0.5, 0.6), "b": runs(0.7, 0.7), "c": runs(0.2, 0.3), "d": runs(0.65, 0.65)}
    sets = ensemble_study.member_sets(base, {"pair": ["a", "c"], "absent": ["a", "z"]})
    assert sets["all"] == ["a", "b", "c", "d"]
    assert sets["top2_by_val"] == ["b", "d"] and sets["top3_by_val"] == ["b", "d", "a"]
    assert sets["pair"] == ["a", "c"] and "absent" not in sets
    assert "top3_by_val" not in ensemble_study.member_sets({k: base[k] for k in "abc"}, {})
    assert ensemble_study.partial_note(base) == ""


def test_an_arm_missing_seeds_stays_out_of_the_member_sets():
    # one seed of a strong new arm would cut 'all' and 'top2' to a single run (no spread)
    from types import SimpleNamespace

    from lib.analysis import ensemble_study

    def runs(*val):
        return [SimpleNamespace(seed=i, reports={"val": {"macro_f1": v}}) for i, v in enumerate(val)]

    base = {"a": runs(0.5, 0.6, 0.5), "b": runs(0.4, 0.4, 0.4), "c": runs(0.3, 0.3, 0.3), "new": runs(0.9)}
    sets = ensemble_study.member_sets(base, {"pair": ["a", "new"]})
    assert sets["all"] == ["a", "b", "c"] and sets["top2_by_val"] == ["a", "b"]
    assert sets["pair"] == ["a", "new"]  # a named pair is the study's own choice: kept
    assert ensemble_study.partial_note(base).endswith("new (1 of 3 seeds)")


def test_combine_across_seeds_when_asked_and_scores_further_splits(data):
    y, good, noise, _ = data
    lab = {"val": y[:100], "test": y[100:200], "test_official": y[200:300]}
    a = _run(0, {"val": good[:100], "test": good[100:200], "test_official": good[200:300]}, lab)
    b = _run(1, {"val": noise[:100], "test": noise[100:200], "test_official": noise[200:300]}, lab)
    run = ensemble.combine([a, b], "soft_vote", ["a", "b", "c"], seed=0)
    assert run.seed == 0 and set(run.reports) == {"val", "test", "test_official"}
    np.testing.assert_allclose(run.probs["test_official"], (good[200:300] + noise[200:300]) / 2)
    b.labels = {"val": y[:100], "test": y[100:200]}  # one member without it: not scored there
    assert "test_official" not in ensemble.combine([a, b], "soft_vote", ["a", "b", "c"], seed=0).reports


def _stored(seed: int, y, plain: np.ndarray, flipped: np.ndarray) -> experiment.Run:
    """A run as the store gives it: plain and flip-TTA probabilities on val and test."""
    lab = {"val": y[:100], "test": y[100:200]}
    r = _run(seed, {"val": plain[:100], "test": plain[100:200],
                    "val_tta": flipped[:100], "test_tta": flipped[100:200]}, lab)
    r.reports = {s: metrics.evaluate(lab[s], r.probs[s], ["a", "b", "c"]) for s in lab}
    return r


def test_ensembles_combine_plain_and_tta_views_and_seeds(data):
    from lib.analysis import ensemble_study

    y, good, noise, shifted = data
    base = {"03.a": [_stored(s, y, noise, shifted) for s in (0, 1)],
            "03.b": [_stored(0, y, noise, good)]}
    ens, sets = ensemble_study.ensembles(base, {"all": ["03.a", "03.b"]}, ["a", "b", "c"])
    assert {"all", "all+flip_tta", "seeds:03.a", "seeds:03.a+flip_tta"} == set(sets)
    assert sets["seeds:03.a"] == ["03.a"] and "seeds:03.b" not in sets  # one seed: no average
    assert len(ens["soft_vote", "all"]) == 1  # only seed 0 has both members
    np.testing.assert_allclose(ens["soft_vote", "all+flip_tta"][0].probs["test"],
                               (shifted[100:200] + good[100:200]) / 2)  # built from TTA views
    (seed_run,) = ens["soft_vote", "seeds:03.a"]
    assert seed_run.seed == 0 and seed_run.note == "seeds 0, 1"
    rows = ensemble_study.rows(ens, sets)
    assert {r["members"] for r in rows if r["variant"] == "seeds:03.a"} == {"a"}
    singles = {**base, **ensemble_study.tta_arms(base, ["a", "b", "c"])}
    assert set(singles) == {"03.a", "03.b", "03.a+flip_tta", "03.b+flip_tta"}
    # 03.b's TTA view is the good model: validation picks it as the best single model
    single, best, table = ensemble_study.best_vs_single(singles, ens, bootstrap=20)
    assert single == "03.b+flip_tta" and list(table["split"]) == ["test"]
    for r in [*base["03.b"], *ens[best]]:  # both hold the official split: compared there too
        r.labels["test_official"] = y[200:300]
        r.probs["test_official"] = good[200:300]
        r.reports["test_official"] = metrics.evaluate(y[200:300], good[200:300], ["a", "b", "c"])
    _, _, table = ensemble_study.best_vs_single({"03.b": base["03.b"]}, {best: ens[best]}, bootstrap=20)
    assert list(table["split"]) == ["test", "test_official"]
    assert list(table["metric"]) == ["macro_f1", "accuracy"]


def test_split_averages_keeps_seed_averages_apart():
    from lib.analysis import ensemble_study

    ens = {("soft_vote", "all"): [1], ("soft_vote", "seeds:03.a"): [2],
           ("soft_vote", "seeds:03.a+flip_tta"): [3], ("stacking_lr", "all+flip_tta"): [4]}
    per_seed, averages = ensemble_study.split_averages(ens)
    assert set(per_seed) == {("soft_vote", "all"), ("stacking_lr", "all+flip_tta")}
    assert set(averages) == {("soft_vote", "seeds:03.a"), ("soft_vote", "seeds:03.a+flip_tta")}
