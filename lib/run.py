"""Run the notebook series headless with papermill.

    python -m lib.run --profile cpu --dataset six_emotions fer2013 [--only 00,01] [--html]
                      [--jobs N] [--no-train]

Notebooks get their fits from the fit store (lib.training.store): a missing fit is trained in the
kernel, or, with --no-train, listed as missing and left out (a re-render from the store).

Executed copies go to reports/<profile>/<dataset>/; result rows to results/<profile>/;
figures to figures/<profile>/. Stops at the first failing notebook and names the failing cell.
Summary notebooks (`*_summary`) read every dataset's results, so they run after all the others.
Without a GPU, all datasets run side by side (one process per dataset, the cores split
between them): small CPU models scale poorly across threads, so this is faster than one
dataset at a time.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from lib import config
from lib.atomic import write_bytes, write_text

NOTEBOOKS_DIR = config.ROOT / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The series' notebooks in order, optionally only those whose number prefix is listed."""
    found = sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {o.strip().zfill(2) for o in only if o.strip()}
        unknown = wanted - {p.name[:2] for p in found}
        if unknown:
            raise SystemExit(f"--only names no notebook: {sorted(unknown)}; have "
                             f"{[p.name for p in found]}")
        found = [p for p in found if p.name[:2] in wanted]
    return found


def parameters_for(nb: Path, profile: config.Profile, dataset: str) -> dict:
    """The profile's parameters that this notebook declares in its `parameters` cell."""
    import papermill as pm

    declared = set(pm.inspect_notebook(str(nb)))
    params = {**profile.as_params(), "DATASET": dataset}
    return {k: v for k, v in params.items() if k in declared}


def _prepare_env() -> None:
    """Kernels inherit this process's env: absolute data root, and this Python first on PATH."""
    os.environ["FER_DATA_ROOT"] = str(config.paths().data_root)
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["FER_PLAIN_PROGRESS"] = "1"  # text bars in the log and the reports
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


def rel(path: Path | str) -> str:
    """`path` relative to the project root when inside it (lib.config.rel)."""
    return config.rel(path)


def _failure_message(nb: Path, out: Path, err: Exception) -> str:
    cell = getattr(err, "cell_index", None)
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    where = f"cell {cell}" if cell is not None else "unknown cell"
    return (f"\nFAILED: {nb.name}, {where}: {ename}: {evalue}\n"
            f"partial output with the traceback: {rel(out)}\n")


def run_notebook(nb: Path, profile: config.Profile, dataset: str, html: bool = False) -> float:
    """Execute one notebook; return its wall time in seconds. Raises on failure."""
    import papermill as pm

    from lib.evaluation import results

    out_dir = config.paths().reports / profile.name / dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / nb.name
    params = parameters_for(nb, profile, dataset)
    csv = results.path_for(nb.stem, profile.name, dataset)
    before = csv.read_bytes() if csv.exists() else None
    started, t0 = time.time(), time.perf_counter()
    try:
        pm.execute_notebook(
            str(nb), str(out), parameters=params, kernel_name="python3", log_output=True,
            progress_bar=False, cwd=str(config.ROOT), request_save_on_cell_execute=True,
        )
    except BaseException:
        print(_drop_failed_rows(csv, before), file=sys.stderr, flush=True)
        raise
    seconds = time.perf_counter() - t0
    results.timing(nb.stem, profile.name, dataset, seconds)
    for stale in _prune_figures(nb.stem, profile.name, dataset, started):
        print(f"figures: removed {rel(stale)}, which this run no longer draws", flush=True)
    if html:
        export_html(out)
    return seconds


def _prune_figures(notebook: str, profile: str, dataset: str, since: float) -> list[Path]:
    """Delete the figures of a notebook and dataset that a complete run did not write (an
    earlier run's, e.g. of a model no longer chosen), so the committed figures are this
    run's; returns them. A failed run prunes nothing."""
    folder = config.paths().figures / profile / notebook / dataset
    stale = [f for f in sorted(folder.glob("*.png")) if f.stat().st_mtime < since]
    for f in stale:
        f.unlink()
    return stale


