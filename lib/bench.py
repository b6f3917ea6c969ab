"""Micro-benchmarks for this machine.

    python -m lib.bench train [--models small_cnn resnet18 mobilenet_v2] [--sizes 48 64 112]
    python -m lib.bench jobs [--models conv4net:48:1 mobilenet_v2:112:3] [--compile]
    python -m lib.bench amp [--models vgg_cnn:48:1 mobilenet_v2:112:3]   # fp32 vs bf16 autocast
    python -m lib.bench data                     # lib.data.bench.run_data_bench()

`train` times full training steps (uint8 batch -> preprocess -> forward -> backward ->
AdamW step, as in lib.training.train.fit) at batch 64, 3 channels, untrained weights, with
channels_last off and on. The two settings alternate within each (model, size) and the
fastest step is kept: other processes on a shared machine only ever add time. The verdict
(channels_last faster by the geometric mean over all cells) is what
lib.training.train.CPU_CHANNELS_LAST records for CPUs.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import pandas as pd
import torch

MODELS = ("small_cnn", "resnet18", "mobilenet_v2")
SIZES = (48, 64, 112)


def _step_times(name: str, size: int, channels_last: bool, steps: int, warmup: int,
                batch: int, model_cache: dict) -> list[float]:
    """Seconds per training step for one (model, size, memory format)."""
    from lib import models

    key = (name, size)
    if key not in model_cache:
        torch.manual_seed(0)
        model_cache[key] = models.create(name, 7, in_chans=3, pretrained=False, img_size=size)
    model = model_cache[key].train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # fresh: its state follows the format
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 7, (batch,), generator=g)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        xb = models.preprocess(x, model.fer_cfg, "cpu", channels_last=channels_last)
        out = model(xb)
        loss = torch.nn.functional.cross_entropy(out[0] if isinstance(out, tuple) else out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def bench_train(model_names=MODELS, sizes=SIZES, batch: int = 64, steps: int = 1,
                warmup: int = 1, rounds: int = 2, progress: bool = True) -> pd.DataFrame:
    """Training images/s per (model, size, channels_last); settings alternate per round."""
    from lib.progress import tqdm

    cells = [(m, s) for m in model_names for s in sizes]
    rows, cache = [], {}
    for name, size in tqdm(cells, desc="bench train", disable=not progress):
        per = {False: [], True: []}
        for r in range(rounds):
            for cl in ((False, True) if r % 2 == 0 else (True, False)):
                per[cl] += _step_times(name, size, cl, steps, warmup if r == 0 else 0, batch, cache)
        cache.pop((name, size))
        for cl, ts in per.items():
            best = min(ts)
            rows.append(dict(model=name, size=size, channels_last=cl, step_s=best,
                             median_step_s=statistics.median(ts), images_per_s=batch / best,
                             n_steps=len(ts)))
    return pd.DataFrame(rows)


def rate(name: str, size: int, channels: int, steps: int = 20, batch: int = 64,
         compile_model: bool = False, bf16: bool = False) -> float:
    """Training images/s of `steps` steps (after 3 warm-up steps) in this process, with the
    fit loop's CPU settings (channels_last as lib.training.train, optional torch.compile,
    optional bfloat16 autocast as the loop's `amp=True` does on a CPU)."""
    from lib import models
    from lib.training import train

    torch.manual_seed(0)
    model = models.create(name, 7, in_chans=channels, pretrained=False, img_size=size).train()
    cl = train.CPU_CHANNELS_LAST
    if cl:
        model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 7, (batch,), generator=g)
    for i in range(3 + steps):
        if i == 3:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = run(models.preprocess(x, model.fer_cfg, "cpu", channels_last=cl))
        out = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def _rate_procs(cell: str, threads: int, procs: int, steps: int, compile_model: bool) -> float:
    """Summed images/s of `procs` concurrent processes with `threads` threads each."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "lib.bench", "rate", cell, "--steps", str(steps)]
    cmd += ["--compile"] if compile_model else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    ps = [subprocess.Popen(cmd + ["--threads", str(threads)], env=env, stdout=subprocess.PIPE,
                           text=True) for _ in range(procs)]
    return sum(float(p.communicate()[0].split()[-1]) for p in ps)


def bench_jobs(cells, steps: int = 20, compile_model: bool = False) -> pd.DataFrame:
    """Per model cell ('name:size:channels'): total training images/s of one 2-thread
    process, of two 1-thread processes side by side, and of one 1-thread process alone."""
    rows = []
    for cell in cells:
        one2 = _rate_procs(cell, 2, 1, steps, compile_model)
        two1 = _rate_procs(cell, 1, 2, steps, compile_model)
        one1 = _rate_procs(cell, 1, 1, steps, compile_model)
        rows.append(dict(cell=cell, compile=compile_model, one_proc_2_threads=one2,
                         two_procs_1_thread=two1, one_proc_1_thread=one1,
                         side_by_side_ratio=two1 / one2))
    return pd.DataFrame(rows)


def bench_amp(cells, steps: int = 8, rounds: int = 2) -> pd.DataFrame:
    """Per model cell ('name:size:channels'), in this process: training images/s in float32
    and with bfloat16 autocast, alternating (fp32, bf16, bf16, fp32 ...), the fastest kept."""
    rows = []
    for cell in cells:
        name, size, ch = cell.split(":")
        best = {False: 0.0, True: 0.0}
        for r in range(rounds):
            for bf16 in ((False, True) if r % 2 == 0 else (True, False)):
                best[bf16] = max(best[bf16], rate(name, int(size), int(ch), steps, bf16=bf16))
        rows.append(dict(cell=cell, fp32_img_s=best[False], bf16_img_s=best[True],
                         bf16_speedup=best[True] / best[False]))
    return pd.DataFrame(rows)


def verdict(df: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Per (model, size): images/s both ways and the speed-up of channels_last; overall the
    geometric-mean speed-up."""
    wide = df.pivot_table(index=["model", "size"], columns="channels_last", values="images_per_s")
    wide.columns = ["off_img_s", "on_img_s"]
    wide["speedup_on"] = wide["on_img_s"] / wide["off_img_s"]
    wide["faster"] = wide["speedup_on"].map(lambda r: "on" if r > 1 else "off")
    overall = math.exp(wide["speedup_on"].map(math.log).mean())
    return wide.reset_index(), overall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lib.bench", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="training images/s, channels_last off vs on (CPU)")
    t.add_argument("--models", nargs="+", default=list(MODELS))
    t.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--steps", type=int, default=1, help="timed steps per setting and round")
    t.add_argument("--rounds", type=int, default=2, help="off/on alternations (ABBA...)")
    t.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    j = sub.add_parser("jobs", help="one 2-thread fit vs two 1-thread fits side by side")
    j.add_argument("--models", nargs="+", default=["small_cnn:48:1", "conv4net:48:1",
                                                   "mobilenet_v2:112:3"])
    j.add_argument("--steps", type=int, default=20)
    j.add_argument("--compile", action="store_true")
    r = sub.add_parser("rate", help="(internal) images/s of one cell in this process")
    r.add_argument("cell")
    r.add_argument("--steps", type=int, default=20)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--compile", action="store_true")
    a = sub.add_parser("amp", help="training images/s, float32 vs bfloat16 autocast (CPU)")
    a.add_argument("--models", nargs="+", default=["small_cnn:48:1", "conv4net:48:1",
                                                   "vgg_cnn:48:1", "mobilenet_v2:112:3",
                                                   "resnet18:112:3"])
    a.add_argument("--steps", type=int, default=8)
    a.add_argument("--threads", type=int, default=1)
    sub.add_parser("data", help="data loading benchmark (lib.data.bench)")
    args = ap.parse_args(argv)
    if args.cmd == "rate":
        torch.set_num_threads(args.threads)
        name, size, ch = args.cell.split(":")
        print(f"{rate(name, int(size), int(ch), args.steps, compile_model=args.compile):.1f}")
        return
    if args.cmd == "jobs":
        df = bench_jobs(args.models, args.steps, args.compile)
        print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        return
    if args.cmd == "amp":
        torch.set_num_threads(args.threads)
        df = bench_amp(args.models, args.steps)
        print(f"training throughput, batch 64, {args.threads} thread(s), fastest of 2 rounds")
        print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        return
    if args.cmd == "data":
        from lib.data.bench import run_data_bench  # a colleague's module: import only when asked

        run_data_bench()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    df = bench_train(args.models, args.sizes, args.batch, args.steps, rounds=args.rounds)
    wide, overall = verdict(df)
    print(f"\ntraining throughput, batch {args.batch}, 3 channels, {torch.get_num_threads()} "
          f"threads, fastest of {args.steps * args.rounds} steps per setting "
          f"({time.perf_counter() - t0:.0f} s total)")
    print(wide.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for m, grp in wide.groupby("model", sort=False):
        gm = math.exp(grp["speedup_on"].map(math.log).mean())
        print(f"{m}: channels_last {'on' if gm > 1 else 'off'} (geo-mean speed-up {gm:.2f}x)")
    print(f"overall: channels_last speed-up {overall:.2f}x -> CPU_CHANNELS_LAST = {overall > 1.05}"
          " (on only if > 5 % faster)")


if __name__ == "__main__":
    main()
