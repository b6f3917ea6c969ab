"""Leak-free splits: official splits kept, else stratified and group-aware; saved and reused.

Groups (a person, a CK+ subject, a set of exact or near duplicates: the audit's
`split_group`, else `group`) are placed whole, largest first, each into the split whose
per-class counts are furthest below target; ties in size are ordered by the seed. This is
deterministic for a seed and keeps each class within a point or two of its overall share
once the groups are small relative to the classes.

Split files `<splits dir>/<dataset>.csv` (columns key, split; key = path relative to the
dataset root) are written on first use and reused after: every notebook sees the same
split. A manifest with labelled files that the split file does not list raises
`SplitFileMismatch` (pass `resplit=True` to recompute and overwrite); a manifest that is a
subset of the file (subsampled, or filtered by `usable`) simply reads its rows' splits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lib.atomic import write_with
from lib.config import paths

SPLITS = ("train", "val", "test")


class SplitFileMismatch(ValueError):
    """The manifest has labelled files that its saved split file does not know."""


def split_file(dataset: str, seed: int = 0, fractions=(0.7, 0.15, 0.15),
               splits_dir: str | Path | None = None) -> Path:
    """Where a split is saved: `<dataset>.csv` for seed 0 and the default fractions."""
    d = Path(splits_dir) if splits_dir else paths().splits
    tag = "" if seed == 0 else f".seed{seed}"
    if tuple(round(f, 4) for f in fractions) != (0.7, 0.15, 0.15):
        tag += ".frac" + "-".join(f"{round(f * 100)}" for f in fractions)
    return d / f"{dataset}{tag}.csv"


def _groups(m: pd.DataFrame) -> pd.Series:
    return (m["split_group"] if "split_group" in m else m["group"]).astype(str)


def greedy_assign(labels: pd.Series, groups: pd.Series, fractions, seed: int) -> np.ndarray:
    """Index into `fractions` for every row; whole groups, stratified by label."""
    fr = np.asarray(fractions, dtype=float) / sum(fractions)
    classes = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    g_codes, g_names = pd.factorize(groups)
    counts = np.zeros((len(g_names), len(classes)))
    np.add.at(counts, (g_codes, y), 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(g_names))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]  # big groups first, seeded ties
    target = fr[:, None] * counts.sum(0)[None, :]  # splits x classes
    have = np.zeros_like(target)
    weight = 1.0 / np.maximum(counts.sum(0), 1)  # rare classes count as much as common ones
    where = np.empty(len(g_names), dtype=int)
    for g in order:
        # cost of each choice: squared relative distance to target, after adding the group
        after = have[None, :, :] + np.eye(len(fr))[:, :, None] * counts[g][None, None, :]
        cost = (((after - target[None]) * weight) ** 2).sum(axis=(1, 2))
        s = int(np.argmin(cost))
        have[s] += counts[g]
        where[g] = s
    return where[g_codes]


def _compute(m: pd.DataFrame, todo: pd.Series, seed: int, fractions) -> pd.Series:
    """Splits for the rows in `todo`; official splits kept, missing val/test carved out of train."""
    split = m["orig_split"].where(todo, None) if "orig_split" in m else pd.Series(None, index=m.index)
    official = split.notna() & todo
    have = set(split[official])
    if official.sum() == todo.sum() and have >= {"train", "test"} and "val" in have:
        return split
    if official.any():  # e.g. train/ and test/ folders only: carve val out of train, group-aware
        pool = todo & (split == "train")
        names, fr = ["train", "val"], (fractions[0], fractions[1])
        if "test" not in have:
            names, fr = list(SPLITS), fractions
        idx = greedy_assign(m.loc[pool, "label"], _groups(m[pool]), fr, seed)
        split[pool] = np.array(names)[idx]
        rest = todo & split.isna()
        if rest.any():
            raise ValueError(f"{int(rest.sum())} labelled rows lack an official split while others "
                             "have one; cannot mix")
        return split
    idx = greedy_assign(m.loc[todo, "label"], _groups(m[todo]), fractions, seed)
    split[todo] = np.array(SPLITS)[idx]
    return split


def assign_splits(m: pd.DataFrame, seed: int = 0, fractions=(0.7, 0.15, 0.15), save: bool = True,
                  splits_dir: str | Path | None = None, resplit: bool = False) -> pd.DataFrame:
    """A copy of `m` with `split` set for every labelled, present file (None for the rest).

    Reads the saved split file when it exists (unless `resplit`), else computes and, with
    `save`, writes it atomically. Call after `audit()` so duplicates are kept together.
    """
    out = m.copy()
    todo = out["label"].notna() & ~out["missing_file"]
    dataset = str(out["dataset"].iloc[0])
    file = split_file(dataset, seed, fractions, splits_dir)
    if file.exists() and not resplit:
        saved = pd.read_csv(file, dtype=str, keep_default_na=False)
        if saved["key"].duplicated().any():
            raise SplitFileMismatch(f"{file} lists some keys twice; delete it or resplit=True")
        split = out["key"].map(dict(zip(saved["key"], saved["split"])))
        unknown = todo & split.isna()
        if unknown.any():
            ex = out.loc[unknown, "key"].head(3).tolist()
            raise SplitFileMismatch(
                f"{file} does not list {int(unknown.sum()):,} labelled files of this manifest "
                f"(e.g. {ex}): the data changed since the split was saved. Delete the file or "
                "call assign_splits(..., resplit=True) to recompute it (and re-run every notebook)")
        out["split"] = split.where(todo, None).astype(object)
        return out
    out["split"] = _compute(out, todo, seed, fractions).where(todo, None).astype(object)
    if save:
        rows = out.loc[todo, ["key", "split"]].drop_duplicates("key").sort_values("key")
        write_with(file, lambda tmp: rows.to_csv(tmp, index=False))
    return out


def group_overlap(m: pd.DataFrame, column: str | None = None) -> int:
    """Number of groups (default: split_group, else group) found in more than one split."""
    col = column or ("split_group" if "split_group" in m else "group")
    s = m[m["split"].notna()]
    return int((s.groupby(col)["split"].nunique() > 1).sum())


def subsample(m: pd.DataFrame, max_per_class: int | None, seed: int = 0) -> pd.DataFrame:
    """At most `max_per_class` rows per (split, label), chosen reproducibly; None keeps all."""
    if max_per_class is None:
        return m
    rng = np.random.default_rng(seed)
    keys = m["split"].fillna("-").astype(str) + "|" + m["label"].fillna("-").astype(str)
    rank = pd.Series(rng.permutation(len(m)), index=m.index).groupby(keys).rank(method="first")
    return m[rank <= max_per_class]


KFOLD_METHODS = ("greedy", "sklearn")


def kfold(m: pd.DataFrame, k: int = 3, seed: int = 0, method: str = "sklearn") -> pd.DataFrame:
    """Train+val rows, in order, with a `fold` column (0..k-1): stratified, group-aware folds.

    'sklearn' (the default; lib.training.subsets' cv3 folds come from it): StratifiedGroupKFold(k,
    shuffle=True, random_state=seed); 'greedy': `greedy_assign` with equal fractions on the
    same groups (the folds of the series before the fit store). Either way no group is in
    two folds."""
    if method not in KFOLD_METHODS:
        raise ValueError(f"kfold method={method!r}; choose from {KFOLD_METHODS}")
    tv = m[m["split"].isin(["train", "val"]) & m["label"].notna()].copy()
    if method == "greedy":
        tv["fold"] = greedy_assign(tv["label"], _groups(tv), [1.0 / k] * k, seed)
        return tv
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: sklearn costs seconds

    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.empty(len(tv), dtype=np.int64)
    for i, (_, held) in enumerate(cv.split(tv, tv["label"].astype(str), _groups(tv))):
        fold[held] = i
    tv["fold"] = fold
    return tv
