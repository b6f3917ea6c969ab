"""Cross-dataset evaluation (adaptation: lib.analysis.adaptation).

Two datasets share canonical labels (lib.data.labels), so their label mapping is the intersection
of their classes. A source model is scored on a target over the shared classes only: its
probabilities are restricted to those classes and renormalised (the same as a softmax over the
shared classes' logits), and target images of other classes are excluded and counted.

    ev = domain.evaluate_on(model, target_test, source_classes, bootstrap=1000)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from lib.data import labels
from lib.evaluation import metrics
from lib.training import train

NAMED = ("fer2013", "facial_expressions", "six_emotions", "ckplus48")  # cross-dataset set


# ---------------------------------------------------------------- datasets -----------
def present_datasets(exclude: str | None = None, names: Sequence[str] = NAMED
                     ) -> tuple[list[str], dict[str, str]]:
    """The named datasets found under the data root (minus `exclude`), and why the others
    are missing (the first sentence of data.DatasetNotFound)."""
    from lib import data

    present, missing = [], {}
    for n in names:
        if n == exclude:
            continue
        try:
            data.resolve(n)
            present.append(n)
        except data.DatasetNotFound as e:
            missing[n] = str(e).split(". ")[0]
    return present, missing


def load_target(name: str, size: int, channels: int, max_per_class: int | None = None,
                seed: int = 0, splits: Sequence[str] = ("test",),
                caps: Mapping[str, int | None] | None = None) -> dict:
    """{split: ImageTensors} of a dataset's shared split file; `caps` limits images per class
    of a split (data.subsample, seeded) on top of `max_per_class`."""
    from lib import data

    s = data.load_splits(name, max_per_class=max_per_class, seed=seed)
    out = {}
    for sp in splits:
        rows = s[sp]
        cap = (caps or {}).get(sp)
        if cap is not None:
            rows = data.subsample(rows, cap, seed)
        out[sp] = data.ImageTensors(rows, size=size, channels=channels, classes=s.classes)
    return out


# ---------------------------------------------------------------- label mapping ------
def shared_classes(source: Sequence[str], target: Sequence[str]) -> list[str]:
    """Classes present in both, in canonical order (raises on non-canonical names)."""
    src, tgt = labels.canonicalize(source), labels.canonicalize(target)
    return labels.ordered(set(src) & set(tgt))


def class_counts(ds) -> dict[str, int]:
    """Images per class of a dataset (classes with none included, as 0)."""
    n = torch.bincount(torch.as_tensor(ds.labels).long(), minlength=len(ds.classes))
    return dict(zip(ds.classes, n.tolist()))


def mapping_table(source_classes: Sequence[str], targets: Mapping[str, Sequence[str]],
                  counts: Mapping[str, Mapping[str, int]] | None = None,
                  source: str = "source") -> pd.DataFrame:
    """The label mapping, one row per class of any dataset: is it in the source, and per target
    'scored (n)' (shared), 'excluded (n)' (target only: images left out) or 'logit dropped'
    (source only), with n the target's images of that class when `counts` are given."""
    src = set(source_classes)
    every = set(src).union(*[set(c) for c in targets.values()])
    rows = []
    for c in labels.ordered(every):
        row = {"class": c, source: "yes" if c in src else "-"}
        for name, tc in targets.items():
            n = f" ({(counts or {}).get(name, {}).get(c, 0)})" if counts is not None else ""
            row[name] = (f"scored{n}" if c in src and c in tc else f"excluded{n}" if c in tc
                         else "logit dropped")
        rows.append(row)
    return pd.DataFrame(rows)


def restrict_probs(probs: np.ndarray, classes: Sequence[str], shared: Sequence[str]) -> np.ndarray:
    """Columns of `shared` (in that order), renormalised per row: equal to the softmax of the
    logits restricted to the shared classes."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs of shape {probs.shape} for {len(classes)} classes")
    missing = [c for c in shared if c not in classes]
    if missing or not shared:
        raise ValueError(f"shared classes {list(shared)} not all in {list(classes)}")
    p = probs[:, [list(classes).index(c) for c in shared]]
    total = p.sum(1, keepdims=True)
    # a row with no mass on any shared class (only possible with exact zeros): uniform
    return np.where(total > 0, p / np.where(total > 0, total, 1), 1.0 / len(shared))


@dataclass
class Subset:
    """Images and labels of some classes of a dataset, relabelled to `classes` indices."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    excluded: dict[str, int] = field(default_factory=dict)  # class -> images left out
    index: np.ndarray | None = None  # positions in the original dataset

    def __len__(self) -> int:
        return len(self.labels)


