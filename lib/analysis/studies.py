"""The notebooks' loops over arms, seeds and baselines, as plain functions over the plan
and the fit store, so a notebook cell is one call and a table.

    arms = studies.fits(P, DATASET, splits, "03_capacity")      # {arm name: [Run, ...]}
    rows = studies.arm_rows(arms, experiment="capacity")
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lib.analysis.arms import arm_id
from lib.models import classical
from lib import data
from lib.training import experiment, plan, store
from lib.evaluation import metrics, results


def fits(P, dataset: str, splits, notebook: str, names: tuple[str, ...] | None = None,
         section: str | None = None) -> dict:
    """{arm name: runs} for a notebook's arms in the plan, from the store (training what is
    missing unless FER_STORE_TRAIN=0; then an arm keeps only its stored seeds, and an arm
    without any is left out and listed by `missing`)."""
    out = {}
    for a in plan.arms_of(P, dataset, notebook, splits):
        if (names and a.name not in names) or (section and a.section != section):
            continue
        runs = []
        for spec in a.specs:
            try:
                runs.append(store.fit(spec, splits, P.name, P.bootstrap))
            except store.MissingFit:
                continue
        if runs:
            out[a.name] = runs
    return out


def plan_table(P, dataset: str, notebook: str, section: str | None = None) -> pd.DataFrame:
    """The planned arms of a notebook (or one section): seeds, input, augmentation, lr, why."""
    return pd.DataFrame([
        {"arm": a.name, "model": a.specs[0].model, "seeds": len(a.specs),
         "input": f"{a.specs[0].img_size} px x{a.specs[0].channels}",
         "augment": a.specs[0].recipe.get("augment", "none"), "lr": a.specs[0].recipe["lr"],
         "subset": a.specs[0].subset, "why": a.note}
        for a in plan.arms_of(P, dataset, notebook) if section is None or a.section == section])


def missing(P, dataset: str, splits, notebook: str, section: str | None = None) -> pd.DataFrame:
    """The planned fits of a notebook (or one section) not in the store (arm, model, seed)."""
    rows = [{"arm": a.name, "model": s.model, "seed": s.seed}
            for a in plan.arms_of(P, dataset, notebook, splits) for s in a.specs
            if (section is None or a.section == section) and not store.has(s, splits, P.name)]
    return pd.DataFrame(rows, columns=["arm", "model", "seed"])


def variant(run: experiment.Run) -> str:
    """'imagenet_shift', 'scratch_none', ...: the initialisation and augmentation of a fit."""
    spec = store.meta_of(run.record)["spec"] if run.record else {}
    init = spec["init"]["dataset"] if spec.get("init") else \
        "imagenet" if spec.get("pretrained") else "scratch"
    return f"{init}_{spec.get('recipe', {}).get('augment', '-')}"


def model_label(arm_name: str, run: experiment.Run) -> str:
    """The model column of a run: its model, plus '@<px>' for an arm named after the input
    size it trains at ('03.mobilenet_v2@160'), '@<n>ep' for one named after its epoch cap
    ('03.vgg_cnn@40ep'), '+<dataset>' for a fit started from another dataset's fit
    ('vgg_cnn+fer2013') and the arm's suffix for a recipe variant named after its model
    ('vgg_cnn_erase@40ep'), so two sizes, caps, starts or recipes of one model stay apart."""
    if not run.record:
        return run.name
    spec = store.meta_of(run.record)["spec"]  # one read of the record
    if spec.get("init"):
        return f"{run.name}+{spec['init']['dataset']}"
    head, at, tag = arm_name.partition("@")
    head = arm_id(head)  # '03.vgg_cnn_erase' -> 'vgg_cnn_erase'
    name = head if head.startswith(run.name + "_") else run.name
    n, is_epochs = (tag[:-2], True) if tag.endswith("ep") else (tag, False)
    held = spec["recipe"]["epochs"] if is_epochs else spec["img_size"]
    return f"{name}@{tag}" if at and n.isdigit() and held == int(n) else name


def arm_rows(arms: dict, experiment_name: str) -> list[dict]:
    """Result rows of every run of every arm (val and test), the arm's variant named."""
    rows = []
    for name, runs in arms.items():
        rows += experiment.rows(runs, experiment=experiment_name, variant=variant(runs[0]),
                                model=model_label(name, runs[0]))
    return rows


