"""Leaderboards select on validation, never on test; the README block is generated."""
import numpy as np
import pandas as pd
import pytest

from lib.reporting import summary


def _rows():
    out = []
    # model A: better on val, worse on test; model B: the reverse
    for seed in (0, 1, 2):
        for model, val, test in (("A", 0.60, 0.50), ("B", 0.40, 0.70)):
            for split, f1 in (("val", val), ("test", test)):
                out.append(dict(dataset="d", notebook="02_x", experiment="e", variant="-",
                                model=model, seed=seed, split=split, macro_f1=f1 + 0.01 * seed,
                                accuracy=f1, balanced_accuracy=f1, f1_lo=f1 - .05, f1_hi=f1 + .05))
    out.append(dict(dataset="d", notebook="00_eda", experiment="chance", variant="-", model="m",
                    seed=0, split="test", macro_f1=0.9, accuracy=0.9, balanced_accuracy=0.9))
    return pd.DataFrame(out)


def test_best_is_chosen_on_validation_and_reported_on_test():
    board = summary.leaderboard(_rows())
    best = summary.best_per_dataset(board)
    assert list(best["model"]) == ["A"]
    assert best["macro_f1_mean"].iloc[0] == pytest.approx(0.51)
    assert best["macro_f1_std"].iloc[0] == pytest.approx(0.01)
    assert int(best["seeds"].iloc[0]) == 3


def test_controls_never_win():
    board = summary.leaderboard(_rows())
    assert "chance" not in set(summary.best_per_dataset(board)["experiment"])


def test_fmt():
    assert summary.fmt(0.5, 0.01, 3) == "0.500 ± 0.010 (3 seeds)"
    assert summary.fmt(0.5, np.nan, 1) == "0.500"


def test_seed_studies_best_report_and_peer_reference_only():
    ref = pd.DataFrame([
        dict(study="004", model="a", split="test", macro_f1=np.nan, accuracy=0.62),
        dict(study="004", model="b", split="test", macro_f1=0.48, accuracy=0.57),
        dict(study="004", model="c", split="model_card", macro_f1=0.91, accuracy=0.91),
        dict(study="003", model="cnn", split="train", macro_f1=0.15, accuracy=0.49)])
    # test rows win over a model card; accuracy ranks when a row lacks macro-F1
    assert summary._theirs(ref) == "003 cnn: 0.150 / 0.490 (train); 004 a: – / 0.620"
    peer = pd.DataFrame([
        dict(dataset="s", eval_dataset="f", variant="same_classes", macro_f1=0.1, n=10,
             eval_classes="x|y"),
        dict(dataset="s", eval_dataset="f", variant="reference", macro_f1=0.6, n=10,
             eval_classes="x|y")])
    assert summary._peer(peer, "f") == "0.600 (2 classes, n = 10)"
    assert summary._peer(peer, "other") == "–"


README = """# t

intro

<!-- results:start -->
| dataset | model |
|---|---|
| d | old_cpu_row |
<!-- results:end -->

## The series
"""


@pytest.fixture
def readme(tmp_path, monkeypatch):
    """A README in a tmp project root; readme_table gives '| <profile> rows |'."""
    path = tmp_path / "README.md"
    path.write_text(README, encoding="utf-8")
    monkeypatch.setattr(summary.config, "ROOT", tmp_path)
    monkeypatch.setattr(summary, "readme_table", lambda profile="cpu": f"| {profile} rows |")
    return path


def test_readme_rewrites_only_its_own_profile(readme):
    assert summary.update_readme("gpu")
    text = readme.read_text(encoding="utf-8")
    # the older single-table block is kept as the cpu section, the gpu one added after it
    assert "| d | old_cpu_row |" in text and "| gpu rows |" in text
    assert text.index("<!-- results:cpu -->") < text.index("<!-- results:gpu -->")
    assert text.startswith("# t\n\nintro\n\n") and text.endswith("<!-- results:end -->\n\n"
                                                                 "## The series\n")
    assert summary.update_readme("cpu")
    text = readme.read_text(encoding="utf-8")
    assert "old_cpu_row" not in text and "| cpu rows |" in text and "| gpu rows |" in text
    assert not summary.update_readme("cpu")  # same rows: unchanged
    assert readme.read_text(encoding="utf-8") == text


def test_smoke_never_touches_the_readme(readme):
    assert not summary.update_readme("smoke")
    assert readme.read_text(encoding="utf-8") == README


