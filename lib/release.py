"""Released models: the one fit per dataset that a person can use, copied out of the store.

    python -m lib.release --profile cpu --dataset six_emotions [--dataset ...] [--dry-run]

`choose` picks, among the stored fits of a dataset (training subset 'all' only), the arm
(model + recipe + input, i.e. a spec without its seed) with the best mean validation
macro-F1 over its seeds, then that arm's seed with the best validation macro-F1. Test
numbers never take part in the choice. `publish` writes `models/<dataset>.pt` (the
lib.models.save_checkpoint format, without the training state: what lib.predict needs)
and `models/<dataset>.json` (provenance: store record and key, model, seed, profile,
commit, validation macro-F1, test macro-F1 / accuracy / balanced accuracy, official test
accuracy where the dataset has one, classes, preprocessing), then rewrites the table of
every release in models/README.md (`table`). The folder is $FER_MODELS_DIR, else
<project root>/models.

Resolving a release name (`released`) lives in lib.models.releases, below lib.predict.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lib import config
from lib.models.releases import DEFAULT, ReleaseError, models_dir, released  # noqa: F401 (API)

MAX_BYTES = 20 * 2**20  # a release is committed: keep it a small file
VAL_ATOL = 1e-2  # published weights must reproduce the record's val probabilities


# ---------------------------------------------------------------- choosing -------------
@dataclass(frozen=True)
class Choice:
    """The released fit of one dataset and why it was chosen."""

    profile: str
    dataset: str
    record: Path
    meta: dict
    arm: str
    arm_mean_val_macro_f1: float
    arm_seeds: int
    arms: list[dict]  # every candidate arm: name, seeds, mean validation macro-F1

    @property
    def val_macro_f1(self) -> float:
        return float(self.meta["attrs"]["best_val_macro_f1"])


def _arm_key(spec: dict) -> str:
    """An arm is a spec without its seed (model, recipe, input, pretrained, kwargs)."""
    return json.dumps({k: v for k, v in spec.items() if k != "seed"}, sort_keys=True)


def _arm_names(profile: str, dataset: str) -> dict[str, str]:
    """Arm key -> plan arm name ('03.conv4net'); empty when the profile is unknown. A fit two
    arms share (01's baseline is 02's no-augmentation arm) keeps the first arm's name."""
    from lib.training import plan, store

    try:
        P = config.get_profile(profile)
    except ValueError:
        return {}
    names: dict[str, str] = {}
    for a in plan.arms(P, dataset):
        for s in a.specs:
            names.setdefault(_arm_key(store.spec_dict(s)), a.name)
    return names


def fits(profile: str, dataset: str) -> list[tuple[Path, dict]]:
    """(record path, metadata) of every stored fit of `dataset` trained on subset 'all'."""
    from lib.training import store

    out = []
    for rec in sorted((store.root() / profile / dataset).glob("*.json")):
        meta = json.loads(rec.read_text())
        if meta["spec"].get("subset", "all") == "all":
            out.append((rec, meta))
    return out


def pick(candidates: list[tuple[Path, dict]]) -> tuple[int, list[dict]]:
    """(index of the chosen fit, arms table): best arm by mean validation macro-F1 over its
    seeds, then its best seed. Ties go to the earlier arm name / the lower seed, so the
    choice does not depend on file order."""
    arms: dict[str, list[int]] = {}
    for i, (_, meta) in enumerate(candidates):
        arms.setdefault(_arm_key(meta["spec"]), []).append(i)

    def val(i: int) -> float:
        return float(candidates[i][1]["attrs"]["best_val_macro_f1"])

    table = [{"key": k, "seeds": len(ix), "mean_val_macro_f1": sum(map(val, ix)) / len(ix),
              "members": ix} for k, ix in arms.items()]
    table.sort(key=lambda a: (-a["mean_val_macro_f1"], a["key"]))
    best = table[0]["members"]
    chosen = min(best, key=lambda i: (-val(i), candidates[i][1]["spec"]["seed"]))
    return chosen, table


def choose(profile: str, dataset: str) -> Choice:
    """The fit to release for `dataset` from the `profile` store (see the module doc)."""
    from lib.training import store

    cands = fits(profile, dataset)
    if not cands:
        raise ReleaseError(f"{dataset}: no stored fit on subset 'all' under "
                           f"{store.root() / profile / dataset}; `python -m lib.plan --profile "
                           f"{profile} --train --dataset {dataset}` trains them")
    i, table = pick(cands)
    names = _arm_names(profile, dataset)
    for a in table:
        spec = json.loads(a["key"])
        a["name"] = names.get(a["key"], spec["model"])
    rec, meta = cands[i]
    top = table[0]
    arms = [{k: a[k] for k in ("name", "seeds", "mean_val_macro_f1")} for a in table]
    return Choice(profile, dataset, rec, meta, top["name"], top["mean_val_macro_f1"],
                  top["seeds"], arms)


