"""04's steps over stored fits: the model chosen on validation, its confused class pairs, what
the errors have in common, and the targeted policy's fits (study 000's targeted policy plus
the extras the validation evidence on the target classes asks for, on every image; and
the same extras on the target classes only, a class-conditional variant that is a shortcut).

    D = targeted.derive(P, DATASET, splits)   # choose, targets, image_stats, probe, extras
    D.specs()                                  # the after fits' store specs, every seed
    D.specs(class_only=True)                   # the shortcut variant
    arms, why = targeted.plan_arms(P, DATASET, splits)  # the same, for lib.plan
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from lib.analysis import studies
from lib.training import augment, experiment, plan, store

EFFECT = 0.2  # |Cohen's d| from which an image statistic counts as different (a small effect)
# The after policy stacks the extras on study 000's targeted policy, and learning slows: at
# the before fits' schedule (25 epochs, patience 8) facial_expressions' after fits were still
# climbing at epoch 25 (train accuracy 0.32-0.40), one stopped at epoch 11 in its first
# plateau, and all three sat at chance on test. So the after fits get this many times the
# before fits' epochs and patience (which favours after; the notebook says so).
AFTER_SCHEDULE = 2
NB = "04_targeted_augmentation"


def choose(P, dataset: str, splits) -> tuple[str, list]:
    """The 02 policy arm with the best mean validation macro-F1 among those with every seed
    (its 'none' arm is 01's baseline fit); store.MissingFit while none is stored."""
    cands = studies.fits(P, dataset, splits, "02_augmentation", section="policy")
    if not cands:
        raise store.MissingFit(f"{dataset}: no 02 policy arm is stored; `python -m lib.plan "
                               "--train --only 02` trains them")
    most = max(len(r) for r in cands.values())
    full = {n: r for n, r in cands.items() if len(r) == most}
    best = max(full, key=lambda n: np.mean([r.reports["val"]["macro_f1"] for r in full[n]]))
    return best, full[best]


def targets(runs: Sequence, classes: Sequence[str], n_pairs: int = 2) -> tuple[pd.DataFrame, list[str]]:
    """(every class pair ranked by validation confusion summed over the runs, the classes of
    the `n_pairs` most confused pairs with any confusion): the target classes."""
    cm = sum(r.reports["val"]["confusion"] for r in runs)
    pairs = experiment.confused_pairs(cm, list(classes))
    top = pairs[pairs["rate"] > 0].head(n_pairs)
    return pairs, [c for c in classes if c in set(top["a"]) | set(top["b"])]


def cohen_d(a: torch.Tensor, b: torch.Tensor) -> float:
    """Standardised mean difference of two samples (pooled standard deviation)."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = ((a.var() * (len(a) - 1) + b.var() * (len(b) - 1)) / (len(a) + len(b) - 2)).sqrt()
    return float((a.mean() - b.mean()) / pooled.clamp_min(1e-8))


def image_stats(train_ds, target_idx: Sequence[int]) -> pd.DataFrame:
    """Mean brightness and RMS contrast of the target classes' training images against the
    others', with Cohen's d; `different` where |d| >= EFFECT."""
    x = train_ds.images.float() / 255
    stats = {"brightness": x.mean((1, 2, 3)), "contrast": x.std((1, 2, 3))}
    inside = torch.isin(torch.as_tensor(train_ds.labels), torch.tensor(list(target_idx), dtype=torch.long))
    out = pd.DataFrame([{"statistic": k, "target_mean": float(v[inside].mean()) if inside.any() else float("nan"),
                         "other_mean": float(v[~inside].mean()), "cohen_d": cohen_d(v[inside], v[~inside])}
                        for k, v in stats.items()])
    out["different"] = out["cohen_d"].abs() >= EFFECT
    return out


def candidates(channels: int) -> list[str]:
    """The single ops the probe tries (grayscale does nothing to one channel)."""
    return [op for op in augment.OPS if op != "trivial" and not (op == "grayscale" and channels == 1)]


def probe(runs: Sequence, val_ds, index, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """How often each candidate op, applied once (fixed generator) to the validation images
    `index`, changes a run's prediction, averaged over runs; and the ops above the mean.
    The predictions on the perturbed images are kept in each run's record (so a re-render
    needs no checkpoint)."""
    idx = np.asarray(index, dtype=np.int64)
    if not len(idx) or not runs:
        return pd.DataFrame(columns=["perturbation", "n", "changed", "acc_before", "acc_after"]), []
    tag = hashlib.sha256(idx.tobytes()).hexdigest()[:8]
    sub = _take(val_ds, idx)
    y = torch.as_tensor(sub.labels).numpy()
    base = [r.probs["val"][idx].argmax(1) for r in runs]  # the stored, unperturbed predictions
    out = []
    for op in candidates(sub.images.shape[1]):
        moved = copy.copy(sub)
        moved.images = augment.apply(augment.policy("none", extra=[op]), sub.images,
                                     torch.Generator().manual_seed(seed), labels=torch.as_tensor(sub.labels))
        new = [store.extra_probs(r, f"probe_{op}_s{seed}_{tag}", moved).argmax(1) for r in runs]
        out.append({"perturbation": op, "n": len(y),
                    "changed": float(np.mean([np.mean(a != b) for a, b in zip(base, new)])),
                    "acc_before": float(np.mean([np.mean(a == y) for a in base])),
                    "acc_after": float(np.mean([np.mean(b == y) for b in new]))})
    df = pd.DataFrame(out)
    return df, df.loc[df["changed"] > df["changed"].mean(), "perturbation"].tolist()


def of_classes(ds, class_idx: Sequence[int], n: int = 8):
    """The first n images of `ds` whose label is one of `class_idx` (all of ds when none)."""
    hit = np.flatnonzero(np.isin(torch.as_tensor(ds.labels).numpy(), list(class_idx)))
    return _take(ds, hit[:n]) if len(hit) else ds


def _take(ds, idx):
    from lib.data.tensors import take

    return take(ds, np.asarray(idx, dtype=np.int64))


def extras(stats: pd.DataFrame, unstable: Sequence[str]) -> list[str]:
    """The ops the target classes' evidence adds: the unstable ones, and contrast and gamma
    when an image statistic of the target classes differs."""
    return sorted(set(unstable) | ({"contrast", "gamma"} if bool(stats["different"].any()) else set()))


def rules(stats: pd.DataFrame, probe_table: pd.DataFrame, unstable: Sequence[str]) -> pd.DataFrame:
    """Which rule fired, on what measurement, and what it adds."""
    return pd.DataFrame([
        {"rule": "study 000 base", "measured": "-", "fires": True, "adds": "targeted policy (all images)"},
        {"rule": f"image statistics |d| >= {EFFECT}",
         "measured": ", ".join(f"{s} d={d:.2f}" for s, d in zip(stats["statistic"], stats["cohen_d"])),
         "fires": bool(stats["different"].any()), "adds": "contrast, gamma"},
        {"rule": "prediction changes > candidates' mean",
         "measured": f"mean {probe_table['changed'].mean():.3f}" if len(probe_table) else "no target images",
         "fires": bool(unstable), "adds": ", ".join(unstable) or "-"},
    ])


def after_specs(before: Sequence, target_idx: Sequence[int], extra: Sequence[str],
                class_only: bool = False) -> list:
    """The 'after' fits: each before fit's spec with study 000's targeted policy (at the
    before policy's strength when it was standard or targeted) plus the `extra` ops the
    target classes' evidence chose, on every training image; with `class_only` on the target
    classes' images only (study 000 added its transforms for every image). Class-only extras are a
    shortcut: transformed-looking images all belong to the target classes, so the untouched
    test images of those classes are pushed towards the others. Epochs and patience are
    `AFTER_SCHEDULE` times the before fit's."""
    out = []
    for run in before:
        spec = store.spec_of(run)
        r = dict(spec.recipe)
        strength = r.get("augment_strength", 1.0) if r.get("augment") in ("standard", "targeted") else 1.0
        on = sorted(int(i) for i in target_idx) if class_only else None
        r.update(augment="targeted", augment_extra=[[op, on] for op in extra] or None,
                 epochs=int(r["epochs"]) * AFTER_SCHEDULE)
        if r.get("patience"):
            r["patience"] = int(r["patience"]) * AFTER_SCHEDULE
        r.pop("augment_strength", None)
        if strength != 1.0:
            r["augment_strength"] = float(strength)
        out.append(replace(spec, recipe=r))
    return out


def pair_rates(runs_by_name: dict, classes: Sequence[str], pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The confusion rate of the given class pairs on test (summed over seeds), per variant."""
    rates = {v: experiment.confused_pairs(sum(r.reports["test"]["confusion"] for r in runs),
                                          list(classes)).set_index(["a", "b"])["rate"]
             for v, runs in runs_by_name.items() if runs}
    return pd.DataFrame(rates).reindex(list(pairs)).round(3)


@dataclass
class Derivation:
    """04's steps on one dataset, in order: 02's policy arm chosen on validation (`before`,
    every seed) and its data, the ranked confused pairs and the target classes they give,
    the image statistics, the probe and its unstable ops, and the extras they add."""

    choice: str
    before: list
    data: tuple  # (train, val, test) image sets of the before fits
    pairs: pd.DataFrame
    target: list[str]
    target_idx: list[int]
    stats: pd.DataFrame
    probe: pd.DataFrame
    unstable: list[str]
    extra: list[str]

    @property
    def after(self) -> str:
        """The after policy's name, e.g. 'targeted + contrast+gamma'."""
        return "targeted" + (f" + {'+'.join(self.extra)}" if self.extra else "")

    def specs(self, class_only: bool = False) -> list:
        """The after fits' store specs, one per before seed (`after_specs`)."""
        return after_specs(self.before, self.target_idx, self.extra, class_only=class_only)


def derive(P, dataset: str, splits) -> Derivation:
    """Every step of 04 that decides its after arms; store.MissingFit while 02 has no stored
    policy arm, FileNotFoundError when the probe needs a before fit's checkpoint that is not
    here (its predictions are kept in the record once computed)."""
    choice, before = choose(P, dataset, splits)
    data = store.prepare(store.spec_of(before[0]), splits)
    pairs, target = targets(before, splits.classes)
    idx = [list(splits.classes).index(c) for c in target]
    on_target = np.flatnonzero(np.isin(np.asarray(data[1].labels), idx))
    stats = image_stats(data[0], idx)
    table, unstable = probe(before, data[1], on_target, seed=P.seeds[0])
    return Derivation(choice, before, data, pairs, target, idx, stats, table, unstable,
                      extras(stats, unstable))


def plan_arms(P, dataset: str, splits) -> tuple[list, str]:
    """04's after arms for the compute plan (lib.plan lists and trains them like any other):
    derived as the notebook derives them, once every seed of every 02 policy arm is stored
    (before that, 02's choice could still change). Returns (arms, why there are none)."""
    policy = [a for a in plan.arms_of(P, dataset, "02_augmentation", splits) if a.section == "policy"]
    left = sum(not store.has(s, splits, P.name) for a in policy for s in a.specs)
    if left:
        return [], f"04's after arms are derived from 02's choice once its policy arms are stored ({left} fit(s) missing)"
    try:
        d = derive(P, dataset, splits)
    except FileNotFoundError as e:  # a fresh clone: the probe's predictions not kept yet
        return [], f"04's after arms need the probe of 02's fits, which needs their checkpoint: {e}"
    out = [plan.Arm(NB, "04.after", tuple(d.specs()),
                    f"every seed of {d.choice} with {d.after} (derived from 02's fits)")]
    if d.extra:
        out.append(plan.Arm(NB, "04.after_class_only", tuple(d.specs(class_only=True)),
                            f"every seed of {d.choice}, the extras on {', '.join(d.target)} only"))
    return out, ""