def restrict(ds, shared: Sequence[str]) -> Subset:
    """The images of `ds` whose class is in `shared`, labels re-indexed into `shared`;
    the others are counted per class in `.excluded`."""
    classes, y = list(ds.classes), torch.as_tensor(ds.labels).long()
    unknown = [c for c in shared if c not in classes]
    if unknown:
        raise ValueError(f"classes {unknown} are not in the dataset's {classes}")
    remap = torch.full((len(classes),), -1, dtype=torch.long)
    for j, c in enumerate(shared):
        remap[classes.index(c)] = j
    new = remap[y]
    keep = new >= 0
    counts = torch.bincount(y[~keep], minlength=len(classes)).tolist()
    excluded = {c: int(n) for c, n in zip(classes, counts) if n}
    idx = torch.nonzero(keep).flatten()
    return Subset(ds.images[idx], new[idx], list(shared), excluded, idx.numpy())


def per_class(ds, max_per_class: int, seed: int = 0) -> Subset:
    """At most `max_per_class` images of each class (a seeded random choice, e.g. the k-shot
    set); classes with fewer images give all they have (see `.excluded` for what was left)."""
    y = torch.as_tensor(ds.labels).long()
    rng = np.random.default_rng(seed)
    idx = []
    for j in range(len(ds.classes)):
        pos = np.flatnonzero(y.numpy() == j)
        idx.extend(rng.permutation(pos)[:max_per_class].tolist())
    idx = np.sort(np.asarray(idx, dtype=np.int64))
    left = torch.bincount(y, minlength=len(ds.classes)) - torch.bincount(
        y[idx], minlength=len(ds.classes))
    return Subset(ds.images[idx], y[idx], list(ds.classes),
                  {c: int(n) for c, n in zip(ds.classes, left.tolist()) if n}, idx)


# ---------------------------------------------------------------- scoring ------------
@dataclass
class CrossEval:
    """A model scored on a (target) dataset over the classes it shares with the source."""

    shared: list[str]
    report: dict
    probs: np.ndarray
    labels: np.ndarray
    excluded: dict[str, int]

    @property
    def n_excluded(self) -> int:
        return int(sum(self.excluded.values()))


def _scored(prob_classes: Sequence[str], ds, classes: Sequence[str] | None) -> Subset:
    """The images of ds of the classes shared with `prob_classes` (and `classes`)."""
    shared = shared_classes(prob_classes, ds.classes)
    if classes is not None:
        shared = [c for c in shared if c in set(labels.canonicalize(classes))]
    if not shared:
        raise ValueError(f"no class in common between {list(prob_classes)} and {list(ds.classes)}")
    return restrict(ds, shared)


def _evaluate(sub: Subset, probs: np.ndarray, prob_classes, bootstrap: int, seed: int) -> CrossEval:
    if len(sub) == 0:
        raise ValueError(f"no images of the shared classes {sub.classes} in this dataset")
    p = restrict_probs(probs, prob_classes, sub.classes)
    y = sub.labels.numpy()
    rep = metrics.evaluate(y, p, sub.classes, bootstrap=bootstrap, seed=seed)
    return CrossEval(sub.classes, rep, p, y, sub.excluded)


def score_probs(probs: np.ndarray, prob_classes: Sequence[str], ds, bootstrap: int = 0,
                seed: int = 0, classes: Sequence[str] | None = None) -> CrossEval:
    """Score probabilities over `prob_classes` (one row per image of ds) on the classes shared
    with ds (and with `classes` when given): other classes' images excluded, other classes'
    probabilities dropped."""
    sub = _scored(prob_classes, ds, classes)
    return _evaluate(sub, np.asarray(probs)[sub.index], prob_classes, bootstrap, seed)


def score_with(predict, prob_classes: Sequence[str], ds, bootstrap: int = 0, seed: int = 0,
               classes: Sequence[str] | None = None) -> CrossEval:
    """score_probs for a `predict(subset) -> (n, len(prob_classes))` function, called only on
    the images that are scored."""
    sub = _scored(prob_classes, ds, classes)
    probs = predict(sub) if len(sub) else np.zeros((0, len(prob_classes)))
    return _evaluate(sub, probs, prob_classes, bootstrap, seed)