CLASSICAL_VERSION = 1  # bump when a classical baseline's code changes its output


def classical_probs(name: str, make, data: tuple, cache: tuple[str, str] | None = None) -> dict:
    """{'val', 'test': probabilities} of a classical baseline fitted on data[0] (and 'k', the
    k a validation-chosen kNN chose); with `cache` = (profile, dataset) they are kept beside
    the fit store's records (keyed by the data rows, labels and decoded shape), so a
    re-render does not refit kNN or HOG."""
    import hashlib
    import io

    from lib.atomic import write_bytes

    path = None
    if cache:
        blob = f"{name}|{store.data_hash(data)}|{tuple(data[0].images.shape[1:])}|{CLASSICAL_VERSION}"
        path = store.root() / cache[0] / cache[1] / "classical" / \
            f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    clf = make().fit(data[0])
    probs = {split: clf.predict_proba(ds) for split, ds in (("val", data[1]), ("test", data[2]))}
    if hasattr(clf, "k_"):
        probs["k"] = np.array(clf.k_)
    if path is not None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **probs)
        write_bytes(path, buf.getvalue())
    return probs


def classical_rows(data: tuple, classes, bootstrap: int,
                   which: tuple[str, ...] = ("knn_pixels_k_by_val", "hog_linear"),
                   cache: tuple[str, str] | None = None) -> list[dict]:
    """kNN on standardised pixels (k chosen on validation from classical.KS, or k = 101 as
    study 003) and HOG + a linear classifier, each fitted once on train (deterministic given
    the split) and scored on val and test; `cache` = (profile, dataset) keeps their
    probabilities (see classical_probs)."""
    make = {"knn_pixels_k101": lambda: classical.KNNPixels(k=101),
            "knn_pixels_k_by_val": lambda: classical.KNNChosenK(data[1]),
            "hog_linear": classical.HOGLinear}
    rows = []
    for name in which:
        probs = classical_probs(name, make[name], data, cache)
        note = f"k = {int(probs['k'])}, chosen on validation" if "k" in probs else ""
        for split, ds in (("val", data[1]), ("test", data[2])):
            rep = metrics.evaluate(ds.labels.numpy(), probs[split], classes, bootstrap=bootstrap, seed=0)
            rows.append(results.row(rep, experiment="classical", model=name, variant="-",
                                    seed=0, split=split, notes=note))
    return rows


def chance(train_labels, test_labels, classes, bootstrap: int, seed: int = 0) -> pd.DataFrame:
    """00_eda's chance rows on this test split: always the majority class, and guessing with
    the training prior (its bootstrap interval is the chance interval a model must clear)."""
    k = len(classes)
    prior = np.bincount(np.asarray(train_labels), minlength=k) / len(train_labels)
    y = np.asarray(test_labels)
    guess = np.random.default_rng(seed).choice(k, len(y), p=prior)
    rows = []
    for name, pred in (("majority", np.full(len(y), int(prior.argmax()))), ("prior_guess", guess)):
        rep = metrics.evaluate(y, np.eye(k)[pred], list(classes), bootstrap=bootstrap, seed=seed)
        rows.append(results.row(rep, experiment="chance", model=name, variant="-", seed=seed,
                                split="test"))
    return pd.DataFrame(rows)


def summary(rows, split: str = "test", by=("experiment", "model")) -> pd.DataFrame:
    """Mean, std and n over seeds per group, with 'mean ± std' strings for the main metrics."""
    df = results.frame(rows)
    df = df[df["split"] == split]
    out = metrics.aggregate(df, by=list(by), metrics=("accuracy", "balanced_accuracy", "macro_f1"))
    for m in ("macro_f1", "balanced_accuracy", "accuracy"):
        out[m] = metrics.fmt_mean_std(out, m)
    return out


