"""Running the compute plan (lib.training.plan): what is stored and what is missing with an
estimate, and the workers that train the missing fits, sharing them through lock files.

    python -m lib.plan --profile cpu [--dataset D ...]            # stored / missing + estimate
    python -m lib.plan --profile cpu --train [--dataset D] [--jobs 2] [--within 9000] [--seeds 0 1]
    python -m lib.plan --profile cpu --dataset D --rebuild small_cnn-<key>  # a lost checkpoint

`--within S` starts only fits whose estimate still ends within S seconds of the start (a
session's time left: a fit cut off by the session's end is lost with its machine); the
others are named and left for the next run.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import pandas as pd

from lib import config
from lib.training.plan import DEFAULT_IPS, GPU_ONLY, Arm, arms

# arms an upper layer derives from stored fits, e.g. 04's after arms from 02's choice
# (lib.plan passes lib.analysis.targeted.plan_arms): (P, dataset, splits) -> (arms, why none)
Derived = Callable[..., tuple[list[Arm], str]]


def planned(P: config.Profile, dataset: str, splits, derived: Derived | None = None,
            notes: list[str] | None = None) -> list[Arm]:
    """The plan's arms on a dataset, then the derived ones; why a derivation gave none goes
    to `notes`."""
    out = arms(P, dataset, splits)
    if derived is not None:
        more, why = derived(P, dataset, splits)
        out += more
        if why and notes is not None:
            notes.append(f"{dataset}: {why}")
    return out


def _splits(P: config.Profile, dataset: str):
    from lib import data

    return data.load_splits(dataset, max_per_class=P.max_per_class, seed=P.seeds[0])


def measured_rates(P: config.Profile) -> dict:
    """{(model, img_size): median training images/s} over the profile's stored fits.

    The estimate is for one thread, and a lone 2-thread fit runs about 1.4x as fast, so a
    model's one-thread fits set its rate; its other fits count only where it has none."""
    from lib.training import store

    return rates(store.records(P.name))


def rates(records: pd.DataFrame) -> dict:
    """measured_rates from a store.records table."""
    if records.empty:
        return {}
    kw = records["model_kw"].map(_args) if "model_kw" in records else _args({})
    records = records.assign(model_kw=kw)
    by = lambda df: df.groupby(["model", "img_size", "model_kw"])[  # noqa: E731
        "images_per_s"].median().to_dict()
    return {**by(records), **by(records[records["threads"] == 1])}


def estimate(spec, n_train: int, ips: dict) -> float:
    """Seconds to train `spec` on n_train images for its whole epoch cap (early stopping
    only shortens it) at the measured one-thread rate."""
    rate = _rate(ips, spec.model, spec.img_size, spec.model_kw, spec.channels)
    return n_train * spec.recipe["epochs"] / rate


def status(P: config.Profile, dataset: str, derived: Derived | None = None,
           notes: list[str] | None = None) -> pd.DataFrame:
    """One row per planned fit: notebook, arm, model, seed, input, stored?, epochs a part-trained
    fit has behind it (its resume state), estimated seconds still to train."""
    from lib.training import store

    splits = _splits(P, dataset)
    ips = measured_rates(P)
    rows = []
    for a in planned(P, dataset, splits, derived, notes):
        for spec in a.specs:
            rec, data3, key = store.lookup(spec, splits, P.name)
            done = 0 if rec.exists() else store.epochs_done(spec, dataset, key, P.name)
            cap = spec.recipe["epochs"]
            est = estimate(spec, len(data3[0]), ips) * (1 - min(done, cap) / cap)
            rows.append({"dataset": dataset, "notebook": a.notebook, "arm": a.name,
                         "model": spec.model, "seed": spec.seed, "subset": spec.subset,
                         "input": f"{spec.img_size}px x{spec.channels}", "n_train": len(data3[0]),
                         "stored": rec.exists(), "done": f"{done}/{cap}" if done else "",
                         "estimate_s": 0.0 if rec.exists() else est, "key": key})
    return pd.DataFrame(rows)


def _rate(ips: dict, model: str, size: int, kw: dict | None = None, chans: int = 3) -> float:
    """Training images/s of `model` built with arguments `kw` at `size`: measured, else from
    the model's nearest measured point (the nearest size; there, these arguments first, then
    its defaults), scaled by the pixel count where the arguments are the same and by the
    ratio of multiply-adds where they differ (a sweep point at a quarter of the width trains
    about ten times faster; for a narrow net that overstates the speed, since per-step
    overhead does not shrink with it: 2.4x at 16 filters); else DEFAULT_IPS (measured at
    48/64/112 px)."""
    args, default = _args(kw or {}), _args({})
    if (model, size, args) in ips:
        return ips[(model, size, args)]
    near = [(s, a) for m, s, a in ips if m == model]
    if not near:
        return DEFAULT_IPS.get(model, 30.0)
    s, a = min(near, key=lambda sa: (abs(sa[0] - size), sa[1] != args, sa[1] != default))
    if a == args:
        return ips[(model, s, a)] * (s / size) ** 2
    return ips[(model, s, a)] * _macs(model, a, s, chans) / _macs(model, args, size, chans)


