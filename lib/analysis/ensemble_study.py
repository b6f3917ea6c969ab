"""06's loops over stored base models: ensembles per seed, the best ensemble against the best
single model (both chosen on validation), sentiment scales and calibration, as result rows.

    base = {**studies.fits(P, D, splits, "06_ensemble"), **studies.fits(P, D, splits, "03_capacity", names=...)}
    ens = ensemble_study.build(base, {"all": list(base)}, classes, P.bootstrap)
    rows = ensemble_study.rows(ens)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lib.analysis import arms, ensemble
from lib.evaluation import metrics, results
from lib.training import experiment


TOP_K = (2, 3)  # member sets of the k base arms best on validation


def member_sets(base: Mapping[str, list], pairs: Mapping[str, Sequence[str]]) -> dict:
    """{'all': every stored base arm, 'top<k>_by_val': the k arms with the best mean
    validation macro-F1 (weak members can drag a plain average down; the choice never looks
    at test), **named subsets whose arms are all stored}."""
    out = {"all": list(base)} if len(base) >= 2 else {}
    val = {a: float(np.mean([r.reports["val"]["macro_f1"] for r in runs]))
           for a, runs in base.items() if runs}
    ranked = sorted(val, key=val.get, reverse=True)
    out.update({f"top{k}_by_val": ranked[:k] for k in TOP_K if len(ranked) > k})
    out.update({k: list(v) for k, v in pairs.items() if len(v) >= 2 and all(base.get(a) for a in v)})
    return out


def build(base: Mapping[str, list], sets: Mapping[str, Sequence[str]], classes: Sequence[str],
          bootstrap: int = 0) -> dict:
    """{(method, set name): [ensemble Run per seed every member of the set has]}."""
    out = {}
    for set_name, names in sets.items():
        by_seed = [{r.seed: r for r in base[n]} for n in names]
        seeds = sorted(set.intersection(*(set(s) for s in by_seed)))
        for method in ensemble.METHODS:
            out[method, set_name] = [ensemble.combine([s[seed] for s in by_seed], method, classes,
                                                      bootstrap=bootstrap) for seed in seeds]
    return out


def rows(ens: Mapping[tuple, list], sets: Mapping[str, Sequence[str]]) -> list[dict]:
    """Result rows of the ensembles: experiment 'ensemble', variant = the member set, model =
    the method, `members` the arms combined."""
    out = []
    for (method, set_name), runs in ens.items():
        members = "+".join(arms.label(a) for a in sets[set_name])
        for r in runs:
            out += experiment.rows([r], experiment="ensemble", variant=set_name, members=members,
                                   notes=r.note)
    return out


def _val(runs: list) -> float:
    return float(np.mean([r.reports["val"]["macro_f1"] for r in runs])) if runs else -1.0


def best_vs_single(base: Mapping[str, list], ens: Mapping[tuple, list],
                   bootstrap: int = 1000) -> tuple[str | None, tuple | None, pd.DataFrame]:
    """(best single arm, best ensemble key, their test comparison); both chosen on mean
    validation macro-F1 (out-of-fold for fitted combiners), compared on the seeds they share."""
    if not base or not any(ens.values()):
        return (max(base, key=lambda n: _val(base[n])) if base else None), None, pd.DataFrame()
    single = max(base, key=lambda n: _val(base[n]))
    best = max((k for k in ens if ens[k]), key=lambda k: _val(ens[k]))
    name = f"{best[0]} ({best[1]}) vs {arms.label(single)}"
    return single, best, experiment.compare_table({name: (ens[best], base[single])}, bootstrap=bootstrap)


def sentiment_rows(runs: Mapping[str, list], classes: Sequence[str], bootstrap: int = 0
                   ) -> list[dict]:
    """Test rows of every run on the emotions, the 5-level and the 3-level scale (variant),
    with `levels_reached`: how many of a scale's levels this dataset's classes can reach."""
    out = []
    for name, rs in runs.items():
        for r in rs:
            for levels in (None, 5, 3):
                p, y, names = ensemble.scale(r.probs["test"], r.labels["test"], classes, levels)
                rep = metrics.evaluate(y, p, names, bootstrap=bootstrap, seed=r.seed)
                out.append(results.row(rep, experiment="sentiment", model=name, seed=r.seed,
                                       variant=f"{levels}-level" if levels else "emotions",
                                       split="test", levels_reached=len(names)))
    return out


def sentiment_table(rows: list[dict]) -> pd.DataFrame:
    """Accuracy and balanced accuracy (mean over seeds) per model and scale: accuracy alone
    rewards always naming the commonest level."""
    df = results.frame(rows)
    if df.empty:
        return df
    g = df.groupby(["model", "variant"], sort=False)
    return g.agg(levels=("levels_reached", "first"), accuracy=("accuracy", "mean"),
                 balanced_accuracy=("balanced_accuracy", "mean")).round(3).reset_index()


def calibration_rows(runs: Mapping[str, list], classes: Sequence[str], bootstrap: int = 0
                     ) -> tuple[list[dict], dict]:
    """Test rows before and after temperature scaling (T fit on validation) per run, and the
    first seed's reliability-diagram inputs per name: (y, {label: probabilities})."""
    out, diagrams = [], {}
    for name, rs in runs.items():
        for r in rs:
            t, after = ensemble.temperature(r)
            for variant, p in (("before", r.probs["test"]), ("after_temperature", after)):
                rep = metrics.evaluate(r.labels["test"], p, classes, bootstrap=bootstrap, seed=r.seed)
                out.append(results.row(rep, experiment="calibration", model=name, variant=variant,
                                       seed=r.seed, split="test", temperature=t, nll=rep["nll"]))
            diagrams.setdefault(name, (r.labels["test"], {"before": r.probs["test"],
                                                          f"after (T={t:.2f})": after}))
    return out, diagrams


def calibration_table(rows: list[dict]) -> pd.DataFrame:
    """Mean temperature, ECE, NLL and accuracy per model, before and after scaling."""
    df = results.frame(rows)
    return df.groupby(["model", "variant"], sort=False)[["temperature", "ece", "nll", "accuracy"]] \
        .mean().round(4) if len(df) else df


def summary(rows: list[dict]) -> pd.DataFrame:
    """Test mean ± std per base arm and per ensemble, one `arm` label each ('conv4net',
    'soft_vote (all)')."""
    from lib.analysis import studies

    df = results.frame(rows)
    out = studies.summary(df[df["experiment"].isin(["base", "ensemble"])],
                          by=("experiment", "variant", "model"))
    out["arm"] = [v if e == "base" else f"{m} ({v})"
                  for e, v, m in zip(out["experiment"], out["variant"], out["model"])]
    return out