def _compare(arms: dict, pairs: list[tuple[str, str]], split: str, bootstrap: int) -> pd.DataFrame:
    """experiment.compare_table of (arm, reference arm) name pairs, runs matched by seed."""
    table = {f"{a.split('.', 1)[-1]} vs {b.split('.', 1)[-1]}": (arms[a], arms[b])
             for a, b in pairs if arms.get(a) and arms.get(b)}
    return experiment.compare_table(table, split=split, bootstrap=bootstrap) if table else \
        pd.DataFrame()


def versus(arms: dict, ref: str, split: str = "test", bootstrap: int = 1000) -> pd.DataFrame:
    """Every arm against the reference arm (runs matched by seed): experiment.compare_table."""
    return _compare(arms, [(name, ref) for name in arms if name != ref], split, bootstrap)


def base_arm(name: str, names) -> str | None:
    """The plain arm of the same model that a variant arm changes one thing of:
    '03.mobilenet_v2' for '03.mobilenet_v2@160' (input size), '03.vgg_cnn' for
    '03.vgg_cnn@40ep' (epoch cap) and for '03.vgg_cnn_from_fer2013' (initialisation),
    '03.vgg_cnn@40ep' for '03.vgg_cnn_erase@40ep' (augmentation, same cap; the plain
    '03.vgg_cnn' where that arm is absent); None when there is no such arm among `names`."""
    head, at, cap = name.partition("@")
    plain = head.split("_from_")[0].removesuffix("_erase")
    # the same cap or size first, so a changed augmentation is compared with one thing changed
    return next((c for c in (plain + at + cap, plain) if c != name and c in names), None)


def versus_base(arms: dict, split: str = "test", bootstrap: int = 1000) -> pd.DataFrame:
    """Every variant arm against its plain arm (`base_arm`), runs matched by seed."""
    pairs = [(name, base) for name in arms if (base := base_arm(name, arms))]
    return _compare(arms, pairs, split, bootstrap)


def official_test(splits, size: int, channels: int):
    """Every image of the dataset's own test split (fer2013's 3,589 PrivateTest images, the
    number the literature reports), duplicates of training images included; None when the
    dataset has no official split."""
    m = splits.manifest
    if "orig_split" not in m or not m["orig_split"].eq("test").any():
        return None
    rows = m[m["orig_split"].eq("test") & m["label"].notna() & m["decodable"].astype(bool)]
    rows = rows[rows["label"].isin(splits.classes)].reset_index(drop=True)
    return data.ImageTensors(rows, size=size, channels=channels, classes=splits.classes)


TTA = "+flip_tta"  # the variant suffix of a fit scored with flip test-time augmentation


def tta_rows(arms: dict, splits, experiment_name: str, bootstrap: int) -> list[dict]:
    """Rows of every run scored with flip test-time augmentation (the mean of an image's and
    its mirror's probabilities, kept in each record), as variant '<variant>+flip_tta' on val
    and test: an inference choice that, like any arm, is chosen on validation or not."""
    rows = []
    for arm_name, runs in arms.items():
        for run in runs:
            h = run.history.attrs
            for split in ("val", "test"):
                rep = metrics.evaluate(run.labels[split], run.probs[f"{split}_tta"],
                                       list(splits.classes), bootstrap=bootstrap, seed=run.seed)
                rows.append(results.row(rep, per_class=True, experiment=experiment_name,
                                        variant=variant(run) + TTA, model=model_label(arm_name, run),
                                        params=run.params, seed=run.seed, split=split,
                                        train_seconds=h.get("train_seconds"), epochs=h.get("best_epoch")))
    return rows


