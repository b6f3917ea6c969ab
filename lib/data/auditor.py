"""Per-file audit of a manifest (decodability, real format, mode, size, hashes, duplicates,
conflicts) and `usable()`, the one place rows are dropped, each drop counted with its reason.

The per-file probe table is cached as CSV under paths().cache/audit, keyed by the file list
and every file's size and mtime, so a re-run on unchanged data costs only the stat calls.
Beside it, `<dataset>-problems.csv` lists every offending file or folder (missing,
undecodable, empty class folder, not an image) with a reason that names it; the audit
prints the first few.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from lib.atomic import write_with
from lib import config
from lib.config import paths
from lib.data.imageio import (csv_table, is_csv_path, parallel_map, probe, split_csv_path,
                         stat_key)

AUDIT_VERSION = 2  # 2: reasons name the path; pixel checks on the reduced-scale decode
PROBLEM_COLS = ["path", "problem", "reason"]
PROBLEMS_SHOWN = 5
BLANK_STD = 2.0  # gray std (0-255) of a 64x64 thumbnail below which an image is "nearly blank"
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
PROBE_COLS = ["decodable", "error", "format", "ext_matches", "mode", "width", "height", "sha1",
              "phash", "pixel_std", "bytes"]


def _probe_table(files: list[str], name: str, cache: bool, workers: int | None,
                 progress: bool) -> tuple[pd.DataFrame, bool]:
    """Probe each file once (or read the cached table); returns (table, came from cache)."""
    key = hashlib.sha1(json.dumps([AUDIT_VERSION, stat_key(files)]).encode()).hexdigest()[:16]
    file = paths().cache / "audit" / f"{name}-{key}.csv"
    if cache and file.exists():
        t = pd.read_csv(file, keep_default_na=False, dtype={"sha1": str, "phash": str, "error": str,
                                                           "format": str, "mode": str})
        t["pixel_std"] = pd.to_numeric(t["pixel_std"], errors="coerce")
        return t, True
    for csv_file in {split_csv_path(f)[0] for f in files if is_csv_path(f)}:
        if os.path.isfile(csv_file):  # parse a pixels CSV once, here: forked workers inherit it
            csv_table(csv_file)
    t = pd.DataFrame(parallel_map(probe, files, desc=f"audit {name}", workers=workers,
                                  progress=progress))
    if cache:
        write_with(file, lambda tmp: t.to_csv(tmp, index=False))
    return t, False


def _group_ids(keys: pd.Series, paths_: pd.Series) -> pd.Series:
    """Integer id for each value of `keys` shared by more than one distinct file, else -1."""
    ok = keys.fillna("").astype(str) != ""
    n_files = paths_[ok].groupby(keys[ok]).nunique()
    multi = n_files[n_files > 1].index
    ids = {k: i for i, k in enumerate(sorted(multi))}
    return keys.map(ids).fillna(-1).astype(int)


def _components(edges: list[list[str]]) -> list[str]:
    """Union-find: each row's list of node names -> the row's component name."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for nodes in edges:
        for other in nodes[1:]:
            a, b = find(nodes[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [find(nodes[0]) for nodes in edges]


def audit(m: pd.DataFrame, cache: bool = True, workers: int | None = None,
          progress: bool = True) -> pd.DataFrame:
    """The manifest with per-file audit columns added (one row per manifest row).

    Added: decodable, error, format, ext_matches, mode, width, height, sha1, phash (64-bit
    dHash), pixel_std, blank, dup_group / near_dup_group (-1 = unique), conflict (same file or
    same bytes, different labels), near_conflict (same dHash, different labels), and
    split_group (group joined with exact and near duplicates: what a split must keep together).
    """
    t0 = time.perf_counter()
    name = str(m["dataset"].iloc[0]) if len(m) else "empty"
    files = sorted(set(m["path"]))
    table, cached = _probe_table(files, name, cache, workers, progress)
    a = m.drop(columns=[c for c in PROBE_COLS if c in m.columns]).merge(
        table[["path"] + PROBE_COLS], on="path", how="left", validate="many_to_one")
    a["decodable"] = a["decodable"].astype(bool)
    a["blank"] = a["decodable"] & (a["pixel_std"] < BLANK_STD)
    a["dup_group"] = _group_ids(a["sha1"], a["path"])
    a["near_dup_group"] = _group_ids(a["phash"], a["path"])
    lab = a["label"].where(a["label"].notna(), None)
    n_by_sha = lab.groupby(a["sha1"]).nunique()
    n_by_ph = lab.groupby(a["phash"]).nunique()
    a["conflict"] = a["label_conflict"] | ((a["dup_group"] >= 0) & (a["sha1"].map(n_by_sha) > 1))
    a["near_conflict"] = (a["near_dup_group"] >= 0) & (a["phash"].map(n_by_ph) > 1)
    edges = [[f"g:{g}", f"k:{k}"] + ([f"h:{h}"] if d >= 0 else []) + ([f"p:{p}"] if n >= 0 else [])
             for g, k, h, d, p, n in zip(a["group"], a["key"], a["sha1"], a["dup_group"],
                                         a["phash"], a["near_dup_group"])]
    a["split_group"] = _components(edges)
    a.attrs.update(m.attrs, audit_seconds=round(time.perf_counter() - t0, 2), audit_cached=cached)
    found = problems(a)
    a.attrs["problems_file"] = where = str(_write_problems(found, name))
    print(f"audit {name}: {len(files):,} files, {len(a):,} rows in "
          f"{a.attrs['audit_seconds']:.1f} s ({'cache' if cached else 'decoded'}); "
          f"{len(found):,} problem(s)" + (f", listed in {config.rel(where)}" if len(found) else ""))
    for r in found["reason"].head(PROBLEMS_SHOWN):
        print(f"  {r}")
    if len(found) > PROBLEMS_SHOWN:
        print(f"  ... and {len(found) - PROBLEMS_SHOWN:,} more in that file")
    return a


def problems(a: pd.DataFrame) -> pd.DataFrame:
    """Every offending file or folder once: path, problem, reason (which names the path).

    What listing the dataset left out (empty class folders, non-image files: load_manifest's
    `attrs["listing_problems"]`), then missing and (once audited) undecodable files.
    """
    files = a.drop_duplicates("path")
    missing = files["missing_file"].astype(bool)
    bad = missing | ~files["decodable"].astype(bool) if "decodable" in files else missing
    errors = files["error"] if "error" in files else pd.Series("", index=files.index)
    rows = [dict(path=p, problem="missing file" if m else "undecodable",
                 reason=e if e else f"missing file: {p}")
            for p, m, e in zip(files.loc[bad, "path"], missing[bad], errors[bad].fillna(""))]
    return pd.DataFrame(list(a.attrs.get("listing_problems", [])) + rows, columns=PROBLEM_COLS)


def _write_problems(found: pd.DataFrame, name: str) -> Path:
    """Write the problem list (even an empty one: no stale list survives a clean re-run)."""
    return write_with(paths().cache / "audit" / f"{name}-problems.csv",
                      lambda tmp: found.to_csv(tmp, index=False))


def leaks(a: pd.DataFrame) -> pd.Series:
    """Rows whose split group (exact or near duplicate, same person...) already appears in an
    earlier split (train < val < test): leakage. Only official splits can have any."""
    if "split_group" not in a or a["split"].isna().all():
        return pd.Series(False, index=a.index)
    order = a["split"].map(SPLIT_ORDER)
    first = order.groupby(a["split_group"]).transform("min")
    return order.notna() & (order > first)


def _case_style(s: str) -> str:
    return "lower" if s == s.lower() else "UPPER" if s == s.upper() else "Mixed"


def audit_summary(a: pd.DataFrame) -> dict:
    """Counts worth knowing about an audited manifest (also what print_audit shows)."""
    files = a.drop_duplicates("path")
    labelled = a[a["label"].notna()]
    raw = labelled["raw_label"].astype(str)
    listed = a.attrs.get("listing_problems", [])
    out = dict(
        dataset=a.attrs.get("dataset", str(a["dataset"].iloc[0]) if len(a) else ""),
        rows=len(a), files=len(files), label_rows=len(labelled),
        labelled_files=labelled["path"].nunique(),
        unlabelled_files=int(a["unlabelled"].sum()), missing_files=int(files["missing_file"].sum()),
        doubly_labelled=int((files["n_label_rows"] > 1).sum()),
        conflicting_files=int(files["label_conflict"].sum()),
        label_counts=labelled.drop_duplicates("key")["label"].value_counts().to_dict(),
        spellings={k: sorted(v) for k, v in raw.groupby(labelled["label"]).unique().items()},
        case_styles=sorted({_case_style(s) for s in raw}),
        split_counts=a["split"].value_counts().to_dict(),
        empty_class_folders=[p["path"] for p in listed if p["problem"] == "empty class folder"],
        non_image_files=sum(p["problem"] == "not an image" for p in listed),
    )
    if "decodable" in a:
        bad = files[~files["decodable"]]
        out.update(
            undecodable=len(bad), errors=Counter(e.split(":")[0] for e in bad["error"]),
            formats=files["format"].value_counts().to_dict(),
            modes=files["mode"].value_counts().to_dict(),
            ext_mismatch=Counter(f"{f} named {e}" for f, e in
                                 zip(files.loc[~files["ext_matches"] & files["decodable"], "format"],
                                     files.loc[~files["ext_matches"] & files["decodable"], "ext"])),
            width=files.loc[files["decodable"], "width"].describe()[["min", "50%", "max"]].to_dict(),
            height=files.loc[files["decodable"], "height"].describe()[["min", "50%", "max"]].to_dict(),
            blank=int(files["blank"].sum()),
            dup_groups=int(files.loc[files["dup_group"] >= 0, "dup_group"].nunique()),
            dup_files=int((files["dup_group"] >= 0).sum()),
            dup_conflict_groups=int(files.loc[(files["dup_group"] >= 0) & files["conflict"],
                                              "dup_group"].nunique()),
            near_dup_groups=int(files.loc[files["near_dup_group"] >= 0, "near_dup_group"].nunique()),
            near_conflict_groups=int(files.loc[files["near_conflict"], "near_dup_group"].nunique()),
            cross_split_dup_groups=int((a[(a["dup_group"] >= 0) & a["split"].notna()]
                                        .groupby("dup_group")["split"].nunique() > 1).sum()),
            leak_rows=int(leaks(a).sum()),
            audit_seconds=a.attrs.get("audit_seconds"),
            problems_file=config.rel(a.attrs["problems_file"]) if a.attrs.get("problems_file")
            else None,
        )
    return out


def print_audit(a: pd.DataFrame) -> dict:
    """Print the audit summary, one fact a line; returns it."""
    s = audit_summary(a)
    print(f"== audit of {s['dataset']}")
    for k, v in s.items():
        if k != "dataset":
            print(f"{k:>22}: {dict(v) if isinstance(v, Counter) else v}")
    return s


def usable(a: pd.DataFrame, drop_leaks: bool = True, drop_blank: bool = True,
           verbose: bool = True) -> pd.DataFrame:
    """The rows to train and evaluate on; every other row is counted under its first reason.

    Dropped: missing files, unlabelled files, undecodable files, conflicting labels (same
    file or same bytes, every copy), repeated label rows (first kept), nearly blank images,
    and (drop_leaks) val/test rows byte-identical to a row of an earlier split. The counts
    are printed and kept in `.attrs["skipped"]`.
    """
    rules = [("missing file", a["missing_file"]), ("unlabelled", a["unlabelled"])]
    if "decodable" in a:
        rules.append(("undecodable", ~a["decodable"] & ~a["missing_file"]))
    rules += [("conflicting labels", a["conflict"] if "conflict" in a else a["label_conflict"]),
              ("repeated label row", a["dup_label_row"])]
    if drop_blank and "blank" in a:
        rules.append(("nearly blank", a["blank"]))
    if drop_leaks:
        rules.append(("(near) duplicate of an earlier split", leaks(a)))
    reason = pd.Series([None] * len(a), index=a.index, dtype=object)
    for name, mask in rules:
        reason[reason.isna() & mask.fillna(False).astype(bool)] = name
    skipped = reason.dropna().value_counts().to_dict()
    out = a[reason.isna()].copy()
    out.attrs = {**a.attrs, "skipped": skipped}
    if verbose:
        detail = ", ".join(f"{n:,} {r}" for r, n in skipped.items()) or "nothing"
        print(f"usable {out.attrs.get('dataset', '')}: {len(out):,} of {len(a):,} rows; "
              f"skipped {detail}")
    return out
