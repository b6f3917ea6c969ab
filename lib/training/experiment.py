"""One train-and-evaluate step shared by every notebook: build, fit, predict, score, row.

    runs = experiment.over_seeds("small_cnn", (train_ds, val_ds, test_ds), make_cfg, P.seeds,
                                 in_chans=P.channels, img_size=P.img_size, bootstrap=P.bootstrap)
    rows = experiment.rows(runs, experiment="baseline", variant="weighted_ce")

Model selection and early stopping use validation only; test is predicted once per run with
the selected checkpoint.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib import config, models
from lib.evaluation import metrics, results
from lib.training import train

SPLITS = ("val", "test")


@dataclass
class Run:
    """A trained model with its history, probabilities and reports per evaluated split."""

    name: str
    seed: int
    model: object
    history: pd.DataFrame
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    n_params: int | None = None  # a stored fit's count (its model may not be loaded)
    record: str | None = None  # the fit-store record it came from

    @property
    def params(self) -> int:
        return self.n_params if self.model is None else models.count_params(self.model)


def score(run: Run, datasets: dict, classes: Sequence[str], bootstrap: int = 0,
          tta: bool = False) -> Run:
    """Predict and evaluate `run.model` on each named dataset; results stored on the run."""
    for split, ds in datasets.items():
        probs = train.predict_proba(run.model, ds, tta=tta)
        y = ds.labels.numpy()
        run.probs[split], run.labels[split] = probs, y
        run.reports[split] = metrics.evaluate(y, probs, list(classes), bootstrap=bootstrap,
                                              seed=run.seed)
    return run


def train_eval(name: str, data: tuple, cfg: train.Config, *, in_chans: int, img_size: int | None = None,
               pretrained: bool = False, model_kw: dict | None = None, bootstrap: int = 0,
               tta: bool = False, evaluate: Sequence[str] = SPLITS) -> Run:
    """Seed, build `name`, fit on data[0] with early stopping on data[1], score the splits."""
    train_ds, val_ds, test_ds = data
    config.seed_everything(cfg.seed)
    kw = dict(model_kw or {})
    if img_size is not None:
        kw.setdefault("img_size", img_size)
    model = models.create(name, len(train_ds.classes), in_chans=in_chans, pretrained=pretrained, **kw)
    history = train.fit(model, train_ds, val_ds, cfg)
    run = Run(name, cfg.seed, model, history)
    named = {"val": val_ds, "test": test_ds}
    return score(run, {s: named[s] for s in evaluate}, train_ds.classes, bootstrap, tta)


def over_seeds(name: str, data: tuple, make_cfg: Callable[[int], train.Config], seeds: Sequence[int],
               **kw) -> list[Run]:
    """train_eval once per seed, `make_cfg(seed)` giving each run's config."""
    return [train_eval(name, data, make_cfg(seed), **kw) for seed in seeds]


def rows(runs: Sequence[Run], experiment: str, variant: str = "-", model: str | None = None,
         per_class: bool = True, **fields) -> list[dict]:
    """Result rows (one per run and evaluated split) for results.record."""
    out = []
    for r in runs:
        h = r.history.attrs
        for split, rep in r.reports.items():
            out.append(results.row(
                rep, per_class=per_class, experiment=experiment, variant=variant,
                model=model or r.name, params=r.params, seed=r.seed, split=split,
                train_seconds=h.get("train_seconds"), epochs=h.get("best_epoch"), **fields))
    return out


def per_class(runs: Sequence[Run], split: str = "test", **labels) -> pd.DataFrame:
    """Per-class precision/recall/F1 of each run, long format, with the given label columns."""
    frames = [r.reports[split]["per_class"].assign(seed=r.seed, **labels) for r in runs]
    return pd.concat(frames, ignore_index=True)


def predictions(runs: Sequence[Run], split: str = "test") -> np.ndarray:
    """Predicted class per run (rows) and item (columns), for McNemar / paired tests."""
    return np.stack([r.probs[split].argmax(1) for r in runs])


def compare(a: Sequence[Run], b: Sequence[Run], split: str = "test",
            metric: str = "macro_f1") -> dict:
    """A vs B: paired test over seeds on `metric`, and McNemar on the first seed's predictions."""
    va = [r.reports[split][metric] for r in a]
    vb = [r.reports[split][metric] for r in b]
    out = {"a_mean": float(np.mean(va)), "b_mean": float(np.mean(vb))}
    out.update({f"seeds_{k}": v for k, v in metrics.paired_test(va, vb).items()})
    y = a[0].labels[split]
    mc = metrics.mcnemar(y, a[0].probs[split].argmax(1), b[0].probs[split].argmax(1))
    out.update({f"mcnemar_{k}": v for k, v in mc.items()})
    return out


def _by_seed(runs: Sequence[Run]) -> dict[int, Run]:
    return {r.seed: r for r in runs}


