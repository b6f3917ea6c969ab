"""05's steps over stored fits: every other dataset's test split scored by this dataset's
models (their probabilities kept in the fit records, so a re-render needs no checkpoint),
flip TTA, AdaBN and few-shot fine-tuning on one target, and the shift between contributors.

    T, skipped = shift.targets(DATASET, splits.classes, spec)      # {name: test ImageTensors}
    cross, same, rows = shift.cross(runs, test_ds, T, classes, bootstrap)
    ev = shift.adapted(c4_runs, "fer2013", t_train, t_test, classes, bootstrap)
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from lib.analysis import adaptation, domain
from lib.data import labels
from lib.training import experiment, store, train


def targets(dataset: str, classes: Sequence[str], spec, max_per_class: int | None = None,
            seed: int = 0) -> tuple[dict, dict[str, str]]:
    """({name: test split at the spec's input}, {name: why skipped}) for every other named
    dataset under the data root that shares a class with `dataset` (whose classes are given)."""
    present, skipped = domain.present_datasets(exclude=dataset)
    out = {}
    for name in present:
        try:
            t = domain.load_target(name, spec.img_size, spec.channels, max_per_class, seed)["test"]
        except (ValueError, labels.UnknownLabelError) as e:  # e.g. an empty split
            skipped[name] = f"{type(e).__name__}: {e}"
            continue
        if domain.shared_classes(classes, t.classes):
            out[name] = t
        else:
            skipped[name] = f"no class in common with {dataset}"
    return out, skipped


def scored(runs: Sequence, name: str, ds, classes: Sequence[str], bootstrap: int = 0,
           tag: str = "test", predict: Callable | None = None, only: Sequence[str] | None = None
           ) -> list:
    """CrossEval per run on `ds` (dataset `name`) over the shared classes; the probabilities
    are kept in each run's record as '<name>_<tag>' (computed once, by `predict`)."""
    out = []
    for r in runs:
        fn = predict(r) if predict else None
        p = store.extra_probs(r, f"{name}_{tag}", ds, fn)
        out.append(domain.score_probs(p, classes, ds, bootstrap, r.seed, classes=only))
    return out


def cross(runs: Sequence, test_ds, targets: Mapping, classes: Sequence[str], bootstrap: int = 0
          ) -> tuple[dict, dict, list[dict]]:
    """(zero-shot CrossEvals per target, in-domain CrossEvals over each target's shared
    classes, result rows: in_domain, zero_shot, in_domain_shared)."""
    xs = {n: scored(runs, n, t, classes, bootstrap) for n, t in targets.items()}
    same = {n: [domain.score_probs(r.probs["test"], classes, test_ds, bootstrap, r.seed,
                                   classes=xs[n][0].shared) for r in runs] for n in targets}
    rows = experiment.rows(runs, experiment="cross_dataset", variant="in_domain",
                           eval_dataset=ins_name(test_ds), shared_with="-",
                           n_classes=len(classes), n_excluded=0)
    for n in targets:
        for r, out, ins in zip(runs, xs[n], same[n]):
            common = dict(experiment="cross_dataset", model=r.name, params=r.params, seed=r.seed,
                          split="test")
            rows.append(domain.row(out, variant="zero_shot", eval_dataset=n, shared_with="-", **common))
            rows.append(domain.row(ins, variant="in_domain_shared", eval_dataset=ins_name(test_ds),
                                   shared_with=n, **common))
    return xs, same, rows


def ins_name(ds) -> str:
    """The dataset an ImageTensors came from (its manifest's `dataset` column)."""
    return str(ds.rows["dataset"].iloc[0]) if "dataset" in ds.rows and len(ds.rows) else "-"


def adapted(runs: Sequence, target: str, t_train, t_test, classes: Sequence[str],
            bootstrap: int = 0) -> dict:
    """{variant: [CrossEval per run]} on the target's test split: zero_shot, tta_flip, adabn
    (BatchNorm statistics re-estimated on the target's unlabelled train images) and
    adabn_tta_flip."""
    def tta(_run):
        return lambda m, ds: train.predict_proba(m, ds, tta=True)

    def adabn(flip: bool):
        return lambda run: (lambda m, ds: train.predict_proba(
            adaptation.adabn(m, t_train, seed=run.seed), ds, tta=flip))
    how = {"zero_shot": None, "tta_flip": tta, "adabn": adabn(False), "adabn_tta_flip": adabn(True)}
    return {v: scored(runs, target, t_test, classes, bootstrap, ADAPT_TAGS[v], how[v]) for v in how}


ADAPT_TAGS = {"zero_shot": "test", "tta_flip": "test_tta", "adabn": "test_adabn",
              "adabn_tta_flip": "test_adabn_tta"}  # record keys '<target>_<tag>'


def fewshot_key(target: str, mode: str, k: int) -> str:
    return f"{target}_fewshot_{mode}_k{k}"


def adaptation_keys(target: str, ks: Sequence[int]) -> list[str]:
    """The probability sets `adapted` and `few_shot` keep in a run's record for one target."""
    return ([f"{target}_{t}" for t in ADAPT_TAGS.values()]
            + [fewshot_key(target, m, k) for k in ks for m in adaptation.MODES])


def few_shot(runs: Sequence, target: str, t_train, t_val, t_test, classes: Sequence[str],
             ks: Sequence[int], make_cfg: Callable, bootstrap: int = 0) -> list[dict]:
    """adaptation.few_shot for every run x k x mode, scored on the target's test split over
    the shared classes; each fine-tuned model's test probabilities are kept in the source
    run's record ('<target>_fewshot_<mode>_k<k>'). One dict per fit: seed, k, mode, eval."""
    shared = domain.shared_classes(classes, t_train.classes)
    out = []
    for r in runs:
        for k in ks:
            for mode in adaptation.MODES:
                def tune(m, ds, k=k, mode=mode, seed=r.seed):
                    net = adaptation.few_shot(m, classes, t_train, t_val, k, mode, make_cfg(k, mode), seed)[0]
                    return train.predict_proba(net, ds)
                p = store.extra_probs(r, fewshot_key(target, mode, k), t_test, tune)
                ev = domain.score_probs(p, shared, t_test, bootstrap, r.seed)
                out.append({"seed": r.seed, "k": k, "mode": mode, "eval": ev})
    return out


def mean_f1(evals: Sequence) -> float:
    return float(np.mean([e.report["macro_f1"] for e in evals])) if len(evals) else float("nan")


def contributor(splits) -> str | None:
    """The contributor 05 trains on alone (lib.training.plan.main_contributor), or None."""
    from lib.training import plan

    return plan.main_contributor(splits)


def contributor_sets(splits, who: str, spec) -> dict:
    """{'own', 'others', 'contributor X' ...: test ImageTensors at the spec's input}."""
    from lib import data

    test = splits["test"]
    src = test["source"].astype(str)
    frames = {"own": test[src == who], "others": test[src != who],
              **{f"contributor {c}": g for c, g in test[src != who].groupby(src[src != who])}}
    return {n: data.ImageTensors(f, spec.img_size, spec.channels, classes=splits.classes)
            for n, f in frames.items() if len(f)}


def contributor_specs(P, dataset: str, splits) -> list:
    """The plan's contributor arm: 01's SmallCNN specs (every seed) on one contributor's rows."""
    from lib.training import plan

    return [s for a in plan.contributor_arms(P, dataset, splits) for s in a.specs]


def finetune_config(P, n_shared: int) -> Callable[[int, str], train.Config]:
    """make_cfg(k, mode) for few_shot: epochs from the profile for k x n_shared images; the
    head alone at lr 1e-3, the whole network at 3e-4."""
    return lambda k, mode: train.Config(epochs=P.epochs_for(k * n_shared), lr=1e-3 if mode == "head" else 3e-4,
                                        weight_decay=1e-4, label_smoothing=0.05, patience=P.patience,
                                        batch_size=P.batch_size, progress=False)


def eval_rows(evals: Mapping[str, Sequence], runs: Sequence, experiment_name: str, target: str,
              **fields) -> list[dict]:
    """Result rows of {variant: [CrossEval per run]} (runs give model, params and seeds)."""
    return [domain.row(ev, experiment=experiment_name, variant=v, model=r.name, params=r.params,
                       seed=r.seed, split="test", eval_dataset=target, **fields)
            for v, evs in evals.items() for ev, r in zip(evs, runs)]


def versus(evals: Mapping[str, Sequence], ref: str = "zero_shot") -> pd.DataFrame:
    """Each variant against `ref` on the same images: mean macro-F1 both sides, paired t-test
    over seeds, McNemar on the first seed."""
    cols = ["variant", "a_mean", "b_mean", "seeds_mean_diff", "seeds_p_value", "mcnemar_p"]
    return pd.DataFrame([{"variant": v, **domain.compare(e, evals[ref])} for v, e in evals.items()
                         if v != ref and len(e) == len(evals[ref])], columns=cols)


def few_shot_table(sweep: list[dict], zero_shot: Sequence) -> pd.DataFrame:
    """Per (k, mode): mean macro-F1 over seeds against the same models zero-shot."""
    groups = {}
    for s in sweep:
        groups.setdefault((s["k"], s["mode"]), []).append(s["eval"])
    return pd.DataFrame([{"k": k, "mode": m, **domain.compare(e, zero_shot)} for (k, m), e in groups.items()
                         if len(e) == len(zero_shot)])


def peer(runs: Sequence, sets: Mapping, classes: Sequence[str], bootstrap: int = 0) -> tuple[list, pd.DataFrame]:
    """The outside `fer` peer and our runs on each eval set over the classes all share:
    (result rows, one comparison line per set). Empty when the peer is not installed."""
    from lib.analysis import peer as fer_peer

    if not fer_peer.available():
        print(f"outside peer not installed: skipped {len(sets)} set(s). Install: {fer_peer.INSTALL}")
        return [], pd.DataFrame()
    rows, table = [], []
    for name, ds in sets.items():
        try:
            pe = fer_peer.evaluate(ds, classes=classes, bootstrap=bootstrap)
        except ValueError as e:  # no class in common with the peer
            print(f"peer on {name}: skipped ({e})")
            continue
        ours = scored(runs, name, ds, classes, bootstrap, only=pe.shared)
        rows.append(domain.row(pe, experiment="peer", variant="reference", model=fer_peer.NAME,
                               seed=0, split="test", eval_dataset=name))
        rows += eval_rows({"same_classes": ours}, runs, "peer", name)
        table.append({"eval_dataset": name, "classes": ", ".join(pe.shared), "n": len(pe.labels),
                      **domain.compare([pe] * len(ours), ours)})
    return rows, pd.DataFrame(table)
