"""lib.evaluation.results: row schema, experiment-keyed record/replace, load, timings, seed reference."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.evaluation import calibration, metrics, results


@pytest.fixture(autouse=True)
def tmp_results(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


def _report(seed=0, n=60, bootstrap=50):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    p = calibration.softmax(rng.normal(size=(n, 3)) + np.eye(3)[y])
    return metrics.evaluate(y, p, ["anger", "happiness", "sadness"], bootstrap=bootstrap)


def test_row_schema_and_values():
    rep = _report()
    r = results.row(rep, experiment="baseline", model="small_cnn", params=np.int64(1234),
                    seed=0, split="test", lr=1e-3, per_class=True)
    assert list(r)[: len(results.COLUMNS)] == list(results.COLUMNS)
    assert r["macro_f1"] == rep["macro_f1"] and r["n"] == 60
    assert (r["f1_lo"], r["f1_hi"]) == rep["ci"]["macro_f1"]
    assert (r["bacc_lo"], r["bacc_hi"]) == rep["ci"]["balanced_accuracy"]
    assert r["params"] == 1234 and type(r["params"]) is int
    assert r["lr"] == 1e-3 and r["f1_happiness"] == pytest.approx(
        rep["per_class"].set_index("class").loc["happiness", "f1"])
    assert isinstance(r["timestamp"], str)
    no_ci = results.row(_report(bootstrap=0), experiment="x")
    assert np.isnan(no_ci["acc_lo"])
    with pytest.raises(TypeError):
        results.row(rep, experiment="x", notes=[1, 2])


def test_record_replaces_by_experiment(tmp_results):
    rows = [results.row(_report(s), model="small_cnn", seed=s, split="test") for s in (0, 1)]
    assert results.record(rows, "01_baseline", "smoke", "six_emotions", experiment="baseline") is None
    assert (tmp_results / "smoke" / "six_emotions" / "01_baseline.csv").exists()
    other = results.row(_report(5), experiment="sanity", model="small_cnn", seed=0, extra=1.5)
    results.record([other], "01_baseline", "smoke", "six_emotions")
    df = results.load()
    assert sorted(df["experiment"]) == ["baseline", "baseline", "sanity"]
    assert list(df.columns[: len(results.COLUMNS)]) == list(results.COLUMNS)
    assert "extra" in df.columns
    # re-run of 'baseline' with one seed: its two rows are replaced, 'sanity' kept
    results.record([results.row(_report(9), model="wider_cnn", seed=0)], "01_baseline",
                   "smoke", "six_emotions", experiment="baseline")
    df = results.load(notebook="01_baseline")
    assert sorted(df["experiment"]) == ["baseline", "sanity"]
    assert df.set_index("experiment").loc["baseline", "model"] == "wider_cnn"
    assert (df["profile"] == "smoke").all() and (df["notebook"] == "01_baseline").all()
    assert not list(tmp_results.rglob("*.tmp"))  # atomic writes leave no temp files


def test_record_errors_and_clear(tmp_results):
    with pytest.raises(ValueError, match="experiment"):
        results.record([results.row(_report())], "01_baseline", "smoke", "fer2013")
    with pytest.raises(ValueError, match="dataset"):
        results.record([results.row(_report(), dataset="rafdb")], "05_domain_shift", "smoke",
                       "fer2013", experiment="x")
    with pytest.raises(ValueError, match="notebook"):
        results.record([results.row(_report())], "../evil", "smoke", "fer2013", experiment="x")
    results.record([results.row(_report(), experiment="a"), results.row(_report(), experiment="b")],
                   "02_augmentation", "cpu", "fer2013")
    results.clear("02_augmentation", "cpu", "fer2013", experiments=["a"])
    assert list(results.load(profile="cpu")["experiment"]) == ["b"]
    results.record([], "02_augmentation", "cpu", "fer2013", experiment="b")
    assert results.load(profile="cpu").empty
    assert results.clear("02_augmentation", "cpu", "fer2013") is not None
    assert results.clear("02_augmentation", "cpu", "fer2013") is None


def test_load_filters_and_fills_from_path(tmp_results):
    results.record([results.row(_report(), experiment="e")], "01_baseline", "smoke", "fer2013")
    results.record([results.row(_report(), experiment="e")], "01_baseline", "cpu", "fer2013")
    results.record([results.row(_report(), experiment="e")], "03_capacity", "cpu", "rafdb")
    # a hand-written file without profile/dataset/notebook columns
    pd.DataFrame({"experiment": ["x"], "accuracy": [0.5]}).to_csv(
        tmp_results / "cpu" / "rafdb" / "07_summary.csv", index=False)
    results.timing("01_baseline", "cpu", "fer2013", 12.5)
    assert len(results.load()) == 4
    assert len(results.load(profile="cpu")) == 3
    assert len(results.load(profile="cpu", dataset="fer2013")) == 1
    hand = results.load(notebook="07_summary")
    assert hand[["profile", "dataset", "notebook"]].iloc[0].tolist() == ["cpu", "rafdb", "07_summary"]
    assert list(results.load(profile="gpu").columns[:3]) == ["profile", "dataset", "notebook"]


def test_timing_replaced_per_notebook(tmp_results):
    results.timing("01_baseline", "smoke", "fer2013", 10)
    results.timing("02_augmentation", "smoke", "fer2013", 20)
    results.timing("01_baseline", "smoke", "fer2013", 30)
    t = results.load_timings()
    assert t.set_index("notebook")["seconds"].to_dict() == {"01_baseline": 30.0,
                                                            "02_augmentation": 20.0}
    assert (tmp_results / "smoke" / "fer2013" / "_timings.csv").exists()


def test_seed_reference_values():
    ref = results.seed_reference()
    assert (ref["kind"] == "reported").all()
    assert set(ref["study"]) == {"000", "001", "002", "003", "004"}
    by = ref.set_index(["study", "experiment", "variant", "model"], drop=False)
    assert by.loc[("000", "augmentation", "none", "small_cnn"), "macro_f1"] == 0.1946
    wider = ref[(ref.study == "000") & (ref.model == "wider_cnn")].iloc[0]
    assert (wider.accuracy, wider.macro_f1) == (0.2197, 0.1585)
    few = ref[(ref.study == "000") & (ref.variant == "few_shot_10")].iloc[0]
    assert (few.accuracy, few.macro_f1) == (0.1365, 0.0645)
    dd = ref[(ref.study == "001") & (ref.model == "ddamfn") & (ref.variant == "7-level")].iloc[0]
    assert (dd.dataset, dd.accuracy, dd.balanced_accuracy) == ("rafdb", 0.9107, 0.8464)
    assert ref.loc[ref.model == "stacking_lr", "accuracy"].item() == 0.9162
    r18 = ref[(ref.study == "002") & (ref.model == "resnet18") & (ref.variant == "none")].iloc[0]
    assert (r18.dataset, r18.accuracy, r18.macro_f1) == ("six_emotions", 0.578, 0.586)
    assert ref.loc[ref.study == "003", "dataset"].eq("facial_expressions").all()
    assert 0.15 in set(ref.loc[ref.study == "003", "macro_f1"])
    cnn = ref[(ref.study == "004") & (ref.model == "custom_cnn") & (ref.split == "test")]
    assert 0.6169 in set(cnn.accuracy) and cnn["macro_f1"].isna().any()
    assert ref["source"].str.len().min() > 5
    assert not results.paths().results.exists()  # reference values are never written
