"""Tables over a notebook's arms: labels, strengths, one row per shared fit, comparisons."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib.analysis import arms
from lib.evaluation import metrics
from lib.training import experiment


def run(seed: int, acc: float, record: str, n: int = 200, k: int = 3) -> experiment.Run:
    """A Run whose test/val predictions are right on a fraction `acc` of n items."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < acc, y, (y + 1) % k)
    r = experiment.Run("small_cnn", seed, None, pd.DataFrame({"epoch": [1]}), n_params=10,
                       record=None)
    for split in ("val", "test"):
        r.probs[split], r.labels[split] = np.eye(k)[pred], y
        r.reports[split] = metrics.evaluate(y, np.eye(k)[pred], ["a", "b", "c"])
    r.record = record
    return r


def test_labels_and_strength():
    assert arms.label("02.strength.standard@1.5") == "standard@1.5"
    assert arms.arm_id("02.policy.none") == "policy.none"
    assert arms.label("03.conv4net") == "conv4net"
    assert arms.strength("02.strength.standard@1.5", {"augment": "standard"}) == 1.5
    assert arms.strength("02.policy.none", {"augment": "none"}) == 0.0
    assert arms.strength("02.policy.strong", {"augment": "strong"}) == 1.0
    # elsewhere "@" names an input size, not a strength (and a TTA suffix may follow it)
    assert arms.strength("03.mobilenet_v2@160+flip_tta", {"augment": "standard"}) == 1.0


def test_unique_counts_a_shared_fit_once():
    rows = [{"record": "a.json", "split": "test", "arm": "policy.none"},
            {"record": "a.json", "split": "test", "arm": "strength.standard@0"},
            {"record": "b.json", "split": "test", "arm": "policy.standard"},
            {"record": "a.json", "split": "val", "arm": "policy.none"}]
    got = arms.unique(rows)
    assert got["arm"].tolist() == ["policy.none", "policy.standard"]


def test_versus_names_arms_and_skips_a_fit_compared_with_itself():
    good = [run(s, 0.9, f"good{s}") for s in range(3)]
    bad = [run(s, 0.4, f"bad{s}") for s in range(3)]
    table = {"02.policy.strong": good, "02.policy.none": bad, "02.strength.standard@0": bad}
    out = arms.versus(table, [("02.policy.strong", "02.policy.none"),
                              ("02.strength.standard@0", "02.policy.none"),
                              ("02.policy.missing", "02.policy.none")], bootstrap=200)
    assert out["comparison"].tolist() == ["policy.strong vs policy.none"]
    assert out["verdict"].iloc[0] == "policy.strong better"


def test_best_on_val_reads_validation_only():
    rows = [{"variant": "x", "split": "val", "macro_f1": 0.2}, {"variant": "x", "split": "test", "macro_f1": 0.9},
            {"variant": "y", "split": "val", "macro_f1": 0.5}, {"variant": "y", "split": "test", "macro_f1": 0.1}]
    assert arms.best_on_val(rows) == "y"
    assert arms.best_on_val([]) is None