def compare_table(pairs: Mapping[str, tuple[Sequence[Run], Sequence[Run]]], split: str = "test",
                  metric: str = "macro_f1", bootstrap: int = 1000, alpha: float = 0.05) -> pd.DataFrame:
    """One row per named "A vs B" (runs matched by seed): the paired test over the shared
    seeds, McNemar and a paired bootstrap of the metric difference on the first shared seed.

    `primary_p` is the seeds test when >= 2 seeds are shared, else the paired bootstrap (the
    same metric on the one seed); `verdict` reads it at `alpha` and names the better side
    (the parts of the name around " vs ", else A / B). McNemar (accuracy) is reported beside
    it, never used for the verdict.
    """
    out = []
    for name, (a, b) in pairs.items():
        ra, rb = _by_seed(a), _by_seed(b)
        seeds = [s for s in ra if s in rb]
        if not seeds:
            raise ValueError(f"{name}: A and B share no seed ({sorted(ra)} vs {sorted(rb)})")
        res = compare([ra[s] for s in seeds], [rb[s] for s in seeds], split, metric)
        first_a, first_b = ra[seeds[0]], rb[seeds[0]]
        y = first_a.labels[split]
        boot = metrics.paired_bootstrap(y, first_a.probs[split].argmax(1),
                                        first_b.probs[split].argmax(1), metric, n=bootstrap,
                                        seed=seeds[0], num_classes=first_a.probs[split].shape[1])
        p = res["seeds_p_value"] if len(seeds) >= 2 else boot["p"]
        diff = res["a_mean"] - res["b_mean"]
        a_name, b_name = name.split(" vs ", 1) if " vs " in name else ("A", "B")
        verdict = ("no evidence of a difference" if not p < alpha
                   else f"{a_name if diff > 0 else b_name} better")
        out.append({"comparison": name, "seeds": len(seeds), f"A_{metric}": res["a_mean"],
                    f"B_{metric}": res["b_mean"], "diff": diff, "seeds_p": res["seeds_p_value"],
                    "boot_delta": boot["delta"], "boot_lo": boot["lo"], "boot_hi": boot["hi"],
                    "boot_p": boot["p"], "mcnemar_b": res["mcnemar_b"],
                    "mcnemar_c": res["mcnemar_c"], "mcnemar_p": res["mcnemar_p"],
                    "primary_p": p, "verdict": verdict})
    return pd.DataFrame(out)


def per_class_ci(runs: Sequence[Run], split: str = "test", n: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Per-class precision/recall/F1 averaged over runs (seeds), each with a bootstrap interval
    over the items (every run scored on the same resampled items, so the interval is the
    test-sampling uncertainty of the seed-averaged value). Absent classes score 0."""
    y = runs[0].labels[split]
    k = runs[0].probs[split].shape[1]
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n, len(y)))
    full = [metrics.from_confusion(metrics.confusion_batch(y, r.probs[split].argmax(1), k))
            for r in runs]
    boot = [metrics.from_confusion(metrics.confusion_batch(y, r.probs[split].argmax(1), k, idx))
            for r in runs]
    out = pd.DataFrame({"class": runs[0].reports[split]["classes"],
                        "support": np.bincount(y, minlength=k)})
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    for m in ("precision", "recall", "f1"):
        out[m] = np.mean([f[m][0] for f in full], axis=0)
        out[f"{m}_lo"], out[f"{m}_hi"] = np.percentile(np.mean([b[m] for b in boot], axis=0), q,
                                                       axis=0)
    return out


def history_summary(runs: Sequence[Run], **labels) -> pd.DataFrame:
    """One row per run: epochs run, best epoch, and train/val loss at the best epoch and at the
    last one; `gap` = val - train loss at the last epoch (over-fitting shows as a growing gap)."""
    rows = []
    for r in runs:
        h = r.history
        best = h[h["epoch"] == r.history.attrs.get("best_epoch", h["epoch"].iloc[-1])]
        best = best.iloc[0] if len(best) else h.iloc[-1]
        last = h.iloc[-1]
        rows.append({**labels, "seed": r.seed, "epochs_run": len(h), "best_epoch": int(best["epoch"]),
                     "train_loss_best": best["train_loss"], "val_loss_best": best["val_loss"],
                     "train_loss_last": last["train_loss"], "val_loss_last": last["val_loss"],
                     "min_val_loss": h["val_loss"].min(),
                     "gap": last["val_loss"] - last["train_loss"]})
    return pd.DataFrame(rows)


def confused_pairs(confusion, classes: Sequence[str]) -> pd.DataFrame:
    """Every unordered class pair with its confusion counts both ways (rows of `confusion` are
    true classes) and `rate`: the mean of the two row-normalised rates (share of a's items
    predicted b, and of b's predicted a; 0 for a class without items). Most confused first."""
    cm = np.asarray(confusion, dtype=float)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    out = [{"a": classes[i], "b": classes[j], "a_as_b": int(cm[i, j]), "b_as_a": int(cm[j, i]),
            "rate": (rates[i, j] + rates[j, i]) / 2}
           for i in range(len(classes)) for j in range(i + 1, len(classes))]
    df = pd.DataFrame(out, columns=["a", "b", "a_as_b", "b_as_a", "rate"])
    return df.sort_values("rate", ascending=False, kind="stable").reset_index(drop=True)
