"""Findings sentences from constructed rows: a clear win, a tie, no evidence, below chance."""
import pandas as pd

from lib.reporting import findings


def table(**arms):
    rows = [{"model": k, "macro_f1_mean": m, "macro_f1_std": s, "n": n,
             "balanced_accuracy_mean": m, "accuracy_mean": m} for k, (m, s, n) in arms.items()]
    return pd.DataFrame(rows)


def test_arms_name_the_ones_below_chance():
    lines = findings.arms(table(a=(0.60, 0.01, 3), b=(0.10, 0.02, 3)), floor=0.15)
    assert lines[0].startswith("**a**") and "0.600 ± 0.010 (3 seeds)" in lines[0]
    assert "not above chance" not in lines[0]
    assert "**not above chance**" in lines[1] and "0.150" in lines[1]
    assert findings.below_chance(table(a=(0.6, 0, 1), b=(0.1, 0, 1)), 0.15) == ["b"]


def cmp(diff, p, seeds=3):
    return pd.DataFrame([{"comparison": "x vs y", "diff": diff, "primary_p": p, "seeds": seeds}])


def test_comparisons_win_tie_and_no_evidence():
    assert findings.comparisons(cmp(0.05, 0.01)) == [
        "x beats y by 0.050 macro-f1 (paired t-test over seeds, p = 0.01)."]
    assert "y beats x" in findings.comparisons(cmp(-0.05, 0.01))[0]
    assert "tie" in findings.comparisons(cmp(0.001, 0.5))[0]
    line = findings.comparisons(cmp(0.04, 0.3, seeds=1))[0]
    assert "no evidence of a difference" in line and "one seed" in line
    official = cmp(0.02, 0.01).assign(split="test_official", metric="accuracy")
    assert findings.comparisons(official) == [
        "x beats y by 0.020 accuracy on the official test split (paired t-test over seeds, p = 0.01)."]


def test_chosen_reads_validation_and_reports_test():
    val = table(a=(0.5, 0, 3), b=(0.6, 0, 3))
    test = table(a=(0.55, 0.01, 3), b=(0.52, 0.02, 3))
    s = findings.chosen(val, test)
    assert "**b**" in s and "0.520 ± 0.020" in s  # chosen on validation, test reported as is


def test_sentences_differ_when_numbers_differ():
    a = findings.arms(table(m=(0.41, 0.01, 3)), 0.2)
    b = findings.arms(table(m=(0.62, 0.03, 3)), 0.2)
    assert a != b


def test_reported_numbers_are_compared_on_their_metric():
    ours = table(small_cnn=(0.34, 0.03, 3), conv4net=(0.6, 0.01, 3))
    ours["accuracy_mean"], ours["accuracy_std"] = [0.35, 0.65], [0.02, 0.01]
    ref = pd.DataFrame([
        {"study": "000", "experiment": "baseline", "variant": float("nan"), "model": "small_cnn",
         "split": "test", "accuracy": 0.17, "macro_f1": 0.127},
        {"study": "004", "experiment": "capacity", "variant": "none", "model": "custom_cnn",
         "split": "test", "accuracy": 0.6169, "macro_f1": float("nan")},
        {"study": "003", "experiment": "imbalance", "variant": "none", "model": "knn",
         "split": "train", "accuracy": 0.49, "macro_f1": 0.15}])
    lines = findings.reported(ours, ref, ["baseline", "capacity", "imbalance"])
    assert len(lines) == 2  # no kNN arm of ours here
    assert "macro-f1 0.127" in lines[0] and "0.340 ± 0.030 (3 seeds): higher" in lines[0]
    assert "accuracy 0.617" in lines[1] and "conv4net" not in lines[1].split(";")[0]
    assert lines[1].endswith("higher.")


def test_official_split_sentences():
    t = pd.DataFrame([{"experiment": "baseline", "model": "small_cnn", "accuracy_test": 0.58,
                       "accuracy_test_official": 0.60, "macro_f1_test": 0.54,
                       "macro_f1_test_official": 0.55},
                      {"experiment": "classical", "model": "hog_linear", "accuracy_test": 0.4,
                       "accuracy_test_official": float("nan"), "macro_f1_test": 0.3,
                       "macro_f1_test_official": float("nan")}])
    lines = findings.official(t)
    assert lines == ["baseline / small_cnn on the official test split: accuracy 0.600, macro-F1 "
                     "0.550 (deduplicated test split: 0.580, 0.540)."]
    assert findings.official(pd.DataFrame()) == []