def _drop_failed_rows(csv: Path, before: bytes | None) -> str:
    """Undo the result rows a failed notebook run wrote: the file as it was before the run
    (the last complete run's rows), or no file. Returns what it did, to print."""
    if not csv.exists() or (before is not None and csv.read_bytes() == before):
        return f"results: the failed run wrote no rows to {rel(csv)}"
    if before is None:
        csv.unlink()
        return f"results: removed {rel(csv)}, written by the failed run"
    write_bytes(csv, before)
    return f"results: {rel(csv)} restored to its rows from before the failed run"


def export_html(executed: Path) -> Path:
    """HTML copy of an executed notebook, beside it."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    return write_text(executed.with_suffix(".html"), body)


def summary(profile: str, dataset: str, stems: list[str]) -> pd.DataFrame:
    """Result rows these notebooks produced, condensed to one line per experiment and model."""
    from lib.evaluation import results

    rows = results.load(profile=profile, dataset=dataset)
    if rows.empty:
        return rows
    rows = rows[rows["notebook"].isin(stems) & (rows["split"] == "test")]
    if rows.empty:
        return rows
    keys = ["notebook", "experiment", "variant", "model"]
    g = rows.groupby(keys, dropna=False)
    return g.agg(seeds=("seed", "nunique"), macro_f1=("macro_f1", "mean"),
                 macro_f1_std=("macro_f1", "std"), accuracy=("accuracy", "mean")).reset_index()


def is_summary(nb: Path) -> bool:
    """Summary notebooks read every dataset's results: they run after all the others."""
    return nb.stem.endswith("_summary")


def default_jobs(n_datasets: int) -> int:
    """On a CPU every dataset runs at once (one thread each when they outnumber the cores):
    capping the jobs at the core count left a core idle for the last dataset's whole tail
    (3 datasets on 2 cores, measured). One at a time on a GPU, which one series fills."""
    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, n_datasets)


