"""Tables over a notebook's stored arms ({arm name: [Run, ...]} from studies.fits), labelled
by the arm's own name, so a cell is one call:

    pol = studies.fits(P, DATASET, splits, "02_augmentation", section="policy")
    rows = arms.rows(pol, "policy")          # result rows, variant 'standard', arm 'policy.standard'
    arms.history(pol); arms.per_class(pol); arms.curves(pol)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lib.evaluation import results
from lib.training import experiment, store


def label(name: str) -> str:
    """'standard@1.5' for '02.strength.standard@1.5'; 'conv4net' for '03.conv4net'."""
    return name.split(".", 2)[-1]


def arm_id(name: str) -> str:
    """The arm's name without its notebook: 'strength.standard@1.5', 'conv4net'."""
    return name.split(".", 1)[-1]


def recipe(run: experiment.Run) -> dict:
    """The training recipe of a stored run (empty for a run not from the store)."""
    return store.meta_of(run.record)["spec"]["recipe"] if run.record else {}


def strength(name: str, rec: dict) -> float:
    """Augmentation strength of an arm: from a strength arm's label ('02.strength.standard@1.5';
    elsewhere '@' names an input size, '03.mobilenet_v2@160'), else its recipe (0 for no
    augmentation)."""
    if ".strength." in name:
        return float(label(name).rsplit("@", 1)[1])
    return 0.0 if rec.get("augment", "none") == "none" else float(rec.get("augment_strength", 1.0))


def rows(arms: dict, experiment_name: str, **fields) -> list[dict]:
    """Result rows of every run of every arm: variant = the arm's label, `arm` its id,
    `augment` / `strength` from its recipe and `record` the store record (so a fit two arms
    share can be counted once)."""
    out = []
    for name, runs in arms.items():
        for run in runs:
            rec = recipe(run)
            out += experiment.rows([run], experiment=experiment_name, variant=label(name),
                                   arm=arm_id(name), augment=str(rec.get("augment", "none")),
                                   strength=strength(name, rec),
                                   record=Path(run.record).name if run.record else "", **fields)
    return out


def fit_table(arms: dict) -> pd.DataFrame:
    """One line per stored fit: arm, seed, parameters, epochs run, the epoch validation chose,
    training seconds and validation macro-F1."""
    return pd.DataFrame([{"arm": label(n), "model": r.name, "seed": r.seed, "params": r.params,
                          "epochs_run": r.history.attrs.get("epochs_run"),
                          "best_epoch": r.history.attrs.get("best_epoch"),
                          "train_s": round(r.history.attrs.get("train_seconds") or 0, 1),
                          "val_macro_f1": round(r.reports["val"]["macro_f1"], 3)}
                         for n, runs in arms.items() for r in runs])


def unique(rows: list[dict], split: str = "test") -> pd.DataFrame:
    """Rows of one split with each stored fit once (arms that share a fit, e.g. strength 1
    and the standard policy, are one fit)."""
    df = results.frame(rows)
    return df[df["split"] == split].drop_duplicates(["record", "split"]).reset_index(drop=True)


def curves(arms: dict) -> dict:
    """{label: [History, ...]} for plots.learning_curves."""
    return {label(n): [r.history for r in runs] for n, runs in arms.items()}


def history(arms: dict) -> pd.DataFrame:
    """Per arm (mean over its seeds): epochs run, epoch chosen on validation, train and val
    loss there and at the last epoch, and the last epoch's val - train gap."""
    if not arms:
        return pd.DataFrame()
    df = pd.concat([experiment.history_summary(runs, arm=label(n)) for n, runs in arms.items()])
    return df.groupby("arm", sort=False).mean(numeric_only=True).drop(columns="seed").round(3)


def per_class(arms: dict, split: str = "test") -> pd.DataFrame:
    """Per-class precision / recall / F1 of every run, long format, variant = arm label."""
    if not arms:
        return pd.DataFrame(columns=["class", "variant", "recall", "f1"])
    return pd.concat([experiment.per_class(runs, split, variant=label(n))
                      for n, runs in arms.items()], ignore_index=True)


def change_from(pc: pd.DataFrame, ref: str, metric: str = "recall") -> pd.DataFrame:
    """Per class: each variant's mean `metric` and its change from variant `ref`."""
    wide = pc.pivot_table(index="class", columns="variant", values=metric, sort=False)
    if ref not in wide:
        return wide.round(3)
    return wide.assign(**{f"{v} - {ref}": wide[v] - wide[ref] for v in wide if v != ref}).round(3)


def best_on_val(rows: list[dict], by: str = "variant", metric: str = "macro_f1") -> str | None:
    """The `by` value with the best mean validation metric (ties: the first listed); None
    until at least two candidates are stored (one is not a choice)."""
    df = results.frame(rows)
    if df.empty:
        return None
    val = df[df["split"] == "val"].groupby(by, sort=False)[metric].mean()
    return str(val.idxmax()) if len(val) >= 2 else None


def versus(arms: dict, pairs: list[tuple[str, str]], bootstrap: int = 1000,
           split: str = "test") -> pd.DataFrame:
    """experiment.compare_table over (a, b) arm-name pairs, runs matched by seed; a pair with
    an arm that is not stored, or two arms that are the same fit, is left out."""
    table = {f"{arm_id(a)} vs {arm_id(b)}": (arms[a], arms[b]) for a, b in pairs
             if arms.get(a) and arms.get(b) and arms[a][0].record != arms[b][0].record}
    return experiment.compare_table(table, split=split, bootstrap=bootstrap) if table else \
        pd.DataFrame()
