"""Leaderboards across notebooks, and the README results table generated from result rows.

    python -m lib.reporting.summary [--profile cpu]     # rewrites that profile's part of the README block

The block between the README markers holds one section per profile, each opened by its own
marker (`<!-- results:cpu -->`); a run rewrites only its own profile's section, so a gpu run
never replaces the cpu rows. The smoke profile is never written to the README.
"""
from __future__ import annotations

import argparse
import re

import numpy as np
import pandas as pd

from lib import config
from lib.analysis.ensemble_study import SEEDS as SEED_AVERAGE  # 06's seed averages
from lib.evaluation import results
from lib.reporting.findings import STUDY_MODEL
from lib.atomic import write_text

METRICS = ("macro_f1", "balanced_accuracy", "accuracy")
START, END = "<!-- results:start -->", "<!-- results:end -->"
SECTION = re.compile(r"^<!-- results:(\w+) -->$", re.M)  # opens one profile's section
NOT_IN_README = ("smoke",)  # test-sized runs: their numbers mean nothing to a reader
# the block written before per-profile sections held only the cpu table (the README said so)
LEGACY_PROFILE = "cpu"


KEYS = ["dataset", "notebook", "experiment", "variant", "model"]
CONTROLS = ("chance", "label_shuffle", "peer", "cross_dataset", "selected")
# experiments whose variants are scored on different label spaces or test sets (3/5/7-level
# sentiment scales, another dataset's shared classes, few-shot targets): never ranked against
# the dataset's own 7-class models, and inside them only like with like (one variant each)
OTHER_TASKS = ("sentiment", "cross_dataset", "few_shot", "peer", "adaptation", "face_crop",
               "calibration", "contributor_shift")