def test_sections_parse_and_render_round_trip():
    block = ("\n<!-- results:gpu -->\nProfile `gpu`:\n\n| g |\n\n<!-- results:smoke -->\n| s |\n"
             "<!-- results:cpu -->\nProfile `cpu`:\n\n| c |\n")
    found = summary.sections(block)
    assert list(found) == ["gpu", "cpu"] and found["cpu"] == "Profile `cpu`:\n\n| c |"
    out = summary.render_block(found)
    assert out.index("results:cpu") < out.index("results:gpu")  # PROFILES order
    assert summary.sections(out) == found


def test_colab_links_follow_the_git_remote():
    from lib.reporting import summary

    assert summary.github_path("https://github.com/ana/fer-series.git") == "ana/fer-series"
    assert summary.github_path("git@github.com:ana/fer-series.git") == "ana/fer-series"
    assert summary.github_path("https://gitlab.com/ana/x") is None and summary.github_path("") is None
    line = "[open](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/00_eda.ipynb)"
    assert "github/ana/fer-series/blob/main" in summary.colab_links(line, "ana/fer-series")
    assert summary.colab_links(line, None) == line


def test_effects_compare_like_with_like():
    """A 3-level sentiment arm is never set against a 7-class arm, and never chosen as the
    dataset's best model."""
    import pandas as pd

    from lib.reporting import summary

    rows = []
    for seed in (0, 1):
        for exp, var, model, f1 in (("policy", "none", "small_cnn", 0.30),
                                    ("policy", "standard", "small_cnn", 0.40),
                                    ("sentiment", "7-level", "ddamfn", 0.20),
                                    ("sentiment", "3-level", "ddamfn", 0.80)):
            for split in ("val", "test"):
                rows.append({"dataset": "d", "notebook": "02", "experiment": exp, "variant": var,
                             "model": model, "seed": seed, "split": split,
                             "macro_f1": f1 + 0.01 * seed, "accuracy": f1,
                             "balanced_accuracy": f1, "f1_lo": 0, "f1_hi": 1})
    rows = pd.DataFrame(rows)
    board = summary.leaderboard(rows)
    eff = summary.effects(rows, board)
    assert list(eff["experiment"]) == ["policy"]  # the sentiment scales are not compared
    assert summary.best_per_dataset(board).iloc[0]["experiment"] == "policy"


def test_a_study_model_is_matched_under_our_name():
    # study 004 calls Conv4Net "custom_cnn": its 61.69% is set against our conv4net rows
    rows = pd.DataFrame([dict(dataset="fer2013", notebook="03_capacity", experiment="capacity",
                              variant="scratch_shift", model="conv4net", seed=s, split="test",
                              macro_f1=0.6, accuracy=acc)
                         for s, acc in ((0, 0.64), (1, 0.65), (2, 0.66))])
    got = summary.beaten(rows).query("study == '004' and model == 'custom_cnn' and experiment == 'capacity'")
    assert list(got["beaten"]) == ["yes"] and got["ours"].iloc[0] == pytest.approx(0.65)


def test_arms_are_counted_against_the_chance_interval():
    """An arm at or under 00_eda's chance bound is counted and named; controls and other
    label spaces are not arms."""
    from lib.reporting import findings

    rows = []
    for seed in (0, 1):
        for exp, var, model, f1 in (("policy", "none", "small_cnn", 0.40),
                                    ("policy", "strong", "small_cnn", 0.20),
                                    ("sentiment", "3-level", "small_cnn", 0.10),
                                    ("label_shuffle", "-", "small_cnn", 0.05)):
            for split in ("val", "test"):
                rows.append(dict(dataset="d", notebook="02_augmentation", experiment=exp,
                                 variant=var, model=model, seed=seed, split=split,
                                 macro_f1=f1, accuracy=f1, balanced_accuracy=f1, f1_lo=0, f1_hi=1))
    for model, hi in (("majority", 0.15), ("prior_guess", 0.25)):
        rows.append(dict(dataset="d", notebook="00_eda", experiment="chance", variant="-",
                         model=model, seed=0, split="test", macro_f1=0.1, accuracy=0.1,
                         balanced_accuracy=0.1, f1_lo=0.0, f1_hi=hi))
    rows = pd.DataFrame(rows)
    arms = summary.against_chance(summary.leaderboard(rows), rows)
    assert sorted(arms["variant"]) == ["none", "strong"]
    assert arms["chance_hi"].iloc[0] == pytest.approx(0.25)
    share = summary.chance_share(arms).iloc[0]
    assert (share["arms"], share["above_chance"], share["share"]) == (2, 1, 0.5)
    assert share["not_above"] == "02 policy strong small_cnn"
    assert findings.chance(summary.chance_share(arms)) == [
        "d: 1 of 2 trained arms (50%) clear the chance interval of 00_eda; "
        "not above it: 02 policy strong small_cnn."]
    assert "d 1 of 2 (50%)" in summary.chance_line(rows)