def _args(kw: dict) -> str:
    """A model's arguments as one hashable key."""
    return json.dumps(kw, sort_keys=True)


@functools.lru_cache(maxsize=None)
def _macs(model: str, args: str, size: int, chans: int) -> int:
    from lib import models

    net = models.create(model, num_classes=7, in_chans=chans, img_size=size, **json.loads(args))
    return models.count_macs(net, size, chans)


def _claim(lock: Path) -> bool:
    """Take a fit for this process (lock file with our pid); a dead owner's lock is taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return False
        except (ProcessLookupError, ValueError):
            lock.unlink(missing_ok=True)
            return _claim(lock)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def missing(P: config.Profile, datasets: list[str], notebooks: list[str] | None = None,
            arm_names: list[str] | None = None, seeds: list[int] | None = None,
            derived: Derived | None = None):
    """Yield (dataset, arm, spec, its record path, its train/val/test data) for every planned
    fit not stored yet, in training order, filtered by notebook, arm name and seed."""
    from lib.training import store

    for dataset in datasets:
        splits = _splits(P, dataset)
        for a in planned(P, dataset, splits, derived):
            if (notebooks and a.notebook[:2] not in notebooks) or (arm_names and a.name not in arm_names):
                continue
            for spec in a.specs:
                if seeds is not None and spec.seed not in seeds:
                    continue
                rec, data3, _ = store.lookup(spec, splits, P.name)
                if not rec.exists():
                    yield dataset, a, spec, splits, rec, data3


def train_missing(P: config.Profile, datasets: list[str], notebooks: list[str] | None = None,
                  arm_names: list[str] | None = None, within: float | None = None,
                  seeds: list[int] | None = None, derived: Derived | None = None) -> int:
    """Train every missing fit of the plan (skipping fits another process holds, with
    `within` seconds those whose estimate would end after them, and with `seeds` the other
    seeds); returns how many this process trained."""
    from lib.training import store

    done, ips = 0, measured_rates(P) if within is not None else {}
    deadline = time.monotonic() + within if within is not None else None
    for dataset, a, spec, splits, rec, data3 in missing(P, datasets, notebooks, arm_names, seeds, derived):
        if deadline is not None:
            est, left = estimate(spec, len(data3[0]), ips), deadline - time.monotonic()
            if est > left:
                print(f"plan: {dataset} {a.name} seed {spec.seed} left for a later run: "
                      f"about {est:.0f} s, {max(left, 0):.0f} s left", flush=True)
                continue
        lock = store.checkpoint_dir(P.name, dataset) / f"{rec.stem}.lock"
        if not _claim(lock):
            continue
        try:
            t0 = time.perf_counter()
            if not rec.exists():  # another process may have finished it meanwhile
                store.fit(spec, splits, P.name, train_missing=True)
                done += 1
                print(f"plan: {dataset} {a.name} seed {spec.seed} done in "
                      f"{time.perf_counter() - t0:.0f} s -> {rec.name}", flush=True)
        except store.MissingFit as e:  # it starts from a fit not trained yet
            print(f"plan: {dataset} {a.name} seed {spec.seed} skipped: {e}", flush=True)
        finally:
            lock.unlink(missing_ok=True)
    return done


def rebuild(P: config.Profile, dataset: str, names: list[str]) -> int:
    """Retrain the checkpoints of stored fits `names` (record stems, e.g. small_cnn-<key>)
    and check each against its record (store.rebuild); 0 when every one matched."""
    from lib.training import store

    splits, bad = _splits(P, dataset), 0
    for name in names:
        rec = store.root() / P.name / dataset / f"{Path(name).stem}.json"
        if not rec.is_file():
            print(f"plan: {rec} is not a stored fit", file=sys.stderr)
            bad += 1
            continue
        t0 = time.perf_counter()
        try:
            diff = store.rebuild(store.FitSpec(**store.meta_of(rec)["spec"]), splits, P.name)
        except (ValueError, FileExistsError) as e:
            print(f"plan: {e}", file=sys.stderr)
            bad += 1
            continue
        print(f"plan: {dataset} {rec.stem} checkpoint rebuilt in {time.perf_counter() - t0:.0f} s; "
              f"val probabilities within {diff:.2g} of the record", flush=True)
    return 1 if bad else 0


def worker_threads(jobs: int, todo: int, cores: int) -> tuple[int, int]:
    """(workers, threads each): `jobs` one-thread workers (side by side is the faster use of
    2 cores for many fits, measured), but no more workers than fits, the cores split between
    them: one long fit left gets every core (fer2013 vgg_cnn: 168 s an epoch on 2 threads
    alone against 300 s on 1 thread beside a partner, on one 2-core machine)."""
    workers = max(1, min(jobs, todo))  # todo may be counted only up to jobs
    return workers, max(1, cores // workers) if workers < jobs else 1


def _workers(args, jobs: int, derived: Derived | None = None) -> int:
    """Worker copies of this command (`worker_threads`), sharing the fits through lock files."""
    import subprocess

    P = config.get_profile(args.profile)
    only = [o.strip().zfill(2) for o in args.only.split(",")] if args.only else None
    # enough to size the workers: stop at `jobs` missing fits (the workers look them up again)
    todo = sum(1 for _ in islice(missing(P, args.dataset, only, args.arm, args.seeds, derived), jobs))
    if not todo:
        print("plan: no fit to train", flush=True)
        return 0
    workers, threads = worker_threads(jobs, todo, os.cpu_count() or 1)
    print(f"plan: {workers} worker(s), {threads} thread(s) each", flush=True)

    cmd = [sys.executable, "-m", "lib.plan", "--train", "--jobs", "1", "--profile", args.profile,
           "--dataset", *args.dataset] + (["--only", args.only] if args.only else []) + \
        (["--arm", *args.arm] if args.arm else []) + \
        (["--within", str(args.within)] if args.within is not None else []) + \
        (["--seeds", *map(str, args.seeds)] if args.seeds else [])
    cmd += ["--quiet"]  # the parent prints the plan once, after them
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FER_THREADS": str(threads),
           "FER_PLAIN_PROGRESS": "1"}
    procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
    return max(p.wait() for p in procs)


def main(argv: list[str] | None = None, derived: Derived | None = None) -> int:
    """The CLI; `derived` adds the arms an upper layer derives (lib.plan passes 04's)."""
    ap = argparse.ArgumentParser(prog="python -m lib.plan", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--dataset", nargs="+", default=["six_emotions", "facial_expressions",
                                                     "fer2013"])
    ap.add_argument("--only", default=None, help="notebook numbers, e.g. 01,03")
    ap.add_argument("--arm", nargs="+", default=None, help="only these arms, e.g. 03.conv4net")
    ap.add_argument("--train", action="store_true", help="train the missing fits")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, 1 thread each (no more than the fits missing: the cores split between them)")
    ap.add_argument("--quiet", action="store_true", help="train without printing the plan")
    ap.add_argument("--within", type=float, default=None, metavar="S",
                    help="start only fits whose estimate ends within S seconds")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="only these seeds (e.g. two workers on seeds 0 and 1 of a long arm)")
    ap.add_argument("--rebuild", nargs="+", default=None, metavar="RECORD",
                    help="retrain these stored fits' lost checkpoints (record names, one --dataset)")
    args = ap.parse_args(argv)
    P = config.get_profile(args.profile)
    args.profile = P.name
    only = [o.strip().zfill(2) for o in args.only.split(",")] if args.only else None
    if os.environ.get("FER_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["FER_THREADS"]))
    if args.rebuild:
        if len(args.dataset) != 1:
            ap.error("--rebuild takes one --dataset")
        return rebuild(P, args.dataset[0], args.rebuild)
    if args.train:
        if args.jobs > 1:
            rc = _workers(args, args.jobs, derived)
            if rc:
                return rc
        else:
            train_missing(P, args.dataset, only, args.arm, args.within, args.seeds, derived)
        if args.quiet:
            return 0
    notes: list[str] = []
    frames = [status(P, d, derived, notes) for d in args.dataset]
    df = pd.concat(frames, ignore_index=True)
    if only:
        df = df[df["notebook"].str[:2].isin(only)]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(df.drop(columns=["key"]).to_string(index=False))
    from lib.training import store

    left_out = {m: why for m, why in GPU_ONLY.items() if m not in P.backbones}
    for m, why in left_out.items():
        print(f"not in the {P.name} plan: {m} ({why})")
    rec = store.records(P.name)
    for d, g in df.groupby("dataset", sort=False):
        g = g.drop_duplicates("key")  # an arm shared by two names is one fit
        spent = rec.loc[rec["dataset"] == d, "train_seconds"].sum() if not rec.empty else 0.0
        print(f"{d}: {int(g['stored'].sum())} of {len(g)} fits stored ({spent / 3600:.2f} h of "
              f"training so far); missing about {g['estimate_s'].sum() / 3600:.1f} h of "
              "one-thread training")
    for n in notes:
        print(n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
