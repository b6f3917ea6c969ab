"""The results registry: tidy CSV rows under results/<profile>/<dataset>/<notebook>.csv.

Semantics of `record` (experiment-keyed): every row carries an `experiment` name. A call
replaces, in that notebook's file, the rows whose experiment is among the experiments being
recorded, and keeps every other experiment. So re-running one cell (or the whole notebook)
replaces its own rows and never duplicates them, and notebooks never touch each other's
files. `clear` drops a notebook's file (or some of its experiments) before a fresh run.

Numbers the seed studies *report* live in `seed_reference()` only, never in results/.
"""
from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from lib.atomic import write_with
from lib.config import paths

COLUMNS: tuple[str, ...] = (
    "profile", "dataset", "notebook", "experiment", "variant", "model", "params", "seed",
    "split", "n", "accuracy", "balanced_accuracy", "macro_precision", "macro_recall",
    "macro_f1", "weighted_f1", "roc_auc_macro", "ece", "acc_lo", "acc_hi", "f1_lo", "f1_hi",
    "bacc_lo", "bacc_hi", "train_seconds", "epochs", "notes", "timestamp",
)
_FROM_REPORT = ("n", "accuracy", "balanced_accuracy", "macro_precision", "macro_recall",
                "macro_f1", "weighted_f1", "roc_auc_macro", "ece")
_CI = {"accuracy": ("acc_lo", "acc_hi"), "macro_f1": ("f1_lo", "f1_hi"),
       "balanced_accuracy": ("bacc_lo", "bacc_hi")}
_TEXT = {"profile", "dataset", "notebook", "experiment", "variant", "model", "split", "notes",
         "timestamp"}
