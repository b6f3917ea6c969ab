"""Named training subsets of a fit (`FitSpec.subset`), composable with '+', applied in order:

    all                 the whole training split
    label_shuffle       training labels permuted (study 002's sanity check), seeded by the fit
    stratified:N        a fixed stratified sample of N training images (seed 0 whatever the
                        fit's seed), for studies that cannot afford a large set on a CPU
    undersample         every class randomly cut to the smallest class (seeded by the fit)
    oversample          every class topped up to the largest with repeats (seeded by the fit)
    cv3:K               train + val pooled, cut into 3 stratified group-aware folds
                        (`data.kfold`); trains on the other two, fold K is held out
    contributor:ID      train and val rows of one contributor (manifest `source` == ID):
                        05's shift inside a dataset
    face_crop           every split decoded from its largest detected face (lib.data.faces);
                        read by store.prepare, a no-op here

e.g. 'stratified:6000+cv3:1'. The held-out fold replaces validation and is only scored,
never used for early stopping or checkpoint choice.
"""
from __future__ import annotations

import copy

import numpy as np
import torch


from lib.data.tensors import concat, take

KINDS = ("all", "label_shuffle", "stratified", "undersample", "oversample", "cv3", "contributor",
         "face_crop")


def parse(subset: str) -> list[tuple[str, str]]:
    """[(kind, argument)] of a subset name; ValueError naming the bad part."""
    out = []
    for part in subset.split("+"):
        kind, _, arg = part.partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown subset {part!r} in {subset!r}; kinds: {KINDS}")
        if kind in ("stratified", "cv3") and not arg.isdigit():
            raise ValueError(f"subset {part!r} needs an integer, e.g. {kind}:2")
        if kind == "contributor" and not arg:
            raise ValueError(f"subset {part!r} needs a contributor id, e.g. contributor:12")
        if kind == "cv3" and int(arg) > 2:
            raise ValueError(f"subset {part!r}: fold must be 0, 1 or 2")
        out.append((kind, arg))
    return out


def holds_out(subset: str) -> bool:
    """True when validation is a held-out CV fold (no early stopping on it)."""
    return any(kind == "cv3" for kind, _ in parse(subset))


def stratified_index(labels, n: int, seed: int = 0) -> np.ndarray:
    """Positions of a stratified random sample of about n items (each class >= 1)."""
    y = np.asarray(labels)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = max(1, int(round(n * len(members) / len(y))))
        out.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(out))


def resample_index(labels, to: str, seed: int) -> np.ndarray:
    """Random under- ('undersample') or over-sampling ('oversample') of every class."""
    y = np.asarray(labels)
    g = np.random.default_rng(seed)
    counts = np.bincount(y)
    present = np.flatnonzero(counts)
    target = counts[present].min() if to == "undersample" else counts.max()
    out = []
    for c in present:
        members = np.flatnonzero(y == c)
        if target <= len(members):  # under: a random subset
            out.append(g.permutation(members)[:target])
        else:  # over: all originals plus random repeats
            out.append(np.concatenate([members, g.choice(members, target - len(members))]))
    return np.concatenate(out)


def apply(subset: str, seed: int, train_ds, val_ds) -> tuple:
    """(train, val) of a fit after its named subset."""
    from lib import data

    for kind, arg in parse(subset):
        if kind == "label_shuffle":
            train_ds = label_shuffle(train_ds, seed=seed)
        elif kind == "stratified":
            train_ds = take(train_ds, stratified_index(train_ds.labels, int(arg)))
        elif kind in ("undersample", "oversample"):
            train_ds = take(train_ds, resample_index(train_ds.labels, kind, seed))
        elif kind == "contributor":
            train_ds, val_ds = (take(d, np.flatnonzero(d.rows["source"].astype(str).eq(arg).to_numpy()))
                                for d in (train_ds, val_ds))
            if not len(train_ds) or not len(val_ds):
                raise ValueError(f"contributor {arg!r} has {len(train_ds)} train and {len(val_ds)} val rows")
        elif kind == "cv3":
            pool = concat(train_ds, val_ds)
            fold = data.kfold(pool.rows, k=3, seed=0)["fold"].to_numpy()
            if len(fold) != len(pool):
                raise ValueError(f"kfold kept {len(fold)} of {len(pool)} pooled rows")
            k = int(arg)
            train_ds, val_ds = take(pool, np.flatnonzero(fold != k)), take(pool, np.flatnonzero(fold == k))
    return train_ds, val_ds


def label_shuffle(ds, seed: int = 0):
    """A shallow copy of ds with `.labels` randomly permuted (the label-shuffling sanity check:
    a model trained on it should fall to chance on real validation labels). Only `.labels`
    changes; other attributes (paths, rows) are shared and keep the true labels."""
    out = copy.copy(ds)
    g = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(ds.labels)
    out.labels = y[torch.randperm(len(y), generator=g)]
    return out