def leaderboard(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (dataset, notebook, experiment, variant, model): test mean, std over seeds
    and mean per-seed bootstrap bounds, plus the validation macro-F1 mean used to select.
    Sorted by validation macro-F1 (never by test) within each dataset."""
    rows = rows[rows["macro_f1"].notna() & rows["split"].isin(["val", "test"])]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(**{k: rows[k].fillna("-").astype(str) for k in KEYS})
    test = rows[rows["split"] == "test"]
    agg = {f"{m}_{s}": (m, s) for m in METRICS for s in ("mean", "std")}
    agg.update(seeds=("seed", "nunique"), f1_lo=("f1_lo", "mean"), f1_hi=("f1_hi", "mean"))
    board = test.groupby(KEYS).agg(**agg).reset_index()
    val = (rows[rows["split"] == "val"].groupby(KEYS)["macro_f1"].mean()
           .rename("val_macro_f1").reset_index())
    board = board.merge(val, on=KEYS, how="left")
    return board.sort_values(["dataset", "val_macro_f1"], ascending=[True, False],
                             na_position="last").reset_index(drop=True)


def effects(rows: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    """Within each (dataset, notebook, experiment) of the same task, every arm against the
    experiment's best arm by validation: test macro-F1 difference and the paired t-test over
    the seeds both have (an arm's several rows per seed are averaged first). Experiments of
    OTHER_TASKS compare arms only within one variant (one label space). Largest |delta| first."""
    from lib.evaluation import metrics

    test = rows[(rows["split"] == "test") & ~rows["experiment"].isin(CONTROLS)]
    out = []
    for (ds, nb, ex), part in test.groupby(["dataset", "notebook", "experiment"]):
        groups = part.groupby("variant") if ex in OTHER_TASKS else [(None, part)]
        for var, grp in groups:
            grp = grp.assign(arm=grp["model"].astype(str) + " · " + grp["variant"].astype(str))
            arms = board[(board.dataset == ds) & (board.notebook == nb) & (board.experiment == ex)]
            if var is not None:
                arms = arms[arms["variant"] == str(var)]
            if len(arms) < 2:
                continue
            ref_arm = arms.iloc[0]["model"] + " · " + str(arms.iloc[0]["variant"])
            a = grp[grp["arm"] == ref_arm].groupby("seed")["macro_f1"].mean()
            for arm, g in grp[grp["arm"] != ref_arm].groupby("arm"):
                b = g.groupby("seed")["macro_f1"].mean()
                common = a.index.intersection(b.index)
                t = metrics.paired_test(a[common].values, b[common].values) if len(common) >= 2 else {}
                out.append({"dataset": ds, "notebook": nb, "experiment": ex,
                            "best (by val)": ref_arm, "other": arm, "seeds": len(common),
                            "delta_macro_f1": a.mean() - b.mean(),
                            "p_value": t.get("p_value", np.nan)})
    df = pd.DataFrame(out)
    return df.reindex(df["delta_macro_f1"].abs().sort_values(ascending=False).index) if len(df) \
        else df




def seed_averages(board: pd.DataFrame) -> pd.Series:
    """True for 06's averages of an arm's seeds: one run from n seeds' models, so it has no
    spread over seeds and costs n fits; reported beside the chosen model, not chosen."""
    return board["experiment"].eq("ensemble") & board["variant"].astype(str).str.startswith(SEED_AVERAGE)


def best_per_dataset(board: pd.DataFrame, exclude=CONTROLS + OTHER_TASKS,
                     averages: bool = False) -> pd.DataFrame:
    """Per dataset, the entry with the best VALIDATION macro-F1 (controls and other label
    spaces excluded, and averages of seeds unless `averages`: the chosen model has one run
    per seed, so its spread is known); its test numbers are what gets reported, so the
    choice never looks at test."""
    keep = board[~board["experiment"].isin(exclude) & board["val_macro_f1"].notna()]
    keep = keep[seed_averages(keep) == averages] if averages else keep[~seed_averages(keep)]
    # a fit two notebooks share (04's before arm is 02's / 01's) is named by the first notebook
    return keep.sort_values(["val_macro_f1", "notebook"], ascending=[False, True]) \
        .groupby("dataset").head(1).sort_values("dataset")


def zero_classes(best: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, the classes the chosen model never gets right on test (F1 0 in every
    seed), with the number of classes and the macro-F1 the others would allow at best: the
    ceiling a class with a handful of test images puts on macro-F1."""
    out = []
    for (dataset, model), g in _rows_of(rows, best, "test").groupby(["dataset", "model"]):
        f1 = g[[c for c in g.columns if c.startswith("f1_") and c not in ("f1_lo", "f1_hi")]]
        f1 = f1.dropna(axis=1, how="all")  # another dataset's classes
        zero = [c.removeprefix("f1_") for c in f1.columns if (f1[c].fillna(0) == 0).all()]
        if zero:
            out.append({"dataset": dataset, "model": model, "classes": len(f1.columns),
                        "zero": ", ".join(zero), "ceiling": 1 - len(zero) / len(f1.columns)})
    return pd.DataFrame(out, columns=["dataset", "model", "classes", "zero", "ceiling"])


def chance_floor(rows: pd.DataFrame) -> pd.Series:
    """Per dataset, the upper end of 00_eda's chance interval on test macro-F1 (the highest
    bootstrap bound of its majority and prior-guess predictors)."""
    c = rows[(rows["experiment"] == "chance") & (rows["split"] == "test")]
    return c.groupby("dataset")["f1_hi"].max().rename("chance_hi")


def against_chance(board: pd.DataFrame, rows: pd.DataFrame,
                   exclude=CONTROLS + OTHER_TASKS) -> pd.DataFrame:
    """Every trained arm of the leaderboard (the dataset's own label space; controls and
    other label spaces left out) against its dataset's chance interval: one line per arm with
    `above` True when its test macro-F1 mean clears the interval's upper end."""
    floor = chance_floor(rows)
    arms = board[~board["experiment"].isin(exclude) & board["dataset"].isin(floor.index)]
    arms = arms.assign(chance_hi=arms["dataset"].map(floor))
    return arms.assign(above=arms["macro_f1_mean"] > arms["chance_hi"])[
        ["dataset", "notebook", "experiment", "variant", "model", "seeds", "macro_f1_mean",
         "chance_hi", "above"]].reset_index(drop=True)


def chance_share(arms: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: arms, how many clear the chance interval, their share, and the others."""
    if arms.empty:
        return pd.DataFrame(columns=["dataset", "arms", "above_chance", "share", "not_above"])
    def name(r) -> str:  # '04 targeted_augmentation after small_cnn', no '-' or repeats
        parts = [r["notebook"][:2], r["experiment"], r["variant"], r["model"]]
        return " ".join(p for i, p in enumerate(parts) if p != "-" and p not in parts[:i])

    out = []
    for ds, g in arms.assign(name=arms.apply(name, axis=1)).groupby("dataset"):
        out.append({"dataset": ds, "arms": len(g), "above_chance": int(g["above"].sum()),
                    "share": float(g["above"].mean()),
                    "not_above": "; ".join(g.loc[~g["above"], "name"])})
    return pd.DataFrame(out)


# a seed study's (experiment, variant) -> ours at the same setting
SETTING = {("augmentation", "none"): ("policy", "none"), ("augmentation", "standard"): ("policy", "standard"),
           ("targeted_augmentation", "before"): ("targeted_augmentation", "before"),
           ("targeted_augmentation", "targeted"): ("targeted_augmentation", "after"),
           ("imbalance", "none"): ("imbalance", "plain_ce"),
           ("imbalance", "augment_to_3000"): ("imbalance", "augment_to_balance")}
VARIANT_MATCHED = ("policy", "targeted_augmentation", "imbalance")  # arms differ by variant only


def beaten(rows: pd.DataFrame) -> pd.DataFrame:
    """Every seed-study number against ours at the same setting (dataset, experiment, model,
    variant; test split, mean ± std over seeds): macro-F1 where they report it, else
    accuracy. `beaten` is 'yes' when our mean minus two standard errors clears theirs, 'no'
    when our mean plus two standard errors stays below it, else 'within our spread'."""
    ref = results.seed_reference()
    test = rows[rows["split"] == "test"]
    out = []
    for r in ref.itertuples():
        exp, var = SETTING.get((r.experiment, r.variant), (r.experiment, r.variant))
        model = STUDY_MODEL.get(r.model, r.model)
        ours = test[(test["dataset"] == r.dataset) & (test["experiment"] == exp) & (test["model"] == model)]
        if isinstance(var, str) and exp in VARIANT_MATCHED:
            ours = ours[ours["variant"].astype(str) == var]
        metric = "macro_f1" if r.macro_f1 == r.macro_f1 else "accuracy"
        theirs = getattr(r, metric)
        per_seed = ours.groupby("seed")[metric].mean()
        m, s, n = per_seed.mean(), per_seed.std(ddof=1), len(per_seed)
        se = s / np.sqrt(n) if n > 1 else np.nan
        verdict = "not run here" if not n else "one seed: no spread" if n < 2 else \
            "yes" if m - 2 * se > theirs else "no" if m + 2 * se < theirs else "within our spread"
        out.append({"study": r.study, "dataset": r.dataset, "experiment": r.experiment,
                    "variant": r.variant, "model": r.model, "metric": metric, "theirs": theirs,
                    "ours": m, "ours_std": s, "seeds": n, "beaten": verdict})
    return pd.DataFrame(out)


def _rows_of(rows: pd.DataFrame, best: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split that belong to the chosen entries (matched on KEYS)."""
    r = rows[rows["split"] == split]
    r = r.assign(**{k: r[k].fillna("-").astype(str) for k in KEYS})
    return r.merge(best[KEYS].astype(str), on=KEYS)


def official(rows: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per chosen entry, its accuracy on the dataset's official test split (FER2013's 3,589
    PrivateTest images, duplicates of training images included: the number the literature
    reports): mean, std and seeds over the same entry's 'test_official' rows; NaN where the
    dataset has none. The choice stays the validation one: this only reads it elsewhere."""
    g = _rows_of(rows, best, "test_official").groupby(KEYS)["accuracy"].agg(official_accuracy_mean="mean",
                                          official_accuracy_std="std",
                                          official_seeds="count").reset_index()
    return best[KEYS].merge(g, on=KEYS, how="left").set_index("dataset")


def fmt(mean: float, std: float, n: int) -> str:
    """'0.512 ± 0.013 (3 seeds)' or '0.512' for a single run."""
    if np.isnan(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f} ({n} seeds)" if n > 1 and not np.isnan(std) else f"{mean:.3f}"


def interval(b: pd.Series, n: int) -> str:
    """' [lo, hi] (1 run, bootstrap 95%)' for a one-run entry (a single seed, or an average
    of seeds), whose spread is its bootstrap interval; '' where seeds give the spread."""
    lo = b.get("f1_lo")
    if n > 1 or lo is None or pd.isna(lo):
        return ""
    return f" [{b['f1_lo']:.3f}, {b['f1_hi']:.3f}] (1 run, bootstrap 95%)"


def readme_table(profile: str = "cpu") -> str:
    """Markdown table: best measured model per dataset beside the seed studies' reports."""
    rows = results.load(profile=profile)
    if rows.empty:
        return f"_No result rows for profile `{profile}` yet: run `make report`._"
    best = best_per_dataset(leaderboard(rows))
    if best.empty:
        return (f"_Profile `{profile}` has no trained-model rows with validation scores yet "
                f"(only {sorted(rows['notebook'].unique())}): run `make report`._")
    ref = results.seed_reference()
    lines = ["| dataset | model chosen on validation (notebook, variant) | test macro-F1 | "
             "balanced acc. | accuracy | official test accuracy | "
             "`fer` peer macro-F1 (shared classes, 05) | "
             "seed studies' best report (macro-F1 / acc.) |",
             "|---|---|---|---|---|---|---|---|"]
    peer = rows[(rows["experiment"] == "peer") & (rows["split"] == "test")]
    off = official(rows, best)
    for _, b in best.iterrows():
        o = off.loc[b["dataset"]]
        seeds_off = o["official_seeds"]
        official_text = fmt(o["official_accuracy_mean"], o["official_accuracy_std"],
                            int(seeds_off)) if seeds_off > 0 else "–"  # NaN: no such split
        r = ref[ref["dataset"] == b["dataset"]]
        theirs = _theirs(r)
        n = int(b["seeds"])
        lines.append(
            f"| {b['dataset']} | {b['model']} ({b['notebook']}, {b['variant']}) | "
            f"{fmt(b['macro_f1_mean'], b['macro_f1_std'], n)}{interval(b, n)} | "
            f"{fmt(b['balanced_accuracy_mean'], b['balanced_accuracy_std'], n)} | "
            f"{fmt(b['accuracy_mean'], b['accuracy_std'], n)} | "
            f"{official_text} | "
            f"{_peer(peer, b['dataset'])} | "
            f"{theirs} |")
    return "\n".join(lines) + zero_line(best, rows) + average_line(rows) + training_time(profile) \
        + chance_line(rows) + beaten_table(rows)


def zero_line(best: pd.DataFrame, rows: pd.DataFrame) -> str:
    """The classes a chosen model never gets right, and the macro-F1 ceiling they leave."""
    from lib.reporting.findings import zero_classes as sentences

    lines = sentences(zero_classes(best, rows))
    return "\n\n" + " ".join(lines) if lines else ""


def average_line(rows: pd.DataFrame) -> str:
    """A line per dataset: the best average of one arm's seeds (06), chosen on validation
    among those, with its test macro-F1 and bootstrap interval (and official accuracy)."""
    board = leaderboard(rows)
    best = best_per_dataset(board, averages=True)
    if best.empty:
        return ""
    off = official(rows, best)
    parts = []
    for _, b in best.iterrows():
        o = off.loc[b["dataset"]]
        extra = f", official test accuracy {o['official_accuracy_mean']:.3f}" \
            if o["official_seeds"] > 0 else ""
        parts.append(f"{b['dataset']} {b['model']} ({b['variant']}): macro-F1 "
                     f"{b['macro_f1_mean']:.3f} [{b['f1_lo']:.3f}, {b['f1_hi']:.3f}]{extra}")
    return ("\n\nAveraging one arm's seeds (06's `seeds:<arm>`, the best by validation; one run "
            "each, bootstrap 95% interval): " + "; ".join(parts) + ".")


def beaten_table(rows: pd.DataFrame) -> str:
    """The 'seed study -> ours at the same setting -> beaten?' lines as a Markdown table."""
    table = beaten(rows)
    table = table[table["beaten"] != "not run here"]
    if table.empty:
        return ""
    lines = ["", "", "Each seed-study number against ours at the same setting (test split; `yes` when our "
             "mean minus two standard errors over seeds clears theirs):", "",
             "| study | dataset | experiment | model | metric | theirs | ours | beaten? |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.study} | {r.dataset} | {r.experiment}{'' if r.variant in (None, '') or r.variant != r.variant else ' ' + str(r.variant)} "
                     f"| {r.model} | {r.metric} | {r.theirs:.3f} | {fmt(r.ours, r.ours_std, int(r.seeds))} | {r.beaten} |")
    return "\n".join(lines)


def chance_line(rows: pd.DataFrame) -> str:
    """A line per dataset: how many trained arms clear 00_eda's chance interval."""
    share = chance_share(against_chance(leaderboard(rows), rows))
    if share.empty:
        return ""
    parts = [f"{r.dataset} {r.above_chance} of {r.arms} ({r.share:.0%})" for r in share.itertuples()]
    return ("\n\nTrained arms whose test macro-F1 mean clears the chance interval of `00_eda` "
            "(07 names the others): " + "; ".join(parts) + ".")


def training_time(profile: str) -> str:
    """A line per dataset: fits in the fit store and their summed training time."""
    from lib.training import store

    rec = store.records(profile)
    if rec.empty:
        return ""
    rec = rec.assign(multi=rec["threads"] > 1)
    g = rec.groupby("dataset").agg(count=("train_seconds", "size"), sum=("train_seconds", "sum"),
                                   multi=("multi", "sum"))
    # most fits run one thread each, two side by side; a long fit left alone gets both cores
    parts = [f"{d} {int(r['count'])} fits, {r['sum'] / 3600:.2f} h"
             + (f" ({int(r['multi'])} of them on 2 threads)" if r["multi"] else "")
             for d, r in g.iterrows()]
    return ("\n\nFit store (`python -m lib.plan` lists what is still missing): "
            + "; ".join(parts) + " of training on 2 CPU cores (one thread a fit unless said).")


def _peer(peer: pd.DataFrame, dataset: str) -> str:
    """The outside peer's test macro-F1 on this dataset (evaluated in 05 from any source)."""
    col = "eval_dataset" if "eval_dataset" in peer else "dataset"
    p = peer[peer[col].fillna(peer["dataset"]) == dataset] if col == "eval_dataset" else \
        peer[peer["dataset"] == dataset]
    if "variant" in p:  # 05 also stores our model's scores on the same classes
        p = p[p["variant"] == "reference"]
    if not len(p):
        return "–"
    x = p.iloc[0]
    k = len(str(x["eval_classes"]).split("|")) if "eval_classes" in p else None
    return f"{x['macro_f1']:.3f}" + (f" ({k} classes, n = {int(x['n'])})" if k else "")


def _theirs(ref: pd.DataFrame) -> str:
    """Each seed study's best reported test figure for a dataset (by macro-F1, else accuracy);
    a study that reports only training-set figures is shown with the split named."""
    out = []
    for study, r in ref.groupby("study", sort=True):
        test = r[r["split"] == "test"]
        r = test if len(test) else r
        # rank by macro-F1 only when every row reports it, so rows are ranked on one metric
        key = "macro_f1" if r["macro_f1"].notna().all() else "accuracy"
        x = r.sort_values(key, ascending=False, na_position="last").iloc[0]
        split = "" if x["split"] == "test" else f" ({x['split']})"
        out.append(f"{study} {x['model']}: {x['macro_f1']:.3f} / {x['accuracy']:.3f}{split}"
                   .replace("nan", "–"))
    return "; ".join(out) or "–"


def sections(block: str) -> dict[str, str]:
    """{profile: its section's text} of the README block; text before any section marker (the
    older single-table block) counts as LEGACY_PROFILE's."""
    parts = SECTION.split(block)
    out = {LEGACY_PROFILE: _titled(LEGACY_PROFILE, parts[0].strip())} if parts[0].strip() else {}
    for name, text in zip(parts[1::2], parts[2::2]):
        if name not in NOT_IN_README:  # one written by hand, or by an older lib.reporting.summary
            out[name] = text.strip()
    return out


def render_block(found: dict[str, str]) -> str:
    """The block's text: sections in PROFILES order (others after, as found)."""
    order = [p for p in config.PROFILES if p in found] + [p for p in found
                                                          if p not in config.PROFILES]
    return "\n\n".join(f"<!-- results:{p} -->\n{found[p]}" for p in order)


def _titled(profile: str, table: str) -> str:
    """A section's text: a line naming the profile and where its rows live, then the table."""
    return f"Profile `{profile}` (`results/{profile}/`):\n\n{table}"


COLAB = re.compile(r"(https://colab\.research\.google\.com/github/)[\w.-]+/[\w.-]+(/blob/)")


def github_path(url: str | None = None) -> str | None:
    """'owner/repo' of a GitHub remote URL (https or ssh), default the checkout's `origin`;
    None when there is none (then the README's links keep OWNER/REPO and say how to fill it)."""
    if url is None:
        import subprocess

        try:
            url = subprocess.run(["git", "remote", "get-url", "origin"], cwd=config.ROOT,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    m = re.search(r"github\.com[:/]+([\w.-]+)/([\w.-]+?)(?:\.git)?/?$", url or "")
    return f"{m.group(1)}/{m.group(2)}" if m else None


def colab_links(text: str, path: str | None) -> str:
    """The README's open-in-Colab links pointed at `path` ('owner/repo'); unchanged if None."""
    return COLAB.sub(lambda m: f"{m.group(1)}{path}{m.group(2)}", text) if path else text


def update_readme(profile: str = "cpu") -> bool:
    """Rewrite this profile's section of the README block (the smoke profile: nothing); True
    when the README changed."""
    if profile in NOT_IN_README:
        return False
    path = config.ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"README has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    block, tail = rest.split(END, 1)
    found = sections(block)
    found[profile] = _titled(profile, readme_table(profile))
    new = colab_links(f"{head}{START}\n{render_block(found)}\n{END}{tail}", github_path())
    if new == text:
        return False
    write_text(path, new)
    return True


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default=None,
                    help="default: gpu when CUDA is present, else cpu")
    a = ap.parse_args()
    name = a.profile or config.default_profile()
    if name in NOT_IN_README:
        print(f"README unchanged: profile {name!r} is never written to the README")
    else:
        print("README updated" if update_readme(name) else "README unchanged")
