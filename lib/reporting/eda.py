"""Small analyses for 00_eda: identity leakage of a naive split, annotator agreement."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score
from sklearn.model_selection import train_test_split

from lib.data import labels


def leakage(m: pd.DataFrame, key: str = "group") -> dict:
    """Share of val/test rows whose `key` (person, subject, duplicate hash) also occurs in train."""
    train_keys = set(m.loc[m["split"] == "train", key].dropna())
    held = m[m["split"].isin(["val", "test"]) & m[key].notna()]
    shared = held[key].isin(train_keys)
    return {"key": key, "held_out": int(len(held)), "leaked": int(shared.sum()),
            "share": float(shared.mean()) if len(held) else 0.0}


def naive_split(m: pd.DataFrame, seed: int = 0, fractions=(0.7, 0.15, 0.15)) -> pd.DataFrame:
    """The usual random stratified split that ignores groups (what the seed studies did)."""
    rows = m[m["label"].notna()].copy()
    idx = np.arange(len(rows))
    tr, rest = train_test_split(idx, train_size=fractions[0], stratify=rows["label"],
                                random_state=seed)
    va, te = train_test_split(rest, train_size=fractions[1] / (fractions[1] + fractions[2]),
                              stratify=rows["label"].iloc[rest], random_state=seed)
    split = np.empty(len(rows), dtype=object)
    split[tr], split[va], split[te] = "train", "val", "test"
    rows["split"] = split
    return rows


def leakage_table(m: pd.DataFrame, seed: int = 0,
                  keys=("group", "sha1", "phash")) -> pd.DataFrame:
    """Leakage of ours vs a naive random split, for each key present in the manifest."""
    naive = naive_split(m, seed)
    out = []
    for key in keys:
        if key not in m.columns or m[key].isna().all():
            continue
        for name, frame in [("naive random split", naive), ("this series' split", m)]:
            out.append({"split": name, **leakage(frame, key)})
    return pd.DataFrame(out)


def read_second_annotation(path: str | Path) -> pd.DataFrame:
    """muxspace `500_picts_satz.csv`: no header, CR line endings, `user.id,image,emotion`."""
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    lines = [ln for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ln.strip()]
    rows = [ln.split(",") for ln in lines]
    bad = [ln for ln, r in zip(lines, rows) if len(r) != 3]
    if bad:
        raise ValueError(f"{path}: {len(bad)} line(s) without 3 fields, e.g. {bad[0]!r}")
    df = pd.DataFrame(rows, columns=["source", "image", "raw_label"])
    df["label"] = labels.canonicalize(df["raw_label"])
    return df


def agreement(first: pd.Series, second: pd.Series) -> dict:
    """Percent agreement and Cohen's kappa between two label series aligned on the same index."""
    both = pd.concat([first.rename("a"), second.rename("b")], axis=1, join="inner").dropna()
    if both.empty:
        raise ValueError("the two annotations share no images")
    return {"n": int(len(both)), "percent_agreement": float((both.a == both.b).mean() * 100),
            "cohen_kappa": float(cohen_kappa_score(both.a, both.b))}


def class_mix(m: pd.DataFrame, by: str = "source") -> pd.DataFrame:
    """Share of each class within each value of `by` (e.g. contributor), rows summing to 1."""
    t = pd.crosstab(m[by], m["label"])
    return t.div(t.sum(axis=1), axis=0)


def unseen_sources(m: pd.DataFrame, by: str = "source") -> pd.DataFrame:
    """Per class: training and test images, and the share of its test images whose
    contributor (`by`) gave no training image of that class. A high share means the class
    is learnt from other people's photographs than it is tested on, a shift inside one
    dataset that no amount of training on it removes."""
    out = []
    for cls, g in m.groupby("label"):
        train_src = set(g.loc[g["split"] == "train", by])
        test = g[g["split"] == "test"]
        out.append({"label": cls, "train": int((g["split"] == "train").sum()), "test": len(test),
                    "test_from_unseen_contributor": float((~test[by].isin(train_src)).mean())
                    if len(test) else float("nan")})
    return pd.DataFrame(out).set_index("label")


def unseen_sources_text(table: pd.DataFrame, threshold: float = 0.5) -> str:
    """One sentence naming the classes most of whose test images come from contributors
    that gave none of the class's training images; '' when there are none."""
    hit = table[table["test_from_unseen_contributor"] > threshold]
    if hit.empty:
        return ""
    parts = [f"{c} ({r.test_from_unseen_contributor:.0%} of {int(r.test)} test images)"
             for c, r in hit.iterrows()]
    return ("Classes whose test images mostly come from a contributor with no training image "
            f"of that class: {', '.join(parts)}; a model can learn such a class from the "
            "training contributors' photographs and still miss it on test.")