# ---------------------------------------------------------------- publishing -----------
def _checkpoint_of(choice: Choice) -> Path:
    from lib.training import store

    ckpt = store.checkpoint_dir(choice.profile, choice.dataset) / f"{choice.record.stem}.pt"
    if not ckpt.is_file():
        raise ReleaseError(
            f"{choice.dataset}: the checkpoint of {choice.record.name} is not here ({ckpt}); "
            "checkpoints are not committed: set FER_CKPT_DIR to where they are, or delete "
            "the record and retrain it with `python -m lib.plan --train`")
    return ckpt


def _test_scores(choice: Choice, probs: dict) -> tuple[dict, list, object]:
    """Test scores of the record's probabilities against the true labels, the fit's tensors
    and the splits."""
    import numpy as np

    from lib import data
    from lib.evaluation import metrics
    from lib.training import store

    P = config.get_profile(choice.profile)
    spec = store.FitSpec(**choice.meta["spec"])
    splits = data.load_splits(choice.dataset, max_per_class=P.max_per_class, seed=P.seeds[0])
    tensors = store.prepare(spec, splits)
    if store.key(spec, store.data_hash(tensors)) != choice.meta["key"]:
        # the labels would not be the ones the record was scored on
        raise ReleaseError(f"{choice.dataset}: the data under {config.paths().data_root} is "
                           f"not the data {choice.record.name} was trained on (key differs)")
    test = tensors[2]
    rep = metrics.evaluate(test.labels.numpy(), np.asarray(probs["test"]), list(test.classes))
    scores = {k: float(rep[k]) for k in ("macro_f1", "accuracy", "balanced_accuracy")}
    return {**scores, "n": int(rep["n"])}, tensors, splits


def _official_scores(choice: Choice, probs: dict, splits) -> dict | None:
    """Accuracy on the dataset's official test split (FER2013's PrivateTest, the number the
    literature reports), without and with flip TTA, from the record's probabilities there;
    None when the dataset has no official split or the record holds none."""
    import numpy as np

    from lib.analysis import studies
    from lib.evaluation import metrics

    if "test_official" not in probs:
        return None
    pre = choice.meta["spec"]
    ds = studies.official_test(splits, pre["img_size"], pre["channels"])
    if ds is None:
        return None
    y = ds.labels.numpy()
    out = {"n": int(len(y))}
    for name, key in (("accuracy", "test_official"), ("accuracy_flip_tta", "test_official_tta")):
        if key in probs:
            p = np.asarray(probs[key])
            if len(p) != len(y):
                raise ReleaseError(f"{choice.record.name}: {key} holds {len(p)} rows, the official "
                                   f"test split here {len(y)}")
            out[name] = float(metrics.evaluate(y, p, list(splits.classes))["accuracy"])
    return out


def _serialise(model, meta: dict, choice: Choice) -> bytes:
    """The release checkpoint as bytes (save_checkpoint's format; training extras dropped)."""
    import tempfile

    from lib import models

    extra = {"release": {"dataset": choice.dataset, "profile": choice.profile,
                         "record": choice.record.name, "key": choice.meta["key"]}}
    with tempfile.TemporaryDirectory() as tmp:
        f = models.save_checkpoint(Path(tmp) / "release.pt", model, meta["classes"],
                                   face_crop=meta["face_crop"], img_size=meta["img_size"],
                                   channels=meta["channels"], extra=extra)
        return f.read_bytes()


def _val_check(model, val_ds, probs: dict) -> float:
    """Max abs difference between the record's val probabilities and the model's now."""
    import numpy as np

    from lib.training import train

    return float(np.abs(train.predict_proba(model, val_ds) - probs["val"]).max())


def publish(profile: str, dataset: str) -> dict:
    """Write models/<dataset>.pt and .json for the chosen fit; returns the provenance."""
    from lib import predict
    from lib.training import store
    from lib.atomic import write_bytes, write_text

    choice = choose(profile, dataset)
    ckpt = _checkpoint_of(choice)
    model, meta = predict.read_checkpoint(ckpt)  # one-line CheckpointError when corrupt
    if list(meta["classes"]) != list(choice.meta["classes"]):
        raise ReleaseError(f"{ckpt}: classes {meta['classes']} differ from the record's "
                           f"{choice.meta['classes']}")
    blob = _serialise(model, meta, choice)
    if len(blob) > MAX_BYTES:
        raise ReleaseError(f"{dataset}: {choice.record.stem} is {len(blob) / 2**20:.1f} MB, over "
                           f"the {MAX_BYTES // 2**20} MB a committed release may be")
    _, probs = store.read(choice.record)
    test, tensors, splits = _test_scores(choice, probs)
    diff = _val_check(model, tensors[1], probs)
    if diff > VAL_ATOL:
        raise ReleaseError(f"{ckpt}: gives val probabilities {diff:.3g} away from "
                           f"{choice.record.name}'s: not the checkpoint of that fit")
    m = choice.meta
    info = {
        "dataset": dataset, "file": f"{dataset}.pt", "bytes": len(blob),
        "record": f"{profile}/{dataset}/{choice.record.name}", "key": m["key"],
        "model": m["spec"]["model"], "arm": choice.arm, "seed": m["spec"]["seed"],
        "profile": profile, "commit": m.get("commit", "unknown"),
        "recipe_version": m.get("recipe_version"), "trained_at": m.get("trained_at"),
        "params": m.get("params"), "val_macro_f1": choice.val_macro_f1,
        "arm_mean_val_macro_f1": choice.arm_mean_val_macro_f1, "arm_seeds": choice.arm_seeds,
        "test": test, "test_official": _official_scores(choice, probs, splits),
        "classes": list(meta["classes"]),
        "preprocessing": {"img_size": int(meta["img_size"]), "channels": int(meta["channels"]),
                          "face_crop": bool(meta["face_crop"])},
        "val_probs_max_abs_diff": diff, "candidates": choice.arms,
    }
    out = models_dir()
    write_bytes(out / f"{dataset}.pt", blob)  # weights first: the json never points at nothing
    write_text(out / f"{dataset}.json", json.dumps(info, indent=1) + "\n")
    return info