def run_series(nbs: list[Path], profile: config.Profile, dataset: str, html: bool,
               ) -> list[tuple[str, str, float]]:
    """Run notebooks in order for one dataset; (dataset, stem, seconds) each. Raises
    SystemExit(1) at the first failure, after naming the failing cell."""
    out = []
    for i, nb in enumerate(nbs, 1):
        print(f"[{dataset} {i}/{len(nbs)}] {nb.name} (profile {profile.name}) ...", flush=True)
        try:
            sec = run_notebook(nb, profile, dataset, html=html)
        except Exception as err:  # papermill raises its own error type with cell info
            executed = config.paths().reports / profile.name / dataset / nb.name
            print(_failure_message(nb, executed, err), file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        print(f"[{dataset} {i}/{len(nbs)}] {nb.name} done in {sec:.1f} s", flush=True)
        out.append((dataset, nb.stem, sec))
    return out


def run_parallel(datasets: list[str], nbs: list[Path], profile: config.Profile, html: bool,
                 jobs: int) -> list[tuple[str, str, float]]:
    """One child process per dataset, at most `jobs` at once, each with cores // jobs threads;
    each child's output goes to runs/<profile>_<dataset>.log. Raises SystemExit(1) if any fails
    (the others still finish, so their reports are complete)."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    pkg_root = str(Path(__file__).resolve().parents[1])  # children import this lib
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "FER_PROJECT_ROOT": str(config.ROOT),
           "PYTHONPATH": os.pathsep.join(filter(None, [pkg_root, os.environ.get("PYTHONPATH")]))}
    log_dir = config.paths().runs
    log_dir.mkdir(parents=True, exist_ok=True)
    only = ",".join(nb.name[:2] for nb in nbs)

    def child(ds: str) -> tuple[str, int, Path]:
        log = log_dir / f"{profile.name}_{ds}.log"
        cmd = [sys.executable, "-m", "lib.run", "--profile", profile.name, "--dataset", ds,
               "--only", only, "--jobs", "1", *(["--html"] if html else []),
               *(["--no-train"] if os.environ.get("FER_STORE_TRAIN") == "0" else [])]
        print(f"[{ds}] started ({threads} thread(s)); log: {rel(log)}", flush=True)
        with log.open("w") as out:
            rc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=config.ROOT).returncode
        print(f"[{ds}] finished, exit code {rc}", flush=True)
        return ds, rc, log

    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads only wait on the children
        for ds, rc, log in pool.map(child, datasets):
            if rc:
                failed.append(ds)
                print("".join(log.read_text(errors="replace").splitlines(True)[-15:]),
                      file=sys.stderr, flush=True)
    if failed:
        print(f"FAILED datasets: {failed} (logs in {rel(log_dir)})", file=sys.stderr)
        raise SystemExit(1)
    from lib.evaluation import results

    stems = {nb.stem for nb in nbs}
    t = results.load_timings(profile=profile.name)
    t = t[t["dataset"].isin(datasets) & t["notebook"].isin(stems)]
    return list(t[["dataset", "notebook", "seconds"]].itertuples(index=False, name=None))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default=None,
                    help="default: gpu when CUDA is present, else cpu")
    ap.add_argument("--dataset", nargs="+", default=["six_emotions"])
    ap.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 00,01")
    ap.add_argument("--html", action="store_true", help="also export HTML next to each report")
    ap.add_argument("--jobs", type=int, default=None,
                    help="datasets run at once (default: 1 on a GPU, else all of them)")
    ap.add_argument("--no-train", action="store_true",
                    help="render from the fit store only: a missing fit is listed, not trained")
    args = ap.parse_args(argv)
    if args.no_train:  # kernels and child runners inherit it (lib.training.store.training_allowed)
        os.environ["FER_STORE_TRAIN"] = "0"

    from lib.evaluation import results

    profile = config.get_profile(args.profile)
    _prepare_env()
    nbs = notebooks(args.only.split(",") if args.only else None)
    if not nbs:
        raise SystemExit(f"no notebooks found in {rel(NOTEBOOKS_DIR)}")
    first, last = [nb for nb in nbs if not is_summary(nb)], [nb for nb in nbs if is_summary(nb)]
    jobs = args.jobs or default_jobs(len(args.dataset))
    t_all = time.perf_counter()
    try:
        if first and jobs > 1 and len(args.dataset) > 1:
            timings = run_parallel(args.dataset, first, profile, args.html, jobs)
        else:
            timings = [t for ds in args.dataset
                       for t in run_series(first, profile, ds, args.html)]
        timings += [t for ds in args.dataset for t in run_series(last, profile, ds, args.html)]
    except SystemExit as stop:
        return int(stop.code or 1)
    wall = time.perf_counter() - t_all
    for dataset in args.dataset:
        mine = [sec for ds, _, sec in timings if ds == dataset]
        total = sum(mine)
        timings.append((dataset, "series", total))
        if not args.only:  # the whole series, only when every notebook ran
            results.timing("series", profile.name, dataset, total)
            if len(args.dataset) > 1:  # datasets side by side: the run's own wall time
                results.timing("series_wall_all_datasets", profile.name, dataset, wall)
        table = summary(profile.name, dataset, [nb.stem for nb in nbs])
        print(f"\n== {dataset}: {len(mine)} notebook(s), {total / 60:.1f} min ==")
        if not table.empty:
            with pd.option_context("display.width", 160, "display.max_rows", 200):
                print(table.round(4).to_string(index=False))
    print(f"\nwall time of this run: {wall / 60:.1f} min ({len(args.dataset)} dataset(s), "
          f"{jobs} at a time)")
    print("\nwall times (s):")
    print(pd.DataFrame(timings, columns=["dataset", "notebook", "seconds"]).round(1)
          .to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