_INTS = ("params", "seed", "n", "epochs")
TIMINGS = "_timings.csv"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _scalar(key: str, value):
    """CSV cells must be scalars: numpy scalars are unwrapped, containers refused."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"result field {key!r} must be a scalar, got {type(value).__name__}")


def row(report: Mapping | None = None, per_class: bool = False, **fields) -> dict:
    """One result row: the schema columns (NaN when unknown) from an evaluate() report, then
    `fields` (override or add; unknown names become extra columns after the schema).

    per_class=True adds `f1_<class>` and `recall_<class>` columns from report['per_class'].
    """
    out: dict = {c: None if c in _TEXT else float("nan") for c in COLUMNS}
    report = report or {}
    for key in _FROM_REPORT:
        if key in report:
            out[key] = _scalar(key, report[key])
    for name, (lo, hi) in _CI.items():
        if name in report.get("ci", {}):
            out[lo], out[hi] = (float(v) for v in report["ci"][name])
    if per_class:
        if "per_class" not in report:
            raise KeyError("per_class=True needs an evaluate() report with 'per_class'")
        pc = report["per_class"]
        for cls, f1, rec in zip(pc["class"], pc["f1"], pc["recall"]):
            out[f"f1_{cls}"], out[f"recall_{cls}"] = float(f1), float(rec)
    for key, value in fields.items():
        out[key] = _scalar(key, value)
    if isinstance(out["params"], float) and not math.isnan(out["params"]):
        out["params"] = int(out["params"])
    if not isinstance(out["timestamp"], str):
        out["timestamp"] = _now()
    return out


def frame(rows) -> pd.DataFrame:
    """Result rows as a DataFrame that has the schema's columns even when there are none (a
    re-render from a store holding none of a section's fits)."""
    df = pd.DataFrame(rows)
    return pd.DataFrame(columns=list(COLUMNS)) if df.empty and not len(df.columns) else df


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Schema columns first (added as NaN when missing), extras after in first-seen order."""
    df = df.copy()
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = float("nan")
    for c in _INTS:  # nullable ints: '12' not '12.0' in the CSV when some rows lack a value
        v = pd.to_numeric(df[c], errors="coerce")
        if v.notna().sum() == df[c].notna().sum() and (v.dropna() % 1 == 0).all():
            df[c] = v.astype("Int64")
    return df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]


def _write_atomic(df: pd.DataFrame, path: Path) -> Path:
    """Write the CSV atomically (lib.atomic): readers never see half a file."""
    return write_with(path, lambda tmp: df.to_csv(tmp, index=False))


def _read(path: Path) -> pd.DataFrame:
    """Read a results CSV with text columns as strings even when entirely empty."""
    return pd.read_csv(path, dtype={c: "str" for c in _TEXT})


def path_for(notebook: str, profile: str, dataset: str) -> Path:
    """results/<profile>/<dataset>/<notebook>.csv"""
    for name, v in (("notebook", notebook), ("profile", profile), ("dataset", dataset)):
        if not v or "/" in str(v) or str(v).startswith(("_", ".")):
            raise ValueError(f"bad {name} name {v!r}")
    return paths().results / profile / dataset / f"{notebook}.csv"


def _as_frame(rows) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows.copy()
    if isinstance(rows, Mapping):
        return pd.DataFrame([dict(rows)])
    return pd.DataFrame([dict(r) for r in rows])


def record(rows: Iterable[Mapping] | pd.DataFrame | Mapping, notebook: str, profile: str,
           dataset: str, experiment: str | None = None) -> None:
    """Write rows to results/<profile>/<dataset>/<notebook>.csv, replacing the rows of the
    same experiment(s) and keeping the others (see module docstring).

    `experiment` fills rows without one; with no rows it clears that experiment (without one,
    nothing is written: a re-render from a store that holds none of a notebook's fits). A row whose
    profile/dataset/notebook disagrees with the file it goes to is an error (put a second
    dataset, e.g. a cross-domain target, in its own column such as `eval_dataset`).
    """
    new = _as_frame(rows)
    path = path_for(notebook, profile, dataset)
    if new.empty:
        if experiment is None:
            print(f"results: no rows to record for {notebook} ({dataset}); nothing written")
            return None
        clear(notebook, profile, dataset, experiments=[experiment])
        return None
    if "experiment" not in new.columns:
        new["experiment"] = None
    missing = new["experiment"].isna() | (new["experiment"].astype(str) == "")
    if missing.any():
        if experiment is None:
            raise ValueError(f"{int(missing.sum())} row(s) have no experiment name; "
                             "pass experiment= or set it in row()")
        new["experiment"] = [experiment if m else e for m, e in zip(missing, new["experiment"])]
    for col, want in (("profile", profile), ("dataset", dataset), ("notebook", notebook)):
        if col in new.columns:
            bad = new[col].notna() & (new[col].astype(str) != want)
            if bad.any():
                raise ValueError(f"rows have {col}={sorted(set(new.loc[bad, col].astype(str)))} "
                                 f"but are recorded under {col}={want!r}")
        new[col] = want
    stamp = new["timestamp"] if "timestamp" in new.columns else pd.Series(None, new.index, object)
    new["timestamp"] = stamp.fillna(_now())
    if path.exists():
        old = _read(path)
        old = old[~old["experiment"].astype(str).isin(set(new["experiment"].astype(str)))]
        new = pd.concat([old, new], ignore_index=True) if len(old) else new
    _write_atomic(_ordered(new), path)  # None back: a notebook cell ending here echoes nothing


def clear(notebook: str, profile: str, dataset: str,
          experiments: Iterable[str] | None = None) -> Path | None:
    """Remove a notebook's rows (all, or only `experiments`). Returns the path if it existed."""
    path = path_for(notebook, profile, dataset)
    if not path.exists():
        return None
    if experiments is None:
        path.unlink()
        return path
    df = _read(path)
    return _write_atomic(df[~df["experiment"].astype(str).isin(set(experiments))], path)


def _read_tree(pattern_ok, profile: str | None, dataset: str | None) -> list[pd.DataFrame]:
    root = paths().results
    frames = []
    for f in sorted(root.glob("*/*/*.csv")):
        prof, data = f.parent.parent.name, f.parent.name
        if not pattern_ok(f.name) or (profile and prof != profile) or (dataset and data != dataset):
            continue
        df = _read(f)
        if df.empty:
            continue
        for col, value in (("profile", prof), ("dataset", data)):
            if col not in df.columns:
                df[col] = value
            df[col] = df[col].fillna(value)
        frames.append((f, df))
    return frames


def load(profile: str | None = None, dataset: str | None = None,
         notebook: str | None = None) -> pd.DataFrame:
    """Every measured row under results/ (optionally filtered), schema columns first."""
    frames = []
    for f, df in _read_tree(lambda name: not name.startswith("_"), profile, dataset):
        if "notebook" not in df.columns:
            df["notebook"] = f.stem
        df["notebook"] = df["notebook"].fillna(f.stem)
        if notebook and f.stem != notebook:
            continue
        frames.append(df)
    if not frames:
        return _ordered(pd.DataFrame(columns=list(COLUMNS)))
    return _ordered(pd.concat(frames, ignore_index=True))


def timing(notebook: str, profile: str, dataset: str, seconds: float) -> Path:
    """Record a notebook's wall time in results/<profile>/<dataset>/_timings.csv
    (one row per notebook, replaced on re-run)."""
    path = path_for(notebook, profile, dataset).with_name(TIMINGS)
    new = pd.DataFrame([{"notebook": notebook, "profile": profile, "dataset": dataset,
                         "seconds": float(seconds), "timestamp": _now()}])
    if path.exists():
        old = pd.read_csv(path)
        old = old[old["notebook"].astype(str) != notebook]
        new = pd.concat([old, new], ignore_index=True) if len(old) else new
    return _write_atomic(new.sort_values("notebook", kind="stable"), path)


def load_timings(profile: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    """All notebook wall times under results/."""
    frames = [df for _, df in _read_tree(lambda name: name == TIMINGS, profile, dataset)]
    cols = ["notebook", "profile", "dataset", "seconds", "timestamp"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


# ---- numbers reported by the seed studies (/work/shared/seeds), typed once, never measured ----

_SEED_DATASET = {"000": "six_emotions", "001": "rafdb", "002": "six_emotions",
                 "003": "facial_expressions", "004": "fer2013"}
# RAF-DB test per-class F1 of DDAMFN as reported by 001 (surprise .. neutral); the study gives
# no macro-F1, so it is their mean (and the mean of the per-class recalls matches 84.64%).
_S001_DDAMFN_F1 = {"surprise": 0.888, "fear": 0.719, "disgust": 0.764, "happiness": 0.968,
                   "sadness": 0.887, "anger": 0.885, "neutral": 0.898}
_S001_DDAMFN_P = (0.895, 0.769, 0.792, 0.965, 0.894, 0.914, 0.875)


def _seed_rows() -> list[dict]:
    def r(study, experiment, variant, model, split="test", source="", **m):
        return {"study": study, "dataset": _SEED_DATASET[study], "experiment": experiment,
                "variant": variant, "model": model, "split": split, **m, "source": source}

    t000 = "000 README table (acc, macro P, macro R, macro F1)"
    ddamfn_f1 = round(sum(_S001_DDAMFN_F1.values()) / 7, 4)
    return [
        # 000: six_emotions, 160 px, 70/15/15; macro recall = mean-class recall
        r("000", "baseline", None, "small_cnn", params=389_958, accuracy=0.1734,
          macro_precision=0.1320, macro_recall=0.2042, macro_f1=0.1272, source=t000),
        r("000", "augmentation", "none", "small_cnn", accuracy=0.2197, macro_precision=0.1868,
          macro_recall=0.2366, macro_f1=0.1946, source=t000),
        r("000", "augmentation", "standard", "small_cnn", accuracy=0.2023,
          macro_precision=0.0745, macro_recall=0.2431, macro_f1=0.1126, source=t000),
        r("000", "capacity", None, "small_cnn", params=389_958, accuracy=0.2081,
          macro_precision=0.1556, macro_recall=0.2083, macro_f1=0.1334, source=t000),
        r("000", "capacity", None, "wider_cnn", params=764_000, accuracy=0.2197,
          macro_precision=0.2023, macro_recall=0.2161, macro_f1=0.1585,
          source=t000 + "; params reported as '764K'"),
        r("000", "targeted_augmentation", "before", "small_cnn", accuracy=0.1734,
          macro_precision=0.1320, macro_recall=0.2042, macro_f1=0.1272, source=t000),
        r("000", "targeted_augmentation", "targeted", "small_cnn", accuracy=0.2081,
          macro_precision=0.1885, macro_recall=0.2478, macro_f1=0.1483, source=t000),
        *[r("000", "domain_shift", v, "small_cnn", split="new_domain", accuracy=a,
            macro_precision=p, macro_recall=rc, macro_f1=f,
            source=t000 + "; evaluated on the 'New Domain 6 Emotions' set")
          for v, a, p, rc, f in (("baseline", 0.1255, 0.0417, 0.1294, 0.0586),
                                 ("tta_flip", 0.1255, 0.0417, 0.1294, 0.0586),
                                 ("few_shot_10", 0.1365, 0.0476, 0.1386, 0.0645))],
        # 001: RAF-DB official test set (3,068 images)
        r("001", "single", "7-level", "ddamfn", params=4_190_000, accuracy=0.9107,
          balanced_accuracy=0.8464, macro_precision=round(sum(_S001_DDAMFN_P) / 7, 4),
          macro_f1=ddamfn_f1, source="001 results; macro P/F1 = mean of reported per-class"),
        r("001", "single", "5-level", "ddamfn", accuracy=0.9211, source="001 5-scale accuracy"),
        r("001", "single", "3-level", "ddamfn", accuracy=0.9289, source="001 3-scale accuracy"),
        r("001", "ensemble", "7-level", "convnextv2_tiny", accuracy=0.8729,
          balanced_accuracy=0.7810, source="001 ablation (overall, mean-class)"),
        r("001", "ensemble", "7-level", "soft_vote", accuracy=0.9159, balanced_accuracy=0.8495,
          source="001 ablation (overall, mean-class)"),
        r("001", "ensemble", "7-level", "stacking_lr", accuracy=0.9162,
          balanced_accuracy=0.8369, source="001 ablation (overall, mean-class)"),
        r("001", "ensemble", "5-level", "ensemble", accuracy=0.9276,
          source="001 'ensemble sentiment scales' (which ensemble is not stated)"),
        r("001", "ensemble", "3-level", "ensemble", accuracy=0.9361,
          source="001 'ensemble sentiment scales' (which ensemble is not stated)"),
        # 002: six_emotions (1,148 images), 70/15/15 stratified
        r("002", "augmentation", "none", "resnet18", accuracy=0.578, macro_f1=0.586,
          roc_auc_macro=0.86, source="002 results summary (no augmentation)"),
        r("002", "augmentation", "standard", "resnet18", accuracy=0.584, macro_f1=0.577,
          source="002 results summary (with augmentation)"),
        r("002", "capacity", None, "inception_v3", accuracy=0.51, macro_f1=0.51,
          roc_auc_macro=0.84, source="002 results summary ('~51%', '~0.51', '~0.84')"),
        # 003: facial_expressions; classification reports on the 10,267-image training portion
        r("003", "imbalance", "none", "cnn", split="train", n=10_267, accuracy=0.49,
          macro_precision=0.35, macro_recall=0.15, macro_f1=0.15, weighted_f1=0.46,
          source="003 report, classification report before augmentation (training data)"),
        r("003", "imbalance", "augment_to_3000", "cnn", split="train", n=28_267, accuracy=0.18,
          macro_precision=0.27, macro_recall=0.13, macro_f1=0.04, weighted_f1=0.06,
          source="003 report, after augmenting minority classes to 3000 (predicts NEUTRAL)"),
        # 004: FER2013 (7 classes)
        r("004", "capacity", "pretrained", "resnet18", accuracy=0.6216,
          source="004 section 2: test accuracy after 15 epochs (val 61.30%)"),
        r("004", "capacity", "none", "custom_cnn", accuracy=0.6169, f1_unstated_avg=0.6085,
          source="004 section 4: 'F1-score of 60.85%' (averaging not stated)"),
        r("004", "kfold_cv", "3-fold", "custom_cnn", n=3589, accuracy=0.57,
          macro_precision=0.49, macro_recall=0.48, macro_f1=0.48, weighted_f1=0.56,
          source="004 section 5 test classification report"),
        r("004", "capacity", "pretrained", "vit", split="model_card", n=25_170, accuracy=0.9092,
          macro_precision=0.9092, macro_recall=0.9092, macro_f1=0.9091, weighted_f1=0.9091,
          source="004 section 7: HuggingFace model card's own balanced test set, not FER2013"),
    ]


def seed_reference() -> pd.DataFrame:
    """Numbers the five seed studies report (literature values, `kind` = 'reported').

    Never written under results/ and never mixed with measured rows; NaN = not reported.
    """
    df = pd.DataFrame(_seed_rows())
    cols = ["study", "dataset", "experiment", "variant", "model", "split", "n", "params",
            "accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1",
            "weighted_f1", "roc_auc_macro", "f1_unstated_avg", "source"]
    df = df.reindex(columns=cols)
    df["params"] = df["params"].astype("Int64")
    df["n"] = df["n"].astype("Int64")
    df.insert(0, "kind", "reported")
    return df
