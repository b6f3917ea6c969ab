"""One train-and-evaluate step shared by every notebook: build, fit, predict, score, row.

    runs = experiment.over_seeds("small_cnn", (train_ds, val_ds, test_ds), make_cfg, P.seeds,
                                 in_chans=P.channels, img_size=P.img_size, bootstrap=P.bootstrap)
    rows = experiment.rows(runs, experiment="baseline", variant="weighted_ce")

Model selection and early stopping use validation only; test is predicted once per run with
the selected checkpoint.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib import config, metrics, models, results, train

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

    @property
    def params(self) -> int:
        return models.count_params(self.model)


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