def attach_official(arms: dict, splits, tta: bool = False, bootstrap: int = 0) -> list[str]:
    """Put every run's probabilities on the official test split on the run (probs
    'test_official' and its report, or with flip TTA probs 'test_official_tta'; labels
    'test_official'), read from its record or computed once from its checkpoint; returns the
    runs that have neither. Nothing happens on a dataset without an official split."""
    from lib.training import train

    name = "test_official_tta" if tta else "test_official"
    predict = (lambda m, d: train.predict_proba(m, d, tta=True)) if tta else None
    cache, skipped = {}, []
    for runs in arms.values():
        for run in runs:
            spec = store.meta_of(run.record)["spec"]
            key = (spec["img_size"], spec["channels"])
            if key not in cache:
                cache[key] = official_test(splits, *key)
            if cache[key] is None:
                return []
            try:
                store.extra_probs(run, name, cache[key], predict)
            except FileNotFoundError:
                skipped.append(f"{run.name} seed {run.seed}")
                continue
            y = run.labels["test_official"] = cache[key].labels.numpy()
            if not tta:
                run.reports["test_official"] = metrics.evaluate(
                    y, run.probs["test_official"], list(splits.classes), bootstrap=bootstrap,
                    seed=run.seed)
    return skipped


def official_rows(arms: dict, splits, experiment_name: str | dict, bootstrap: int,
                  tta: bool = False) -> list[dict]:
    """Rows on the official test split (split 'test_official') for every run whose record
    holds, or whose checkpoint can give, its probabilities there (with flip TTA: variant
    '<variant>+flip_tta'); runs that can do neither are named and skipped."""
    name = "test_official_tta" if tta else "test_official"
    skipped = attach_official(arms, splits, tta, bootstrap)
    rows = []
    for arm_name, runs in arms.items():
        exp = experiment_name.get(arm_name, arm_name) if isinstance(experiment_name, dict) \
            else experiment_name
        for run in runs:
            if name not in run.probs or "test_official" not in run.labels:
                continue
            rep = metrics.evaluate(run.labels["test_official"], run.probs[name],
                                   list(splits.classes), bootstrap=bootstrap, seed=run.seed) \
                if tta else run.reports["test_official"]
            rows.append(results.row(rep, experiment=exp, variant=variant(run) + (TTA if tta else ""),
                                    model=model_label(arm_name, run), params=run.params, seed=run.seed,
                                    split="test_official"))
    if skipped:
        print(f"official test{' (flip TTA)' if tta else ''}: no record or checkpoint for {', '.join(skipped)}")
    return rows


def side_by_side(rows, splits=("test", "test_official"), by=("experiment", "model")) -> pd.DataFrame:
    """Accuracy and macro-F1 (mean over seeds) per group on two splits, side by side."""
    df = results.frame(rows)
    df = df[df["split"].isin(splits)]
    if df.empty:
        return pd.DataFrame()
    g = df.groupby([*by, "split"])[["accuracy", "macro_f1"]].mean().unstack("split")
    g.columns = [f"{m}_{s}" for m, s in g.columns]
    return g.reset_index().round(4)


def section_rows(arms: dict) -> list[dict]:
    """Result rows of 03's study arms, named as the studies name them: sweep points
    (experiment 'sweep_<factor>', variant '<factor>=<value>', validation only), CV folds
    (experiment 'kfold_cv', split 'cv_fold': the held-out fold), imbalance remedies
    (experiment 'imbalance', variant = the remedy, every seed of it)."""
    rows = []
    for name, runs in arms.items():
        _, kind, label = name.split(".", 2)
        if kind == "sweep":
            factor = label.split("=")[0]
            for r in experiment.rows(runs, experiment=f"sweep_{factor}", variant=label):
                if r["split"] == "val":  # a sweep never looks at test
                    rows.append(r)
        elif kind == "cv":
            for r in experiment.rows(runs, experiment="kfold_cv", variant="study004_final"):
                if r["split"] == "val":
                    rows.append({**r, "split": "cv_fold", "fold": int(label[-1])})
        else:
            rows += experiment.rows(runs, experiment="imbalance", variant=label)
    return rows


def chosen_setting(sweep_rows: list[dict]) -> dict:
    """Per swept factor, the value with the best validation macro-F1 (one factor at a time
    around study 004's final setting; ties go to the first value listed)."""
    df = results.frame(sweep_rows)
    out = {}
    for exp, g in df.groupby("experiment", sort=False):
        best = g.loc[g["macro_f1"].idxmax(), "variant"]
        out[exp.removeprefix("sweep_")] = best.split("=", 1)[1]
    return out


