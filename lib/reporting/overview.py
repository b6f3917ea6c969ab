"""07's tables over every result row of a profile: the chosen model beside the seed studies
and the peer, "their experiment -> our number at the same setting -> beaten?", the
cross-dataset matrix, the FER2013 headline, timings and the `selected` rows.

    board = summary.leaderboard(rows); best = summary.best_per_dataset(board)
    summary.beaten(rows)          # one line per seed-study number (also in the README)
"""
from __future__ import annotations

import pandas as pd

from lib.evaluation import results
from lib.reporting import plots, summary

COLS = ["dataset", "notebook", "experiment", "variant", "model", "seeds", "val_macro_f1",
        "macro_f1_mean", "macro_f1_std", "f1_lo", "f1_hi", "balanced_accuracy_mean", "accuracy_mean"]
def beside(best: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: our chosen model (measured), each seed study's reported numbers and the
    `fer` peer measured in 05, macro-F1 and accuracy side by side."""
    ref = results.seed_reference()
    ref = ref[ref["dataset"].isin(best["dataset"].unique())]
    peer = rows[(rows["experiment"] == "peer") & (rows["split"] == "test") & (rows["variant"] == "reference")]
    keep = ["dataset", "kind", "model", "variant", "macro_f1", "accuracy"]
    ours = best.rename(columns={"macro_f1_mean": "macro_f1", "accuracy_mean": "accuracy"})
    return pd.concat([ours.assign(kind="measured (chosen on val)")[keep],
                      ref.assign(kind="reported by study " + ref["study"])[keep],
                      peer.assign(kind="fer peer, measured")[keep]], ignore_index=True) \
        .sort_values(["dataset", "kind"]).reset_index(drop=True)


def leaderboard_figures(board: pd.DataFrame, notebook: str) -> None:
    """Per dataset: the top ten entries by validation, test macro-F1 with their intervals and
    the seed studies' reported numbers as reference lines."""
    ref = results.seed_reference()
    for ds, part in board[~board["experiment"].isin(summary.CONTROLS)].groupby("dataset"):
        top = part.head(10).assign(label=lambda d: d["model"] + " · " + d["variant"].astype(str)
                                   + " (" + d["notebook"].str[:2] + ")").rename(columns={"macro_f1_mean": "macro_f1"})
        reported = {f"{r.study} {r.model}": r.macro_f1 for r in ref[ref["dataset"] == ds].itertuples()
                    if r.split == "test" and r.macro_f1 == r.macro_f1}
        plots.savefig(plots.metric_with_ci(top, label="label", metric="macro_f1", reported=reported,
                                           title=f"{ds}: top entries by validation, test macro-F1"),
                      notebook, ds, "leaderboard")


def cross_matrix(rows: pd.DataFrame) -> pd.DataFrame:
    """05's zero-shot and in-domain test macro-F1, trained on (rows) x evaluated on (columns):
    each cell over the classes that pair shares."""
    cross = rows[(rows["experiment"] == "cross_dataset") & (rows["split"] == "test")]
    cross = cross[cross["variant"].isin(["in_domain", "zero_shot"])] if "variant" in cross else cross
    if not len(cross) or "eval_dataset" not in cross:
        return pd.DataFrame()
    return cross.pivot_table(index="dataset", columns="eval_dataset", values="macro_f1", aggfunc="mean")


def headline(board: pd.DataFrame, dataset: str = "fer2013") -> pd.DataFrame:
    """The best single model and the best ensemble of a dataset, both by validation."""
    part = board[board["dataset"] == dataset]
    single = part[~part["experiment"].isin(summary.CONTROLS + summary.OTHER_TASKS + ("ensemble",))].head(1)
    ens = part[part["experiment"] == "ensemble"].head(1)
    return pd.concat([single.assign(kind="best single model"), ens.assign(kind="best ensemble")])[["kind", *COLS[1:]]]


def timings(profile: str) -> pd.DataFrame:
    """Minutes per notebook and dataset, as the runner recorded them."""
    t = results.load_timings(profile=profile)
    if not len(t):
        return pd.DataFrame()
    return (t.pivot_table(index="notebook", columns="dataset", values="seconds", aggfunc="last") / 60) \
        .round(1).rename_axis(columns="minutes per dataset")


def selected_rows(best: pd.DataFrame) -> list[dict]:
    """07's own rows: the chosen model per dataset (test numbers, chosen on validation)."""
    out = [results.row(None, experiment="selected", variant=f"{b.notebook}:{b.variant}", model=b.model,
                       split="test", n=None, accuracy=b.accuracy_mean, balanced_accuracy=b.balanced_accuracy_mean,
                       macro_f1=b.macro_f1_mean, f1_lo=b.f1_lo, f1_hi=b.f1_hi,
                       notes=f"chosen on val macro-F1 {b.val_macro_f1:.4f}; test mean over {int(b.seeds)} "
                             f"seed(s), std {b.macro_f1_std:.4f}") for b in best.itertuples()]
    return out or [results.row(None, experiment="selected", model="none", split="test")]
