"""The fit store: every fit trained once, keyed by its content, reused by every notebook.

    spec = store.FitSpec("conv4net", recipe, seed=0, img_size=48, channels=1)
    run = store.fit(spec, splits, profile="cpu")  # trains only when the record is missing

A record is two small files under `store/<profile>/<dataset>/` (committed):
`<model>-<key>.json` (spec, history, timings, commit, parameter count, classes) and
`<model>-<key>.npz` (probabilities per evaluated split, with flip-TTA ones). The best
checkpoint and the resume state sit in `ckpt/` beside them (git-ignored), so an interrupted
fit resumes from its last epoch. The key hashes the data (split rows and labels), the spec
and `RECIPE_VERSION`, which is bumped on purpose when training code changes results.
Records load with json and `np.load(allow_pickle=False)`: nothing is unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import config, models
from lib.models import releases
from lib.training import experiment, subsets, train
from lib.evaluation import metrics
from lib.atomic import write_bytes

# 1: first store (48 px native inputs, integer-shift augmentation, recipes in lib.training.plan)
RECIPE_VERSION = 1


class MissingFit(LookupError):
    """A fit is not in the store and training was not allowed (FER_STORE_TRAIN=0)."""


@dataclass(frozen=True)
class FitSpec:
    """What identifies one fit besides the data: model, recipe (train.Config fields), seed,
    input, and a named training subset (lib.training.subsets: 'all', 'label_shuffle',
    'stratified:N', 'undersample', 'oversample', 'cv3:K', joined with '+'). `init`
    {'dataset': D, 'spec': a FitSpec's fields} starts the model from that stored fit on
    dataset D (lib.models.weights.transfer) instead of random or ImageNet weights."""

    model: str
    recipe: dict
    seed: int
    img_size: int
    channels: int
    pretrained: bool = False
    model_kw: dict = field(default_factory=dict)
    subset: str = "all"
    init: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        subsets.parse(self.subset)  # a bad subset name fails here
        if subsets.holds_out(self.subset) and self.recipe.get("patience"):
            raise ValueError("a CV fit cannot early-stop on its held-out fold: patience=None")
        train.Config(**self.recipe)  # unknown or bad recipe fields fail here, not mid-plan
        if self.init and (set(self.init) != {"dataset", "spec"} or self.pretrained):
            raise ValueError("init needs {'dataset', 'spec'} and pretrained=False")

    def config(self, **runtime) -> train.Config:
        """The train.Config of this fit (runtime fields such as checkpoint added)."""
        return train.Config(**{**self.recipe, "seed": self.seed, **runtime})


def spec_dict(spec: FitSpec) -> dict:
    """The fields that identify a fit; an empty `init` is left out, so a fit's key is the
    same as before the field existed."""
    d = asdict(spec)
    if not d["init"]:
        d.pop("init")
    return d


def root() -> Path:
    """The store's location: $FER_STORE_DIR (e.g. a Drive folder on Colab), else store/."""
    return Path(os.environ.get("FER_STORE_DIR", config.ROOT / "store"))


def training_allowed() -> bool:
    """Missing fits train unless FER_STORE_TRAIN=0 (render a report from the store only)."""
    return os.environ.get("FER_STORE_TRAIN", "1") != "0"


def data_hash(datasets) -> str:
    """Hash of the rows (paths relative to the data root, labels) of train/val/test."""
    base = str(config.paths().data_root)
    h = hashlib.sha256()
    for ds in datasets:
        rel = [os.path.relpath(p, base) if os.path.isabs(p) else p for p in ds.paths]
        h.update(json.dumps([rel, torch.as_tensor(ds.labels).tolist(), list(ds.classes)]).encode())
    return h.hexdigest()[:16]


def key(spec: FitSpec, dhash: str) -> str:
    """The content key of a fit on data with hash `dhash`."""
    blob = json.dumps({"spec": spec_dict(spec), "data": dhash, "version": RECIPE_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_dir(profile: str, dataset: str) -> Path:
    """Checkpoints and resume states: $FER_CKPT_DIR/<profile>/<dataset>, else ckpt/ beside
    the records (git-ignored)."""
    base = os.environ.get("FER_CKPT_DIR")
    return Path(base) / profile / dataset if base else root() / profile / dataset / "ckpt"


def _files(profile: str, dataset: str, spec: FitSpec, k: str) -> tuple[Path, Path, Path]:
    d = root() / profile / dataset
    stem = f"{spec.model}-{k}"
    return d / f"{stem}.json", d / f"{stem}.npz", checkpoint_dir(profile, dataset) / f"{stem}.pt"


def epochs_done(spec: FitSpec, dataset: str, key: str, profile: str) -> int:
    """Epochs an unfinished fit (`key` from `lookup`) has behind it: those of its resume state
    beside the checkpoint, where an interrupted fit continues; else 0."""
    state = train.resume_path(_files(profile, dataset, spec, key)[2])
    if not state.exists():
        return 0
    return int(torch.load(state, map_location="cpu", weights_only=True)["epoch"])


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=config.ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=config.ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def prepare(spec: FitSpec, splits) -> tuple:
    """(train, val, test) tensors for `spec` from a data.Splits, the named subset applied."""
    memo = splits.__dict__.setdefault("_store_tensors", {})  # decode (or read the cache) once
    face = any(kind == "face_crop" for kind, _ in subsets.parse(spec.subset))
    if (spec.img_size, spec.channels, face) not in memo:
        memo[spec.img_size, spec.channels, face] = splits.tensors(spec.img_size, spec.channels,
                                                                  face_crop=face)
    train_ds, val_ds, test_ds = memo[spec.img_size, spec.channels, face]
    train_ds, val_ds = subsets.apply(spec.subset, spec.seed, train_ds, val_ds)
    return train_ds, val_ds, test_ds


def lookup(spec: FitSpec, splits, profile: str) -> tuple[Path, tuple, str]:
    """(record path, data tuple, key) of `spec` on `splits`."""
    data = prepare(spec, splits)
    k = key(spec, data_hash(data))
    return _files(profile, splits.dataset, spec, k)[0], data, k


def has(spec: FitSpec, splits, profile: str) -> bool:
    return lookup(spec, splits, profile)[0].exists()


def _write_record(rec: Path, npz: Path, meta: dict, probs: dict[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: v.astype(np.float32) for k, v in probs.items()})
    write_bytes(npz, buf.getvalue())  # probabilities first: a record never points at nothing
    write_bytes(rec, json.dumps(meta, indent=1, default=float).encode())


def source_of(spec: FitSpec, profile: str) -> tuple[dict, Path]:
    """(record metadata, checkpoint path) of the stored fit that `spec.init` starts from;
    MissingFit while it is not stored, FileNotFoundError without its checkpoint."""
    src = FitSpec(**spec.init["spec"])
    meta = find(profile, spec.init["dataset"], src)
    if meta is None:
        raise MissingFit(f"{spec.model} starts from {spec.init['dataset']}'s {src.model} seed "
                         f"{src.seed}, which is not in the store yet: train it first")
    ckpt = checkpoint_dir(profile, spec.init["dataset"]) / f"{src.model}-{meta['key']}.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: the checkpoint of the fit to start from is not here "
                                "(checkpoints are not committed); copy it or retrain that fit")
    return meta, ckpt


def host() -> dict:
    """What the numbers of a fit depend on beyond its key: the kernels torch picks differ by
    CPU instruction set (a fit trained on an AVX-512 machine is not reproduced bit for bit on
    an AVX2 one), by GPU and by torch version."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "gpu": gpu}


def _train(spec: FitSpec, data: tuple, ckpt: Path, profile: str) -> tuple[dict, dict, torch.nn.Module]:
    """Train `spec` (resuming from ckpt's state), predict val/test with and without flip-TTA."""
    train_ds, val_ds, test_ds = data
    config.seed_everything(spec.seed)
    kw = {"img_size": spec.img_size, **spec.model_kw}
    model = models.create(spec.model, len(train_ds.classes), in_chans=spec.channels,
                          pretrained=spec.pretrained, **kw)
    source = {}
    if spec.init:
        from lib.models import weights

        src_meta, src_ckpt = source_of(spec, profile)
        state = torch.load(src_ckpt, map_location="cpu", weights_only=True)["state_dict"]
        moved = weights.transfer(model, state, src_meta["classes"], list(train_ds.classes))
        source = {"dataset": spec.init["dataset"], "key": src_meta["key"],
                  "copied_tensors": moved["copied"], "shared_classes": moved["shared_classes"]}
    cfg = spec.config(checkpoint=ckpt, resume=True, desc=f"{spec.model} s{spec.seed}")
    t0 = time.perf_counter()
    # a held-out CV fold is scored, never used to stop or to choose the checkpoint
    hist = train.fit(model, train_ds, None if subsets.holds_out(spec.subset) else val_ds, cfg)
    t1 = time.perf_counter()
    probs = {}
    for split, ds in (("val", val_ds), ("test", test_ds)):
        probs[split] = train.predict_proba(model, ds)
        probs[f"{split}_tta"] = train.predict_proba(model, ds, tta=True)
    meta = {"history": hist.to_dict(orient="list"), "attrs": dict(hist.attrs),
            "params": models.count_params(model), "classes": list(train_ds.classes),
            "n": {s: len(d) for s, d in zip(("train", "val", "test"), data)},
            "seconds": {"fit_wall": t1 - t0, "predict": time.perf_counter() - t1,
                        "threads": torch.get_num_threads()},
            "host": host()}
    if source:
        meta["init_from"] = source
    train.resume_path(ckpt).unlink(missing_ok=True)  # the best checkpoint stays beside it
    return meta, probs, model


def fit(spec: FitSpec, splits, profile: str, bootstrap: int = 0,
        train_missing: bool | None = None) -> experiment.Run:
    """The stored fit of `spec` on `splits` as an experiment.Run (scored on val and test);
    trained, recorded and returned with its model when missing. `run.model` is None for a
    stored fit unless its checkpoint is present (then loaded lazily by `model_of`)."""
    rec, data, k = lookup(spec, splits, profile)
    npz, ckpt = _files(profile, splits.dataset, spec, k)[1:]
    model = None
    if not rec.exists():
        if not (training_allowed() if train_missing is None else train_missing):
            raise MissingFit(f"{splits.dataset}: {spec.model} seed {spec.seed} ({rec.name}) "
                             "is not in the store; `python -m lib.plan --train` trains it")
        meta, probs, model = _train(spec, data, ckpt, profile)
        meta.update(spec=spec_dict(spec), key=k, dataset=splits.dataset, profile=profile,
                    commit=_commit(), recipe_version=RECIPE_VERSION,
                    trained_at=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))
        _write_record(rec, npz, meta, probs)
    return load(rec, data, bootstrap, model)


REBUILD_ATOL = 1e-3  # a rebuilt checkpoint must give the record's val probabilities


def rebuild(spec: FitSpec, splits, profile: str) -> float:
    """Retrain a stored fit whose checkpoint is lost (a fresh machine) into its checkpoint
    path, leaving the record as it is, and return the largest difference between the new
    model's and the record's val probabilities. Over REBUILD_ATOL the model is not the one
    the record describes: it is kept aside as `<name>.unmatched.pt` and ValueError says so
    (then delete the record to retrain it for good). Only a machine with the same CPU
    instruction set (and torch) reproduces a fit: the record's `host` says which."""
    rec, data, k = lookup(spec, splits, profile)
    ckpt = _files(profile, splits.dataset, spec, k)[2]
    if not rec.exists():
        raise MissingFit(f"{rec}: not in the store; `python -m lib.plan --train` trains it")
    meta, probs = read(rec)
    if ckpt.exists():
        raise FileExistsError(f"{ckpt} is here already: nothing to rebuild")
    threads = torch.get_num_threads()
    torch.set_num_threads(int(meta.get("seconds", {}).get("threads", threads)))  # same sums
    # trained beside the final path: an interrupted rebuild leaves no half-trained weights
    # where model_of would take them for the record's model (and resumes from its own state)
    tmp = ckpt.with_name(ckpt.stem + ".rebuild.pt")
    try:
        model = _train(spec, data, tmp, profile)[2]
    finally:
        torch.set_num_threads(threads)
    diff = float(np.abs(train.predict_proba(model, data[1]) - probs["val"]).max())
    if diff > REBUILD_ATOL:
        aside = ckpt.with_suffix(".unmatched.pt")
        tmp.replace(aside)
        was, now = meta.get("host"), host()
        where = (f" (trained on {was}, rebuilt on {now})" if was and was != now else
                 "" if was else f" (the record predates host notes; rebuilt on {now})")
        raise ValueError(f"{rec.name}: the retrained model's val probabilities differ from the "
                         f"record's by {diff:.3g} (> {REBUILD_ATOL}){where}; kept aside as "
                         f"{aside.name}. Delete the record to retrain the fit for good")
    tmp.replace(ckpt)
    return diff


def meta_of(rec: Path) -> dict:
    """The metadata of one record (spec, history, timings) without its probabilities."""
    return json.loads(Path(rec).read_text())


def read(rec: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, probabilities) of one record; no pickles."""
    meta = meta_of(rec)
    with np.load(Path(rec).with_suffix(".npz"), allow_pickle=False) as z:
        probs = {k: z[k] for k in z.files}
    return meta, probs


def load(rec: Path, data: tuple, bootstrap: int = 0, model=None) -> experiment.Run:
    """An experiment.Run from a record, scored against the labels of `data`."""
    meta, probs = read(rec)
    hist = pd.DataFrame(meta["history"])
    hist.attrs.update(meta["attrs"])
    spec = meta["spec"]
    run = experiment.Run(spec["model"], spec["seed"], model, hist, n_params=meta["params"],
                         record=str(rec))
    named = {"val": data[1], "test": data[2]}
    for split, ds in named.items():
        y = ds.labels.numpy()
        if len(y) != len(probs[split]):
            raise ValueError(f"{rec}: {len(probs[split])} {split} probabilities for {len(y)} items")
        run.probs[split], run.labels[split] = probs[split], y
        run.probs[f"{split}_tta"] = probs[f"{split}_tta"]
        run.reports[split] = metrics.evaluate(y, probs[split], list(ds.classes),
                                              bootstrap=bootstrap, seed=run.seed)
    return run


def runs(specs, splits, profile: str, bootstrap: int = 0) -> list[experiment.Run]:
    """store.fit for each spec (one per seed, usually)."""
    return [fit(s, splits, profile, bootstrap) for s in specs]


def spec_of(run: experiment.Run) -> FitSpec:
    """The FitSpec of a stored run, read back from its record."""
    return FitSpec(**meta_of(run.record)["spec"])


def _ckpt_path(rec: Path) -> Path:
    return checkpoint_dir(rec.parent.parent.name, rec.parent.name) / (rec.stem + ".pt")


def checkpoint_of(record: str | Path) -> Path | None:
    """The weights of a stored fit on this machine: its checkpoint beside the record, else the
    committed release published from it, else None (checkpoints are not committed)."""
    rec = Path(record)
    if (ckpt := _ckpt_path(rec)).exists():
        return ckpt
    rel = releases.of_record(rec)
    return rel if rel is not None and rel.exists() else None


def has_probs(run: experiment.Run, names) -> bool:
    """Whether the run's record already keeps every probability set in `names`."""
    with np.load(Path(run.record).with_suffix(".npz"), allow_pickle=False) as z:
        return set(names) <= set(z.files)


def model_of(run: experiment.Run):
    """The trained model of a run: in memory, or rebuilt from its checkpoint beside the record."""
    if run.model is not None:
        return run.model
    rec = Path(run.record)
    ckpt = checkpoint_of(rec)
    if ckpt is None:
        raise FileNotFoundError(f"{_ckpt_path(rec)} is not here (checkpoints are not committed): copy it, "
                                f"or `python -m lib.plan --dataset {rec.parent.name} --rebuild "
                                f"{rec.stem}` retrains it and checks it against the record")
    run.model = models.load_checkpoint(ckpt, config.device())[0]
    return run.model


def extra_probs(run: experiment.Run, name: str, ds, predict=None) -> np.ndarray:
    """The run's probabilities on another image set `ds` (an official test split, another
    dataset's test split), kept in its record under `name`: computed once from the model
    (in memory or its checkpoint) by `predict(model, ds)` (default train.predict_proba; an
    adapted model's, e.g. after AdaBN), read from the record ever after."""
    npz = Path(run.record).with_suffix(".npz")
    meta, probs = read(run.record)
    if name not in probs:
        probs[name] = (predict or train.predict_proba)(model_of(run), ds)
        _write_record(Path(run.record), npz, meta, probs)
    if len(probs[name]) != len(ds):
        raise ValueError(f"{run.record}: {name} holds {len(probs[name])} rows for {len(ds)} images")
    run.probs[name] = probs[name]
    return probs[name]


def find(profile: str, dataset: str, spec: FitSpec) -> dict | None:
    """The metadata of a stored fit of `spec` on a dataset, found by its spec alone (no data
    needed: the plan uses it to pick an arm from earlier fits' validation scores)."""
    want = json.loads(json.dumps(spec_dict(spec), default=str))
    for rec in sorted((root() / profile / dataset).glob(f"{spec.model}-*.json")):
        meta = json.loads(rec.read_text())
        if meta["spec"] == want and meta.get("recipe_version") == RECIPE_VERSION:
            return meta
    return None


def records(profile: str, dataset: str | None = None) -> pd.DataFrame:
    """One row per stored fit: dataset, model, seed, subset, augmentation, key, images/s and
    train time."""
    out = []
    for rec in sorted(root().glob(f"{profile}/{dataset or '*'}/*.json")):
        meta = json.loads(rec.read_text())
        a, h = meta["attrs"], meta["history"]
        seen = meta["n"]["train"] if not meta["spec"]["recipe"].get("epoch_images") else \
            meta["spec"]["recipe"]["epoch_images"]
        out.append({"dataset": meta["dataset"], "model": meta["spec"]["model"],
                    "seed": meta["spec"]["seed"], "subset": meta["spec"]["subset"],
                    "img_size": meta["spec"]["img_size"], "key": meta["key"],
                    "model_kw": meta["spec"].get("model_kw", {}),
                    "augment": meta["spec"]["recipe"].get("augment", "none"),
                    "epochs": a["epochs_run"], "best_epoch": a["best_epoch"],
                    "best_val_macro_f1": a["best_val_macro_f1"],
                    "train_seconds": a["train_seconds"], "threads": meta["seconds"]["threads"],
                    "images_per_s": seen * len(h["epoch"]) / max(a["train_seconds"], 1e-9)})
    return pd.DataFrame(out)