# ---------------------------------------------------------------- the models README ----
TABLE_START, TABLE_END = "<!-- releases:start -->", "<!-- releases:end -->"


def _input(pre: dict) -> str:
    return f"{pre['img_size']} px {'gray' if pre['channels'] == 1 else 'RGB'}"


def table(folder: Path | None = None) -> str:
    """The markdown table of every release in `folder` (default models_dir()), from the
    jsons: what was released and its held-out scores, never typed by hand."""
    folder = folder or models_dir()
    lines = ["| release | model (input, parameters) | plan arm, seed | val macro-F1 (arm mean, "
             "seeds) | test macro-F1 | accuracy | balanced accuracy | test n | official test "
             "accuracy (flip TTA) |", "|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(folder.glob("*.json")):
        i = json.loads(f.read_text())
        t, o = i["test"], i.get("test_official")
        off = "–" if not o else f"{o['accuracy']:.3f}" + (
            f" ({o['accuracy_flip_tta']:.3f})" if "accuracy_flip_tta" in o else "") + f", n = {o['n']:,}"
        params = f", {i['params'] / 1e6:.2f}M" if i.get("params") else ""
        lines.append(
            f"| `{i['dataset']}` | {i['model']} ({_input(i['preprocessing'])}{params}) | "
            f"{i['arm']}, seed {i['seed']} | {i['val_macro_f1']:.3f} ({i['arm_mean_val_macro_f1']:.3f}, "
            f"{i['arm_seeds']}) | {t['macro_f1']:.3f} | {t['accuracy']:.3f} | "
            f"{t['balanced_accuracy']:.3f} | {t['n']:,} | {off} |")
    return "\n".join(lines)


def write_table(folder: Path | None = None) -> Path | None:
    """Rewrite the table between the markers of `folder`/README.md; None (nothing written)
    when there is no README with both markers there."""
    from lib.atomic import write_text

    readme = (folder or models_dir()) / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text()
    a, b = text.find(TABLE_START), text.find(TABLE_END)
    if a < 0 or b < a:
        return None
    write_text(readme, text[:a + len(TABLE_START)] + "\n" + table(folder) + "\n" + text[b:])
    return readme


def describe(info: dict) -> str:
    """One line saying what was published."""
    t, mb = info["test"], info["bytes"] / 2**20
    return (f"{info['dataset']}: published {models_dir() / info['file']} ({mb:.1f} MB): "
            f"{info['model']} seed {info['seed']} of arm {info['arm']} (val macro-F1 "
            f"{info['val_macro_f1']:.3f}; arm mean {info['arm_mean_val_macro_f1']:.3f} "
            f"over {info['arm_seeds']} seed(s)) from store {info['record']}; test macro-F1 "
            f"{t['macro_f1']:.3f}, accuracy {t['accuracy']:.3f}, balanced accuracy "
            f"{t['balanced_accuracy']:.3f} (n={t['n']})")


def main(argv: Sequence[str] | None = None) -> int:
    from lib import predict

    ap = argparse.ArgumentParser(prog="python -m lib.release", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu", help="the store profile (default cpu)")
    ap.add_argument("--dataset", action="extend", nargs="+", required=True)
    ap.add_argument("--dry-run", action="store_true", help="say what would be published")
    return predict.run_main(ap, argv, _command)


def _command(args: argparse.Namespace) -> int:
    for dataset in args.dataset:
        if args.dry_run:
            c = choose(args.profile, dataset)
            print(f"{dataset}: would publish {c.record.name} ({c.meta['spec']['model']} seed "
                  f"{c.meta['spec']['seed']}, val macro-F1 {c.val_macro_f1:.3f}) of arm {c.arm} "
                  f"(mean {c.arm_mean_val_macro_f1:.3f} over {c.arm_seeds} seed(s))")
            for a in c.arms:
                print(f"  {a['name']:20s} {a['seeds']} seed(s)  mean val macro-F1 "
                      f"{a['mean_val_macro_f1']:.3f}")
        else:
            print(describe(publish(args.profile, dataset)), flush=True)
    if not args.dry_run:
        readme = write_table()
        print(f"release table rewritten in {readme}" if readme else
              f"no {models_dir() / 'README.md'} with {TABLE_START} / {TABLE_END}: no table written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