def imbalance_contrast(arms: dict, bootstrap: int = 1000) -> tuple[str | None, pd.DataFrame]:
    """(remedy best on validation among the first seed's fits, its test comparison with
    plain CE over the seeds both have); (None, empty) until the seed-0 fits are stored."""
    first = {n.split(".", 2)[2]: r for n, r in arms.items() if n.startswith("03.imbalance.")}
    if "plain_ce" not in first or len(first) < len(plan.IMBALANCE):
        return None, pd.DataFrame()
    val = {k: r[0].reports["val"]["macro_f1"] for k, r in first.items() if k != "plain_ce"}
    best = max(val, key=val.get)
    every = {k: list(r) for k, r in first.items()}
    for n, r in arms.items():
        if n.startswith("03.imbalance_seeds."):
            every[n.split(".", 2)[2]] += r
    pairs = {f"{best} vs plain_ce": (every[best], every["plain_ce"])}
    return best, pd.concat([experiment.compare_table(pairs, bootstrap=bootstrap, metric=m)
                            .assign(metric=m) for m in ("macro_f1", "balanced_accuracy")])


def loaded(arms: dict, splits) -> dict:
    """{arm label: (model, test set at its input, run)} for the first seed of every arm whose
    model is on this machine: a checkpoint beside its record (not committed) or the dataset's
    committed release, whichever seed that is; arms with neither are named."""
    out, absent = {}, []
    for name, runs in arms.items():
        run, model = _first_model(runs)
        if run is None:
            absent.append(name)
            continue
        out[name.split(".", 2)[-1]] = (model, store.prepare(store.spec_of(run), splits)[2], run)
    if absent:
        print(f"no checkpoint here for {', '.join(absent)}: their figures need the model "
              "(retrain, or copy ckpt/ from the machine that trained them)")
    return out


def reachable(runs: list, names, need_one: bool = False) -> list:
    """The runs whose records keep every probability set in `names`, or whose model is here
    to compute them; the others are named with the command that restores their weights (a
    counted skip, not a failed re-render: a fit trained after the last render whose
    checkpoint was lost has no such probabilities yet). need_one: none left is an error."""
    keep = [r for r in runs if store.has_probs(r, names) or r.model is not None
            or store.checkpoint_of(r.record) is not None]
    if lost := [r for r in runs if r not in keep]:
        cmd = (f"`python -m lib.plan --dataset {Path(lost[0].record).parent.name} --rebuild "
               f"{' '.join(Path(r.record).stem for r in lost)}` restores them on a machine like the one "
               "that trained them (a fit is reproduced only on the same CPU instruction set); "
               "elsewhere, deleting a record retrains that fit anew")
        if need_one and not keep:
            raise FileNotFoundError(f"no fit has {', '.join(sorted(names))} in its record or its "
                                    f"checkpoint here: {cmd}")
        print(f"left out {len(lost)} of {len(runs)} fits (seeds {', '.join(str(r.seed) for r in lost)}): "
              f"their records lack {', '.join(sorted(names))} and their checkpoints are not here; {cmd}")
    return keep


def _first_model(runs: list) -> tuple:
    """(run, model) of the first run whose model can be loaded here, else (None, None): in a
    fresh clone only the released seed of an arm has its weights."""
    for run in runs:
        try:
            return run, store.model_of(run)
        except FileNotFoundError:
            continue
    return None, None


def stored(specs, splits, P) -> list:
    """store.fit of each spec; specs not in the store (training off) are named and skipped."""
    out = []
    for s in specs:
        try:
            out.append(store.fit(s, splits, P.name, P.bootstrap))
        except store.MissingFit as err:
            print(err)
    return out


def require(arms: dict, name: str) -> list:
    """The runs of an arm a notebook cannot do without; a readable error when none is stored."""
    if not arms.get(name):
        raise store.MissingFit(f"no stored fit of {name}; `python -m lib.plan --train` trains it "
                               "(or run without --no-train)")
    return arms[name]