def test_official_accuracy_of_the_chosen_entry():
    rows = _rows()
    off = rows[(rows["model"] == "A") & (rows["split"] == "test")].assign(
        split="test_official", accuracy=[0.70, 0.72, 0.74])
    best = summary.best_per_dataset(summary.leaderboard(pd.concat([rows, off])))
    o = summary.official(pd.concat([rows, off]), best).loc["d"]
    assert o["official_accuracy_mean"] == pytest.approx(0.72) and o["official_seeds"] == 3
    none = summary.official(rows, best).loc["d"]  # no official split: nothing to read
    assert not none["official_seeds"] > 0


def test_one_run_entries_show_their_bootstrap_interval():
    b = pd.Series({"f1_lo": 0.31, "f1_hi": 0.42})
    assert summary.interval(b, 1) == " [0.310, 0.420] (1 run, bootstrap 95%)"
    assert summary.interval(b, 3) == ""  # seeds give the spread
    assert summary.interval(pd.Series({"f1_lo": float("nan")}), 1) == ""



def test_averages_of_seeds_are_reported_beside_the_chosen_model_not_chosen():
    rows = _rows()
    avg = rows[(rows["model"] == "A") & (rows["seed"] == 0)].assign(
        notebook="06_ensemble", experiment="ensemble", variant="seeds:03.a", model="soft_vote",
        macro_f1=lambda d: d["macro_f1"] + 0.2)  # better on val than every per-seed entry
    board = summary.leaderboard(pd.concat([rows, avg]))
    assert list(summary.best_per_dataset(board)["model"]) == ["A"]
    assert list(summary.best_per_dataset(board, averages=True)["variant"]) == ["seeds:03.a"]
    line = summary.average_line(pd.concat([rows, avg]))
    assert "d soft_vote (seeds:03.a): macro-F1 0.700" in line
    assert summary.average_line(rows) == ""


def test_classes_never_right_cap_macro_f1():
    rows = _rows()
    rows["f1_a"], rows["f1_b"], rows["f1_c"] = 0.8, 0.5, 0.0
    # one seed of the chosen model gets class b wrong too: b is not zero in EVERY seed
    rows.loc[(rows["model"] == "A") & (rows["seed"] == 1), "f1_b"] = 0.0
    best = summary.best_per_dataset(summary.leaderboard(rows))
    z = summary.zero_classes(best, rows)
    assert list(z["zero"]) == ["c"] and int(z["classes"].iloc[0]) == 3
    assert z["ceiling"].iloc[0] == pytest.approx(2 / 3)
    from lib.reporting import findings
    (line,) = findings.zero_classes(z)
    assert "no test image of c right" in line and "0.667" in line
    rows["f1_c"] = 0.1  # every class learned somewhere: nothing to say
    assert summary.zero_classes(best, rows).empty


def test_training_time_names_the_fits_that_ran_on_two_threads(monkeypatch):
    from lib.training import store

    rec = pd.DataFrame({"dataset": ["a", "a", "b"], "train_seconds": [3600.0, 1800.0, 7200.0],
                        "threads": [1, 2, 1]})
    monkeypatch.setattr(store, "records", lambda profile: rec)
    line = summary.training_time("cpu")
    assert "a 2 fits, 1.50 h (1 of them on 2 threads)" in line
    assert "b 1 fits, 2.00 h;" not in line and line.rstrip().endswith("(one thread a fit unless said).")
    assert "b 1 fits, 2.00 h of training" in line
    monkeypatch.setattr(store, "records", lambda profile: rec.iloc[:0])
    assert summary.training_time("cpu") == ""


def test_a_study_imbalance_number_meets_our_arm_of_that_remedy_only():
    # study 003's "none" is our plain_ce, never the mean over every remedy's small_cnn
    rows = pd.DataFrame([dict(dataset="facial_expressions", notebook="03_capacity",
                              experiment="imbalance", variant=v, model="small_cnn", seed=0,
                              split="test", macro_f1=f1, accuracy=f1)
                         for v, f1 in (("plain_ce", 0.31), ("augment_to_balance", 0.25),
                                       ("undersample", 0.08))])
    got = summary.beaten(rows).query("study == '003'").set_index("variant")["ours"]
    assert got["none"] == pytest.approx(0.31) and got["augment_to_3000"] == pytest.approx(0.25)
