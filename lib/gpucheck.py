"""The gpu path's one prepared check: short fer2013 fits with the gpu profile's recipe, AMP and
channels_last on (as `lib.training.train` sets them on CUDA) against both off, with images/s,
peak memory and the scores reached. It runs the same code on a CPU (slowly; the tests do, on
a few images), so a session lent a GPU machine spends its minutes measuring, not debugging.

    python -m lib.gpucheck compact --out .devdata [--train-images 8000]   # here: a data copy
    python -m lib.gpucheck run [--train-images 6000] [--epochs 3] [--out DIR]

`.ci/gpu_check` wraps both for the device machine (which has no internet and no ../shared).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

# the 48 px gray headline net, a 224 px RGB backbone, and DDAMFN with SAM (study 001; about
# 66 h a fer2013 fit on one CPU thread, so a GPU's rate decides where it can be planned)
MODELS = ("vgg_cnn", "resnet18", "ddamfn")


def compact(src: Path, out: Path, train_images: int, seed: int = 0) -> dict:
    """Copy FER2013 (image-folder layout) to out/fer2013: every test image (PublicTest is the
    validation split, PrivateTest the test split) and a class-stratified sample of about
    `train_images` training images, files unchanged. Returns the counts copied."""
    from lib.training.subsets import stratified_index

    src, dst = Path(src), Path(out) / "fer2013"
    train = sorted(p for p in (src / "train").glob("*/*") if p.is_file())
    test = sorted(p for p in (src / "test").glob("*/*") if p.is_file())
    if not train or not test:
        raise FileNotFoundError(f"{src}: no train/<class>/ or test/<class>/ images (FER2013's "
                                "image-folder layout)")
    keep = [train[i] for i in stratified_index([p.parent.name for p in train], train_images, seed)]
    for p in keep + test:
        q = dst / p.relative_to(src)
        q.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, q)
    return {"train": len(keep), "test": len(test), "bytes": sum(p.stat().st_size for p in keep + test)}


def _fit_once(spec, data: tuple, epochs: int, fast: bool) -> dict:
    """One fit of `spec` on data; fast = AMP and channels_last as the loop picks them on this
    device ('auto'), else both off. images_per_s: training images per second of epoch wall
    time, validation included (as the store's images_per_s), the first epoch left out when
    there are more; eval_images_per_s: predicting the test split."""
    from lib import config, models
    from lib.evaluation import metrics
    from lib.training import train

    tr, va, te = data
    dev = config.device()
    cfg = spec.config(epochs=epochs, patience=None, progress=False, desc=spec.model,
                      **({} if fast else {"amp": False, "channels_last": False}))
    config.seed_everything(spec.seed)
    model = models.create(spec.model, len(tr.classes), in_chans=spec.channels, pretrained=False,
                          img_size=spec.img_size)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    hist = train.fit(model, tr, va, cfg)
    wall = time.perf_counter() - t0
    per_epoch = hist["seconds"].to_numpy(dtype=float)
    steady = per_epoch[1:] if len(per_epoch) > 1 else per_epoch
    t1 = time.perf_counter()
    probs = train.predict_proba(model, te)
    eval_s = time.perf_counter() - t1
    rep = metrics.evaluate(te.labels.numpy(), probs, list(te.classes))
    return {"model": spec.model, "input": f"{spec.img_size}px x{spec.channels}",
            "mode": "amp+channels_last" if fast else "fp32", "device": hist.attrs["device"],
            "amp": bool(hist.attrs["amp"]), "channels_last": bool(hist.attrs["channels_last"]),
            "epochs": int(hist.attrs["epochs_run"]), "n_train": len(tr), "wall_s": wall,
            "images_per_s": len(tr) / float(np.median(steady)), "eval_images_per_s": len(te) / eval_s,
            "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else np.nan,
            "val_macro_f1": float(hist.attrs["best_val_macro_f1"]),
            "test_macro_f1": rep["macro_f1"], "test_accuracy": rep["accuracy"]}


def run(dataset: str = "fer2013", train_images: int = 6000, epochs: int = 3,
        model_names=MODELS, profile: str = "gpu") -> pd.DataFrame:
    """Per model: a fit of `epochs` epochs with AMP + channels_last as on CUDA, and a
    1-epoch fit with both off (for the speed ratio), on a stratified training subset."""
    from lib import config, data
    from lib.training import plan, store

    P = config.get_profile(profile)
    splits = data.load_splits(dataset, seed=0)
    rows = []
    for m in model_names:
        changes = plan.ENSEMBLE_NEW.get(m, {})  # DDAMFN's SAM and diversity loss, as planned
        spec = replace(plan._specs(P, dataset, m, (0,), changes=changes)[0], pretrained=False,  # offline there
                       subset=f"stratified:{train_images}")
        d = store.prepare(spec, splits)
        fast = _fit_once(spec, d, epochs, True)
        slow = _fit_once(spec, d, min(epochs, 2), False)
        fast["speedup_vs_fp32"] = fast["images_per_s"] / slow["images_per_s"]
        rows += [fast, slow]
    return pd.DataFrame(rows)


def environment() -> dict:
    """What the check ran on."""
    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info.update(gpu=torch.cuda.get_device_name(0), capability=torch.cuda.get_device_capability(0),
                    bf16=torch.cuda.is_bf16_supported(),
                    memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    return info


def main(argv: list[str] | None = None) -> int:
    from lib import data

    ap = argparse.ArgumentParser(prog="python -m lib.gpucheck", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compact", help="copy a compact FER2013 slice (for the device machine)")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--train-images", type=int, default=8000)
    r = sub.add_parser("run", help="short fits, AMP + channels_last vs fp32")
    r.add_argument("--dataset", default="fer2013")
    r.add_argument("--train-images", type=int, default=6000)
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--models", nargs="+", default=list(MODELS))
    r.add_argument("--out", type=Path, default=None, help="folder for gpucheck.csv/.json")
    args = ap.parse_args(argv)

    def body() -> int:
        if args.cmd == "compact":
            n = compact(data.resolve("fer2013"), args.out, args.train_images)
            print(f"compact fer2013 -> {args.out}: {n['train']:,} train + {n['test']:,} test "
                  f"images, {n['bytes'] / 2**20:.1f} MiB")
            return 0
        env = environment()
        print(json.dumps(env))
        df = run(args.dataset, args.train_images, args.epochs, args.models)
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if args.out:
            from lib.atomic import write_text

            args.out.mkdir(parents=True, exist_ok=True)
            write_text(args.out / "gpucheck.csv", df.to_csv(index=False))
            write_text(args.out / "gpucheck.json", json.dumps(
                {"environment": env, "rows": df.to_dict(orient="records")}, indent=1, default=float))
        return 0

    return data.run_cli(body, debug=False)


if __name__ == "__main__":
    raise SystemExit(main())
