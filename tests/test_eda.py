"""Leakage of a naive split vs a group-aware one; annotator agreement from a CR-only CSV."""
import numpy as np
import pandas as pd
import pytest

from lib.reporting import eda


def _people(n_people=40, per_person=5):
    rows = [dict(path=f"{p}_{i}.jpg", group=f"person{p}", label=["anger", "happiness"][p % 2])
            for p in range(n_people) for i in range(per_person)]
    m = pd.DataFrame(rows)
    # group-aware: whole people to one split
    split = {f"person{p}": ("train" if p < 28 else "val" if p < 34 else "test") for p in range(n_people)}
    m["split"] = m["group"].map(split)
    return m


def test_naive_split_leaks_people_ours_does_not():
    t = eda.leakage_table(_people(), keys=("group",))
    naive = t.loc[t["split"] == "naive random split", "share"].item()
    ours = t.loc[t["split"] == "this series' split", "share"].item()
    assert ours == 0 and naive > 0.5


def test_second_annotation_with_cr_line_endings(tmp_path):
    f = tmp_path / "satz.csv"
    f.write_bytes(b"906,a.jpg,fear\r906,b.jpg,HAPPINESS\r906,c.jpg,neutral\r")
    s = eda.read_second_annotation(f)
    assert list(s["label"]) == ["fear", "happiness", "neutral"]
    first = pd.Series({"a.jpg": "fear", "b.jpg": "anger", "c.jpg": "neutral"})
    a = eda.agreement(first, s.set_index("image")["label"])
    assert a["n"] == 3 and a["percent_agreement"] == pytest.approx(200 / 3)
    assert -1 <= a["cohen_kappa"] < 1


def test_second_annotation_rejects_bad_lines(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_bytes(b"906,a.jpg\r")
    with pytest.raises(ValueError, match="without 3 fields"):
        eda.read_second_annotation(f)


def test_class_mix_rows_sum_to_one():
    m = pd.DataFrame({"source": ["a", "a", "b"], "label": ["anger", "fear", "fear"]})
    assert np.allclose(eda.class_mix(m).sum(axis=1), 1)


def test_unseen_sources_counts_test_images_from_contributors_absent_in_training():
    m = pd.DataFrame({"label": ["a"] * 4 + ["b"] * 4,
                      "split": ["train", "train", "test", "test"] * 2,
                      "source": ["u1", "u1", "u1", "u2", "u1", "u2", "u1", "u2"]})
    t = eda.unseen_sources(m)
    assert t.loc["a", "test_from_unseen_contributor"] == 0.5  # u2 gave no training 'a'
    assert t.loc["b", "test_from_unseen_contributor"] == 0.0
    assert list(t["train"]) == [2, 2] and list(t["test"]) == [2, 2]
    assert eda.unseen_sources_text(t) == ""
    line = eda.unseen_sources_text(t, threshold=0.4)
    assert "a (50% of 2 test images)" in line and "b (" not in line

