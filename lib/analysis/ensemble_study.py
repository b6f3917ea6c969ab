"""06's loops over stored base models: ensembles per seed, the best ensemble against the best
single model (both chosen on validation), sentiment scales and calibration, as result rows.

    base = {**studies.fits(P, D, splits, "06_ensemble"), **studies.fits(P, D, splits, "03_capacity", names=...)}
    ens, sets = ensemble_study.ensembles(base, ensemble_study.member_sets(base, {}), classes, P.bootstrap)
    rows = ensemble_study.rows(ens, sets)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lib.analysis import arms, ensemble
from lib.analysis.studies import TTA  # one suffix for flip TTA, arms and member sets alike
from lib.evaluation import metrics, results
from lib.training import experiment


TOP_K = (2, 3)  # member sets of the k base arms best on validation


def complete(base: Mapping[str, list]) -> tuple[list[str], dict[str, int]]:
    """(arms with as many seeds stored as the most complete arm, {other arm: seeds it has}):
    an ensemble exists only for the seeds all its members share, so one arm with a single
    seed stored would cut every set it joins to one run (no spread) until its seeds land."""
    seeds = {a: len({r.seed for r in runs}) for a, runs in base.items() if runs}
    full = max(seeds.values(), default=0)
    return [a for a in seeds if seeds[a] == full], {a: n for a, n in seeds.items() if n < full}


def partial_note(base: Mapping[str, list]) -> str:
    """One line naming the base arms left out of the member sets for missing seeds ('' if none)."""
    whole, part = complete(base)
    if not part:
        return ""
    full = len({r.seed for r in base[whole[0]]})
    return ("left out of the member sets until their seeds are stored: "
            + ", ".join(f"{a} ({n} of {full} seeds)" for a, n in part.items()))


def member_sets(base: Mapping[str, list], pairs: Mapping[str, Sequence[str]]) -> dict:
    """{'all': every base arm with all its seeds stored (`complete`), 'top<k>_by_val': the k
    such arms with the best mean validation macro-F1 (weak members can drag a plain average
    down; the choice never looks at test), **named subsets whose arms are all stored}."""
    whole, _ = complete(base)
    out = {"all": whole} if len(whole) >= 2 else {}
    val = {a: float(np.mean([r.reports["val"]["macro_f1"] for r in base[a]])) for a in whole}
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


SEEDS = "seeds:"  # the prefix of a set that averages one arm's seeds (a deep ensemble)


def tta_view(run: experiment.Run, classes: Sequence[str], bootstrap: int = 0
             ) -> experiment.Run | None:
    """The run as scored from its flip-TTA probabilities (val, test and any further split its
    record gave, e.g. 'test_official'), or None when it has none: flip TTA as a member."""
    probs = {s: run.probs[f"{s}_tta"] for s in run.labels if f"{s}_tta" in run.probs}
    if not {"val", "test"} <= set(probs):
        return None
    view = experiment.Run(run.name, run.seed, run.model, run.history, n_params=run.params,
                          record=run.record)
    for split, p in probs.items():
        view.probs[split], view.labels[split] = p, run.labels[split]
        view.reports[split] = metrics.evaluate(run.labels[split], p, list(classes),
                                               bootstrap=bootstrap, seed=run.seed)
    return view


def seed_ensembles(base: Mapping[str, list], classes: Sequence[str], bootstrap: int = 0
                   ) -> dict:
    """{('soft_vote', 'seeds:<arm>'): [one Run]}: the mean of the probabilities of every seed
    of an arm that has at least two (a deep ensemble), named after its first seed; one run,
    so its spread is the bootstrap interval, not seeds."""
    out = {}
    for name, runs in base.items():
        if len(runs) >= 2:
            run = ensemble.combine(runs, "soft_vote", classes, bootstrap=bootstrap,
                                   seed=min(r.seed for r in runs))
            run.note = f"seeds {', '.join(str(r.seed) for r in runs)}"
            out["soft_vote", SEEDS + name] = [run]
    return out


def ensembles(base: Mapping[str, list], sets: Mapping[str, Sequence[str]],
              classes: Sequence[str], bootstrap: int = 0) -> tuple[dict, dict]:
    """(ensembles, their member sets): every set per seed (`build`) and every arm's seeds
    averaged (`seed_ensembles`), each once from the members' plain probabilities and once
    from their flip-TTA ones (set name + '+flip_tta'); validation chooses among them all."""
    views = {"": {a: runs for a, runs in base.items() if runs},
             TTA: {a.removesuffix(TTA): runs for a, runs in tta_arms(base, classes).items()}}
    ens, named = {}, {}
    for suffix, b in views.items():
        s = {name + suffix: list(members) for name, members in sets.items()
             if all(a in b for a in members)}
        ens.update(build(b, s, classes, bootstrap))
        named.update(s)
        for (method, name), runs in seed_ensembles(b, classes, bootstrap).items():
            ens[method, name + suffix] = runs
            named[name + suffix] = [name.removeprefix(SEEDS)]
    return ens, named


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
    validation macro-F1 (out-of-fold for fitted combiners), compared on the seeds they share:
    macro-F1 on test and, where both hold it, accuracy on the official test split (the number
    the FER2013 literature reports)."""
    if not base or not any(ens.values()):
        return (max(base, key=lambda n: _val(base[n])) if base else None), None, pd.DataFrame()
    single = max(base, key=lambda n: _val(base[n]))
    best = max((k for k in ens if ens[k]), key=lambda k: _val(ens[k]))
    name = f"{best[0]} ({best[1]}) vs {arms.label(single)}"
    pair = {name: (ens[best], base[single])}
    seeds = {r.seed for r in ens[best]} & {r.seed for r in base[single]}
    tables = [experiment.compare_table(pair, bootstrap=bootstrap).assign(split="test", metric="macro_f1")]
    if all("test_official" in r.reports for r in [*ens[best], *base[single]] if r.seed in seeds):
        tables.append(experiment.compare_table(pair, split="test_official", metric="accuracy",
                                               bootstrap=bootstrap)
                      .assign(split="test_official", metric="accuracy"))
    return single, best, pd.concat(tables, ignore_index=True)


def split_averages(ens: Mapping[tuple, list]) -> tuple[dict, dict]:
    """(ensembles of one seed's members, averages of an arm's seeds): chosen apart, as 07
    chooses, since an average is one run built from n fits and has no spread over seeds."""
    avg = {k: v for k, v in ens.items() if k[1].startswith(SEEDS)}
    return {k: v for k, v in ens.items() if k not in avg}, avg


def tta_arms(base: Mapping[str, list], classes: Sequence[str], bootstrap: int = 0) -> dict:
    """{'<arm>+flip_tta': the arm's runs scored from their flip-TTA probabilities}: flip TTA
    as a single model of its own, for choosing on validation beside the plain arms."""
    out = {a + TTA: [v for v in (tta_view(r, classes, bootstrap) for r in runs) if v]
           for a, runs in base.items()}
    return {a: runs for a, runs in out.items() if runs}


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
