"""Findings written from result rows, so no sentence can contradict the numbers beside it.

    lines = findings.arms(summary_table, floor=chance_hi, label="model")
    lines += findings.comparisons(compare_table)
    findings.show("Findings", lines)
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from lib.evaluation import results

TIE = 0.005  # |difference| of macro-F1 below which two arms are called a tie


def p_text(p: float) -> str:
    """'p = 0.012', 'p < 0.001' (a 1,000-resample bootstrap's floor is 1/1001: its third
    significant digit is not resolved), or why there is no p-value."""
    if p is None or p != p:
        return "no test (one seed)"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def mean_sd(mean: float, sd: float, n: int, digits: int = 3) -> str:
    """'0.512 ± 0.013 (3 seeds)' or '0.512 (1 seed)'."""
    s = f"{mean:.{digits}f}"
    if n > 1 and sd == sd:
        s += f" ± {sd:.{digits}f}"
    return s + f" ({n} seed{'s' if n != 1 else ''})"


def arms(summary: pd.DataFrame, floor: float, label: str = "model",
         metric: str = "macro_f1") -> list[str]:
    """One sentence per arm of an aggregate() table (best first): its test metric with its
    spread, and whether its mean clears `floor` (the chance interval's upper end)."""
    df = summary.sort_values(f"{metric}_mean", ascending=False)
    out = []
    for _, r in df.iterrows():
        name = str(r[label]) if isinstance(label, str) else " / ".join(str(r[c]) for c in label)
        s = f"**{name}**: test {metric.replace('_', '-')} " \
            f"{mean_sd(r[f'{metric}_mean'], r[f'{metric}_std'], int(r['n']))}"
        if r[f"{metric}_mean"] <= floor:
            s += f", **not above chance** (the chance interval reaches {floor:.3f})"
        out.append(s + ".")
    return out


def below_chance(summary: pd.DataFrame, floor: float, label: str = "model",
                 metric: str = "macro_f1") -> list[str]:
    """Names of the arms whose mean does not clear the chance interval."""
    return [str(r[label]) for _, r in summary.iterrows() if r[f"{metric}_mean"] <= floor]


def comparisons(table: pd.DataFrame, metric: str = "macro_f1", alpha: float = 0.05) -> list[str]:
    """One sentence per row of experiment.compare_table: the better side and the gap with
    its test, a tie, or no evidence of a difference."""
    out = []
    for _, r in table.iterrows():
        a, b = (r["comparison"].split(" vs ", 1) + ["B"])[:2]
        diff, p = float(r["diff"]), float(r["primary_p"])
        m = r["metric"] if "metric" in r and isinstance(r["metric"], str) else metric
        if isinstance(r.get("split"), str) and r["split"] != "test":  # e.g. 'test_official'
            m = f"{m} on " + ("the official test split" if r["split"] == "test_official" else r["split"])
        test = "paired t-test over seeds" if r["seeds"] >= 2 else "paired bootstrap, one seed"
        if p < alpha and abs(diff) >= TIE:
            better, worse = (a, b) if diff > 0 else (b, a)
            out.append(f"{better} beats {worse} by {abs(diff):.3f} {m.replace('_', '-')} "
                       f"({test}, {p_text(p)}).")
        elif abs(diff) < TIE:
            out.append(f"{a} and {b} tie on {m.replace('_', '-')} (difference {diff:+.3f}, "
                       f"{test}, {p_text(p)}).")
        else:
            out.append(f"{a} vs {b}: no evidence of a difference in {m.replace('_', '-')} "
                       f"(difference {diff:+.3f}, {test}, {p_text(p)}).")
    return out


def chosen(summary_val: pd.DataFrame, summary_test: pd.DataFrame, label: str = "model",
           metric: str = "macro_f1") -> str:
    """The arm with the best validation mean and its test number (the test touched once);
    '' while nothing is stored."""
    if summary_val is None or summary_val.empty:
        return ""
    best = summary_val.sort_values(f"{metric}_mean", ascending=False).iloc[0][label]
    t = summary_test[summary_test[label] == best].iloc[0]
    return (f"Chosen on validation: **{best}**, test {metric.replace('_', '-')} "
            f"{mean_sd(t[f'{metric}_mean'], t[f'{metric}_std'], int(t['n']))}, balanced "
            f"accuracy {t['balanced_accuracy_mean']:.3f}, accuracy {t['accuracy_mean']:.3f}.")


def sweep(sweep_rows, cv_rows) -> list[str]:
    """Per swept factor: the value validation prefers, and whether its lead over the next
    value exceeds the 3-fold CV spread of macro-F1 (else no evidence for one value)."""
    if not len(sweep_rows):
        return []
    df = results.frame(sweep_rows)
    cv = pd.DataFrame(cv_rows)
    sd = float(cv["macro_f1"].std()) if len(cv) > 1 else float("nan")
    out = []
    for exp, g in df.groupby("experiment", sort=False):
        g = g.sort_values("macro_f1", ascending=False)
        if len(g) < 2:
            out.append(f"Sweep of {exp.removeprefix('sweep_')}: only {g.iloc[0]['variant']} is "
                       "stored so far, nothing to compare.")
            continue
        best, lead = g.iloc[0], g.iloc[0]["macro_f1"] - g.iloc[1]["macro_f1"]
        s = f"Sweep of {exp.removeprefix('sweep_')}: validation prefers {best['variant']} " \
            f"(macro-F1 {best['macro_f1']:.3f}, {lead:.3f} ahead of the next value)"
        if sd == sd:
            s += ("; the lead is within the 3-fold CV spread " if lead <= sd else
                  "; the lead exceeds the 3-fold CV spread ") + f"({sd:.3f})"
            s += ", so no evidence for one value over the other" if lead <= sd else ""
        out.append(s + ".")
    return out


def cv(cv_rows, floor: float | None = None) -> list[str]:
    """The cross-validation in one sentence: each metric's mean ± std over the held-out
    folds, macro-F1's range, and whether the mean clears the chance interval."""
    df = pd.DataFrame(cv_rows)
    if "split" in df:
        df = df[df["split"] == "cv_fold"]  # the held-out folds, not any other split scored
    if df.empty:
        return []
    names = {"macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy", "accuracy": "accuracy"}
    parts = [f"{name} {df[m].mean():.3f} ± {df[m].std():.3f}" for m, name in names.items() if m in df]
    s = (f"{len(df)}-fold cross-validation of {df['model'].iloc[0]} (each fold held out once, "
         f"never used to stop or choose): " + ", ".join(parts)
         + f" over the {len(df)} held-out folds (macro-F1 {df['macro_f1'].min():.3f}"
         f"-{df['macro_f1'].max():.3f})")
    if floor is not None and df["macro_f1"].mean() <= floor:
        s += f", **not above chance** (the chance interval reaches {floor:.3f})"
    return [s + "."]


def best_value(what: str, rows: list[dict], by: str = "variant", metric: str = "macro_f1") -> list[str]:
    """'Validation prefers <what> <value>' with its lead over the runner-up and the values
    it was chosen among (nothing until two are stored): a choice among 2 of 5 planned
    values must not read like the sweep's answer."""
    df = results.frame(rows)
    if df.empty:
        return []
    val = df[df["split"] == "val"].groupby(by, sort=False)[metric].agg(["mean", "size"])
    if len(val) < 2:
        return []
    val = val.sort_values("mean", ascending=False, kind="stable")
    (best, second), (b, s) = val.index[:2], val["mean"].iloc[:2]
    runs = "one fit each" if (val["size"] == 1).all() else "mean over its fits"
    return [f"Validation {metric.replace('_', '-')} prefers {what} {best} ({b:.3f}, "
            f"{b - s:.3f} ahead of {second}; {runs}, no test), chosen among the "
            f"{len(val)} stored: {', '.join(map(str, val.index))}."]


def sentiment(table: pd.DataFrame, model: str | None) -> list[str]:
    """From ensemble_study.sentiment_table: the model's accuracy and balanced accuracy per
    scale, flagging a scale where balanced accuracy is at 1/levels (one level named)."""
    if model is None or table is None or table.empty:
        return []
    out = []
    for _, r in table[table["model"] == model].iterrows():
        flat = r["balanced_accuracy"] <= 1 / max(r["levels"], 1) + 0.02
        out.append(f"{model} on {r['variant']} ({r['levels']} levels reachable here): accuracy "
                   f"{r['accuracy']:.3f}, balanced accuracy {r['balanced_accuracy']:.3f}"
                   + (" (no better than naming one level)" if flat else "") + ".")
    return out


def calibration(table: pd.DataFrame) -> list[str]:
    """From ensemble_study.calibration_table: ECE before and after temperature scaling."""
    if table is None or len(table) == 0:
        return []
    t = table.reset_index()
    out = []
    for model, g in t.groupby("model", sort=False):
        v = g.set_index("variant")
        if {"before", "after_temperature"} <= set(v.index):
            out.append(f"{model}: ECE {v.loc['before', 'ece']:.3f} -> "
                       f"{v.loc['after_temperature', 'ece']:.3f} after temperature scaling "
                       f"(T = {v.loc['after_temperature', 'temperature']:.2f}, fit on validation).")
    return out


def drops(shift: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """From domain.shift_table: per target, in-domain and zero-shot macro-F1 over the shared
    classes and whether the drop is supported by the paired test over seeds."""
    out = []
    for r in shift.itertuples() if shift is not None else []:
        test = "no test (one seed)" if r.seeds < 2 else p_text(r.p_value)
        verdict = "a drop" if r.seeds >= 2 and r.p_value < alpha and r.drop > 0 else \
            ("a gain" if r.seeds >= 2 and r.p_value < alpha else "no evidence of a difference")
        out.append(f"{r.target} ({r.classes}): in domain {r.in_domain:.3f}, zero-shot "
                   f"{r.out_of_domain:.3f}: {verdict} ({r.drop:+.3f} in domain minus zero-shot, {test}).")
    return out


def against(table: pd.DataFrame, what: str, label: str = "variant", alpha: float = 0.05) -> list[str]:
    """From shift.versus / few_shot_table (a_mean, b_mean, seeds_p_value): each row against
    its reference, 'no evidence of a difference' unless the paired test says otherwise."""
    out = []
    for _, r in (table.iterrows() if table is not None else []):
        p = r["seeds_p_value"]
        diff = r["a_mean"] - r["b_mean"]
        word = ("higher" if diff > 0 else "lower") if p == p and p < alpha else "no evidence of a difference"
        cols = [label] if isinstance(label, str) else list(label)
        name = ", ".join(f"{c} = {r[c]}" if i else str(r[c]) for i, c in enumerate(cols))
        out.append(f"{what} {name}: {r['a_mean']:.3f} vs {r['b_mean']:.3f}, {word} ({p_text(p)}).")
    return out


def selected(best: pd.DataFrame) -> list[str]:
    """Per dataset: the model chosen on validation and its test numbers with their spread."""
    return [f"{b.dataset}: {b.model} ({b.notebook}, {b.variant}), chosen on validation macro-F1 "
            f"{b.val_macro_f1:.3f}: test macro-F1 {mean_sd(b.macro_f1_mean, b.macro_f1_std, int(b.seeds))}, "
            f"balanced accuracy {b.balanced_accuracy_mean:.3f}, accuracy {b.accuracy_mean:.3f}."
            for b in best.itertuples()]


def zero_classes(table: pd.DataFrame) -> list[str]:
    """Per dataset where the chosen model scores F1 0 on some classes in every seed: which,
    and the macro-F1 ceiling that leaves (each class counts 1/K)."""
    return [f"{r.dataset}: the chosen {r.model} gets no test image of {r.zero} right in any seed "
            f"(F1 0); with {r.classes} classes counted equally, macro-F1 cannot exceed "
            f"{r.ceiling:.3f} until they are learned." for r in table.itertuples()]


SILENT = 0.02  # test F1 below which a class counts as (almost) never predicted right


def silent_classes(rows, label: str = "variant", target: Iterable[str] = ()) -> list[str]:
    """Per arm: the classes whose test F1 stays below SILENT in every seed, and how many of
    them are in `target` (e.g. 04's targeted classes). A macro-F1 alone does not show that
    an arm has given up on whole classes."""
    df = results.frame(rows)
    if df.empty:
        return []
    df = df[df["split"] == "test"]
    cols = [c for c in df.columns if c.startswith("f1_") and df[c].notna().any()]
    target, out = set(target), []
    for arm, g in df.groupby(label, sort=False):
        low = [c.removeprefix("f1_") for c in cols if g[c].notna().all() and (g[c] < SILENT).all()]
        if not low:
            continue
        s = (f"**{arm}** scores test F1 below {SILENT} on {', '.join(low)} in every seed "
             f"({len(g)} seed{'s' if len(g) != 1 else ''})")
        if hit := [c for c in low if c in target]:
            s += f"; {len(hit)} of them the targeted classes"
        out.append(s + ".")
    return out


def beaten(table: pd.DataFrame) -> list[str]:
    """From overview.beaten: how many seed-study numbers ours beats beyond two standard
    errors, and the ones it does not."""
    if table is None or table.empty:
        return []
    run = table[table["beaten"] != "not run here"]
    counts = run["beaten"].value_counts().to_dict()
    out = [f"Of {len(run)} seed-study numbers with an arm here: " +
           ", ".join(f"{v} {k}" for k, v in counts.items()) + "."]
    for r in run[run["beaten"] == "no"].itertuples():
        out.append(f"Not beaten: study {r.study} {r.experiment} {r.model} on {r.dataset} "
                   f"({r.metric} {r.theirs:.3f} reported, ours {r.ours:.3f}).")
    return out


def chance(share: pd.DataFrame) -> list[str]:
    """From summary.chance_share: per dataset the share of trained arms above chance, and
    the arms that are not."""
    out = []
    for r in share.itertuples():
        s = (f"{r.dataset}: {r.above_chance} of {r.arms} trained arms ({r.share:.0%}) clear the "
             "chance interval of 00_eda")
        out.append(s + (f"; not above it: {r.not_above}." if r.not_above else "."))
    return out


def tta(rows, suffix: str = "+flip_tta", alpha: float = 0.05) -> list[str]:
    """Per model with TTA rows: its test macro-F1 with and without test-time augmentation
    over the seeds both have, the paired t-test, and which of the two validation prefers."""
    from lib.evaluation import metrics

    df = results.frame(rows)
    if df.empty or not df["variant"].astype(str).str.endswith(suffix).any():
        return []
    df = df.assign(variant=df["variant"].astype(str))
    out = []
    for model, g in df.groupby("model", sort=False):
        with_ = g[g["variant"].str.endswith(suffix)]
        for var in with_["variant"].unique():
            plain = var[: -len(suffix)]
            a = {s: g[(g["variant"] == var) & (g["split"] == s)].groupby("seed")["macro_f1"].mean()
                 for s in ("val", "test")}
            b = {s: g[(g["variant"] == plain) & (g["split"] == s)].groupby("seed")["macro_f1"].mean()
                 for s in ("val", "test")}
            seeds = a["test"].index.intersection(b["test"].index)
            if not len(seeds):
                continue
            ta, tb = a["test"][seeds], b["test"][seeds]
            p = metrics.paired_test(ta.values, tb.values)["p_value"] if len(seeds) >= 2 else float("nan")
            d = float(ta.mean() - tb.mean())
            word = ("a tie" if abs(d) < TIE else
                    f"{'better' if d > 0 else 'worse'} with TTA" if p == p and p < alpha else
                    "no evidence of a difference")
            pick = "with" if a["val"].mean() > b["val"].mean() else "without"
            out.append(f"Flip TTA on {model}: test macro-F1 {ta.mean():.3f} vs {tb.mean():.3f} "
                       f"without ({d:+.3f} over {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, "
                       f"{p_text(p)}): {word}; validation prefers it {pick} TTA.")
    return out


def effects(table: pd.DataFrame, alpha: float = 0.05, most: int = 5) -> list[str]:
    """The largest within-experiment differences that the paired test over seeds supports."""
    if table is None or table.empty:
        return []
    real = table[table["p_value"] < alpha].head(most)
    if real.empty:
        return ["No within-experiment difference of 02-06 is supported by a paired test over seeds."]
    return [f"{r['dataset']} {r['experiment']}: {r['best (by val)']} ahead of {r['other']} by "
            f"{r['delta_macro_f1']:+.3f} macro-F1 over {r['seeds']} seeds ({p_text(r['p_value'])})."
            for _, r in real.iterrows()]


def not_stored(what: str, runs) -> list[str]:
    """A sentence for an arm derived from earlier fits (04's after arm) while it has no fit."""
    return [] if runs else [f"{what} is not in the fit store yet; `python -m lib.plan --train "
                            "--only 04` trains it (so does running the notebook with training "
                            "allowed)."]


def missing(what: str, table: pd.DataFrame) -> list[str]:
    """A sentence for a section whose fits are not all in the store yet."""
    if table is None or table.empty:
        return []
    return [f"{what}: {len(table)} fit(s) are not in the fit store yet "
            f"({', '.join(sorted(set(table['arm'])))}); `python -m lib.plan --train` trains them."]


def official(table: pd.DataFrame) -> list[str]:
    """From studies.side_by_side: each model's accuracy and macro-F1 on the official test
    split beside the deduplicated one (nothing for a dataset without an official split)."""
    if table is None or table.empty or "accuracy_test_official" not in table:
        return []
    out = []
    for _, r in table.dropna(subset=["accuracy_test_official"]).iterrows():
        name = " / ".join(str(r[c]) for c in ("experiment", "model") if c in r)
        out.append(f"{name} on the official test split: accuracy {r['accuracy_test_official']:.3f}, "
                   f"macro-F1 {r['macro_f1_test_official']:.3f} (deduplicated test split: "
                   f"{r['accuracy_test']:.3f}, {r['macro_f1_test']:.3f}).")
    return out


# the seed studies' names for our models
STUDY_MODEL = {"custom_cnn": "conv4net", "cnn": "small_cnn"}


def reported(summary: pd.DataFrame, ref: pd.DataFrame, experiments: Iterable[str],
             label: str = "model", pretrained: Iterable[str] = ("mobilenet_v2",)) -> list[str]:
    """For every seed-study number on these experiments whose model we trained: theirs,
    ours (test, mean ± std) and whether ours is higher. Macro-F1 when they report it, else
    accuracy; a study that reported only training-set numbers is named as such."""
    out = []
    ref = ref[ref["experiment"].isin(list(experiments))]
    ours = summary.set_index(label) if label in summary else summary
    for _, r in ref.iterrows():
        model = STUDY_MODEL.get(r["model"], r["model"])
        if model not in ours.index:
            continue
        o = ours.loc[model]
        o = o.iloc[0] if isinstance(o, pd.DataFrame) else o
        if str(r["variant"]) == "pretrained" and model not in pretrained:
            out.append(f"Study {r['study']} reported a pretrained {r['model']} ({r['experiment']}); "
                       "ours trains from scratch (no offline weights), so it is not the same setting.")
            continue
        metric = "macro_f1" if r["macro_f1"] == r["macro_f1"] else "accuracy"
        theirs, mine = float(r[metric]), float(o[f"{metric}_mean"])
        where = "" if r["split"] == "test" else f" on its {r['split']} split"
        verdict = "higher" if mine > theirs else "not higher"
        out.append(f"Study {r['study']} reported {r['model']} ({r['experiment']}"
                   f"{'' if r['variant'] != r['variant'] else ', ' + str(r['variant'])}) at "
                   f"{metric.replace('_', '-')} {theirs:.3f}{where}; ours "
                   f"{mean_sd(mine, o[f'{metric}_std'], int(o['n']))}: {verdict}.")
    return out


def markdown(lines: Iterable[str], title: str | None = None) -> str:
    body = "\n".join(f"- {line}" for line in lines if line)
    return (f"**{title}**\n\n" if title else "") + body


def show(lines: Iterable[str], title: str | None = None) -> None:
    """Display the sentences as a Markdown list (in a notebook) or print them."""
    text = markdown(lines, title)
    try:
        from IPython.display import Markdown, display

        display(Markdown(text))
    except ImportError:  # plain python
        print(text)


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