def test_a_pretrained_report_is_not_set_against_a_scratch_model():
    ours = table(resnet18=(0.5, 0.0, 1))
    ours["accuracy_mean"], ours["accuracy_std"] = [0.55], [float("nan")]
    ref = pd.DataFrame([{"study": "004", "experiment": "capacity", "variant": "pretrained",
                         "model": "resnet18", "split": "test", "accuracy": 0.62,
                         "macro_f1": float("nan")}])
    (line,) = findings.reported(ours, ref, ["capacity"])
    assert "not the same setting" in line and "higher" not in line


def test_tta_sentence_pairs_seeds_and_says_what_validation_prefers():
    rows = []
    for seed, (plain, flip) in enumerate(((0.50, 0.53), (0.52, 0.56), (0.51, 0.545))):
        for split, shift in (("val", 0.1), ("test", 0.0)):
            rows.append(dict(model="m", variant="scratch_shift", seed=seed, split=split, macro_f1=plain + shift))
            rows.append(dict(model="m", variant="scratch_shift+flip_tta", seed=seed, split=split, macro_f1=flip + shift))
    (line,) = findings.tta(rows)
    assert line.startswith("Flip TTA on m: test macro-F1 0.545 vs 0.510 without (+0.035 over 3 seeds, p = ")
    assert "better with TTA; validation prefers it with TTA." in line
    # no TTA rows: nothing to say
    assert findings.tta([r for r in rows if "+flip" not in r["variant"]]) == []


def test_best_value_names_its_lead_and_the_values_it_chose_among():
    rows = [{"variant": v, "split": s, "macro_f1": f, "accuracy": f}
            for v, f in (("s@0", 0.50), ("s@1", 0.47)) for s in ("val", "test")]
    (line,) = findings.best_value("strength", rows)
    assert "prefers strength s@0 (0.500, 0.030 ahead of s@1; one fit each" in line
    assert "among the 2 stored: s@0, s@1" in line
    assert findings.best_value("strength", rows[:2]) == []  # one value is not a choice
    assert findings.best_value("strength", []) == []


def test_p_values_below_a_bootstraps_resolution_read_as_a_bound():
    assert findings.p_text(1 / 1001) == "p < 0.001"
    assert findings.p_text(0.0123) == "p = 0.0123"
    assert findings.p_text(float("nan")) == "no test (one seed)"
    line = findings.comparisons(cmp(0.27, 1 / 1001, seeds=1))[0]
    assert "p < 0.001" in line and "0.000999" not in line


def test_cross_validation_reads_the_held_out_folds_only():
    folds = [{"model": "conv4net", "split": "cv_fold", "macro_f1": f, "balanced_accuracy": .4,
              "accuracy": .7} for f in (0.30, 0.33, 0.36)]
    other = [{"model": "conv4net", "split": "test", "macro_f1": 0.9, "balanced_accuracy": .9,
              "accuracy": .9}]
    (line,) = findings.cv(folds + other, floor=0.14)
    assert line.startswith("3-fold cross-validation of conv4net")
    assert "macro-F1 0.330 ± 0.030" in line and "(macro-F1 0.300-0.360)" in line
    assert "not above chance" not in line
    assert "not above chance" in findings.cv(folds, floor=0.35)[0]
    assert findings.cv([]) == [] and findings.cv(other) == []


def test_silent_classes_name_the_classes_an_arm_gave_up_on():
    def row(variant, seed, split, **f1):
        return {"variant": variant, "seed": seed, "split": split, "macro_f1": 0.3,
                **{f"f1_{k}": v for k, v in f1.items()}}
    rows = [row("before", s, "test", fear=0.3, sad=0.4, happy=0.8) for s in (0, 1)]
    rows += [row("after", s, "test", fear=0.0, sad=0.01, happy=0.8) for s in (0, 1)]
    rows += [row("after", 0, "val", fear=0.5, sad=0.5, happy=0.8)]  # validation never counts
    rows += [row("mixed", 0, "test", fear=0.0, sad=0.4, happy=0.8), row("mixed", 1, "test", fear=0.2, sad=0.4, happy=0.8)]
    lines = findings.silent_classes(rows, target=["fear", "happy"])
    assert lines == ["**after** scores test F1 below 0.02 on fear, sad in every seed (2 seeds); "
                     "1 of them the targeted classes."]