def evaluate_on(model: nn.Module, ds, source_classes: Sequence[str], bootstrap: int = 0,
                seed: int = 0, tta: bool = False, classes: Sequence[str] | None = None
                ) -> CrossEval:
    """Predict `ds` with a model trained on `source_classes`, score over the shared classes
    (and only `classes` when given)."""
    return score_with(lambda sub: train.predict_proba(model, sub, tta=tta), source_classes, ds,
                      bootstrap, seed, classes)


def row(ev: CrossEval, **fields) -> dict:
    """A result row (lib.evaluation.results) for a cross-dataset score: per-class columns, the scored
    classes ('|'-joined), how many classes and how many images were excluded."""
    from lib.evaluation import results

    return results.row(ev.report, per_class=True, eval_classes="|".join(ev.shared),
                       n_classes=len(ev.shared), n_excluded=ev.n_excluded, **fields)


def compare(a: Sequence[CrossEval], b: Sequence[CrossEval], metric: str = "macro_f1") -> dict:
    """A vs B on the same scored images: paired test over seeds on `metric`, McNemar on the
    first pair's predictions (as experiment.compare does for Runs)."""
    if not a or len(a) != len(b):
        raise ValueError(f"need equally many scores per side, got {len(a)} and {len(b)}")
    if not np.array_equal(a[0].labels, b[0].labels):
        raise ValueError("A and B were scored on different images or classes")
    va, vb = [e.report[metric] for e in a], [e.report[metric] for e in b]
    out = {"a_mean": float(np.mean(va)), "b_mean": float(np.mean(vb))}
    out.update({f"seeds_{k}": v for k, v in metrics.paired_test(va, vb).items()})
    mc = metrics.mcnemar(a[0].labels, a[0].probs.argmax(1), b[0].probs.argmax(1))
    out.update({f"mcnemar_{k}": v for k, v in mc.items()})
    return out


def shift_table(in_domain: Mapping[str, Sequence[CrossEval]],
                out_domain: Mapping[str, Sequence[CrossEval]], metric: str = "macro_f1"
                ) -> pd.DataFrame:
    """Per target: `metric` in domain (source test, shared classes) and out of domain, mean and
    std over seeds, the drop, and a paired t-test over seeds (same model in both; the images
    differ, so no McNemar)."""
    rows = []
    for name, outs in out_domain.items():
        a = [e.report[metric] for e in in_domain[name]]
        b = [e.report[metric] for e in outs]
        t = metrics.paired_test(a, b)
        sd = (lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else np.nan)
        rows.append({"target": name, "classes": ", ".join(outs[0].shared),
                     "n_scored": len(outs[0].labels), "n_excluded": outs[0].n_excluded,
                     "in_domain": np.mean(a), "in_domain_std": sd(a), "out_of_domain": np.mean(b),
                     "out_of_domain_std": sd(b), "drop": t["mean_diff"], "p_value": t["p_value"],
                     "seeds": t["n"]})
    return pd.DataFrame(rows)


def class_drops(in_domain: Mapping[str, Sequence[CrossEval]],
                out_domain: Mapping[str, Sequence[CrossEval]], metric: str = "f1") -> pd.DataFrame:
    """Long table (target, class, in_domain, out_of_domain, drop) of per-class `metric`,
    averaged over seeds."""
    frames = []
    for name, outs in out_domain.items():
        a = pd.concat([e.report["per_class"] for e in in_domain[name]])
        b = pd.concat([e.report["per_class"] for e in outs])
        ga = a.groupby("class", sort=False)[metric].mean().rename("in_domain")
        gb = b.groupby("class", sort=False)[metric].mean().rename("out_of_domain")
        d = pd.concat([ga, gb], axis=1, join="inner")
        frames.append(d.assign(drop=d["in_domain"] - d["out_of_domain"], target=name).reset_index())
    cols = ["target", "class", "in_domain", "out_of_domain", "drop"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def matrix(rows: pd.DataFrame, metric: str = "macro_f1") -> pd.DataFrame:
    """Source (`dataset`) x evaluated dataset (`eval_dataset`) mean `metric` over seeds, from
    cross_dataset test rows: in-domain (all classes) on the diagonal, zero-shot elsewhere."""
    r = rows[(rows["experiment"] == "cross_dataset") & (rows["split"] == "test")
             & rows["variant"].isin(["in_domain", "zero_shot"])]
    m = r.groupby(["dataset", "eval_dataset"])[metric].mean().unstack()
    order = [n for n in NAMED if n in set(m.index) | set(m.columns)]
    order += sorted((set(m.index) | set(m.columns)) - set(order))
    return m.reindex(index=[n for n in order if n in m.index],
                     columns=[n for n in order if n in m.columns])
