"""lib.data: adapters, audit, splits, tensor cache, on generated fixtures (+ the real data)."""
from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from lib import data
from lib.data import tensors as data_tensors, imageio
from lib.config import paths
from lib.data.splits import group_overlap
from lib.data.labels import UnknownLabelError
from tests import fixtures
from tests.conftest import REAL_NAMES


# --- adapters -------------------------------------------------------------------------------

def test_image_folders_with_fer_prefixes_give_official_splits(tmp_path):
    m = data.load_manifest(fixtures.make_fer_folders(tmp_path / "fer2013"))
    assert m.attrs["layout"] == "folders" and m["dataset"].eq("fer2013").all()
    assert m["split"].value_counts().to_dict() == {"train": 36, "val": 12, "test": 12}
    assert set(m["label"]) == {"anger", "happiness", "sadness"}
    assert set(m.loc[m["raw_label"] == "angry", "label"]) == {"anger"}
    assert m["key"].str.startswith(("train/", "test/")).all()
    out = data.assign_splits(m)
    assert out["split"].equals(m["split"])  # official splits kept as they are


def test_plain_folders_and_train_test_folders(tmp_path):
    m = data.load_manifest(fixtures.make_image_folder_dataset(tmp_path / "a", per_class=5))
    assert len(m) == 15 and m["split"].isna().all() and not m["unlabelled"].any()
    m = data.load_manifest(fixtures.make_image_folder_dataset(tmp_path / "b", per_class=10,
                                                              with_train_test=True))
    assert m["split"].value_counts().to_dict() == {"train": 24, "test": 6}
    s = data.assign_splits(m, save=False)  # val carved out of train, test kept
    assert set(s.loc[m["split"] == "test", "split"]) == {"test"}
    assert set(s.loc[m["split"] == "train", "split"]) == {"train", "val"}


def test_unknown_label_is_an_error_listing_it(tmp_path):
    root = fixtures.make_image_folder_dataset(tmp_path / "x", per_class=2)
    fixtures.make_image_folder_dataset(root, classes=("grumpy", "Bored"), per_class=1)
    with pytest.raises(UnknownLabelError, match=r"grumpy.*|Bored") as e:
        data.load_manifest(root)
    assert "grumpy" in str(e.value) and "Bored" in str(e.value)


def test_legend_layout_flags_every_quirk(tmp_path):
    root = fixtures.make_legend_dataset(tmp_path / "facial_expressions")
    m = data.load_manifest(root)
    assert m.attrs["layout"] == "legend"
    assert len(m) == 12 * 3 + 3 + 1  # label rows + the unlabelled file
    assert m["unlabelled"].sum() == 1 and m["missing_file"].sum() == 1
    assert (m.drop_duplicates("key")["n_label_rows"] > 1).sum() == 2
    assert m.loc[m["label_conflict"], "key"].nunique() == 1
    assert m["dup_label_row"].sum() == 2
    assert set(m["raw_label"].dropna()) >= {"happiness", "HAPPINESS"}
    assert m.loc[m["key"] == "images/Person_B_0002.jpg", "group"].item() == "Person_B"
    assert set(m["source"]) >= {"user0", "user1", "user9"}
    a = data.audit(m, progress=False)
    s = data.audit_summary(a)
    assert s["case_styles"] == ["UPPER", "lower"] and s["doubly_labelled"] == 2
    assert s["conflicting_files"] == 1 and s["unlabelled_files"] == 1 and s["missing_files"] == 1
    u = data.usable(a)
    assert u.attrs["skipped"] == {"missing file": 1, "unlabelled": 1, "conflicting labels": 2,
                                  "repeated label row": 1}
    assert not u["key"].duplicated().any()


def test_second_label_csv_with_cr_endings_and_no_header(tmp_path):
    root = fixtures.make_legend_dataset(tmp_path / "fe")
    assert b"\n" not in (root / "data" / "second.csv").read_bytes()
    m = data.load_manifest(root / "data" / "second.csv")
    labelled = m[m["label"].notna()]
    assert len(labelled) == 10 and labelled["raw_label"].str.islower().all()
    assert m["unlabelled"].sum() == 12 * 3 + 1 - 10  # every other image is listed, unlabelled


def test_fer_pixels_csv(tmp_path):
    f = fixtures.make_fer_csv(tmp_path / "fer" / "fer2013.csv", per_class=6)
    m = data.load_manifest(f.parent)
    assert m.attrs["layout"] == "pixels_csv" and len(m) == 18
    assert m["split"].value_counts().to_dict() == {"train": 6, "val": 6, "test": 6}
    assert m["path"].str.startswith("csv://").all()
    ds = data.ImageTensors(m, size=32, channels=3, progress=False)
    assert ds.images.shape == (18, 3, 32, 32) and ds.classes == ["anger", "happiness", "sadness"]
    raw = imageio.csv_pixels(str(f.resolve()))[0]
    full = data.ImageTensors(m.iloc[:1], size=48, channels=1, progress=False)
    assert np.array_equal(full.images[0, 0].numpy(), raw.astype(np.uint8))
    a = data.audit(m, progress=False)
    assert a["decodable"].all() and a["format"].eq("CSV").all()


def test_rafdb_layout(tmp_path):
    m = data.load_manifest(fixtures.make_rafdb(tmp_path / "rafdb"))
    assert m.attrs["layout"] == "rafdb" and len(m) == 14 and not m["missing_file"].any()
    assert m["path"].str.endswith("_aligned.jpg").all()
    assert set(m["split"]) == {"train", "test"} and m["label"].nunique() == 7


def test_ckplus_subjects_are_groups_and_never_split(tmp_path):
    m = data.load_manifest(fixtures.make_ckplus(tmp_path / "ckplus48", subjects=20))
    assert m["group"].nunique() == 20 and m["group"].str.match(r"S\d{3}$").all()
    s = data.assign_splits(data.audit(m, progress=False), save=False)
    assert group_overlap(s, "group") == 0 and set(s["split"]) == {"train", "val", "test"}


def test_named_datasets_resolve_and_missing_is_clear(fake_data_root, tmp_path, monkeypatch):
    for name in ("fer2013", "facial_expressions", "six_emotions", "ckplus48", "rafdb"):
        assert data.load_manifest(name)["dataset"].eq(name).all()
    (fake_data_root / "fer2013").rename(fake_data_root / "FER-2013")  # a folder-name variant
    assert len(data.load_manifest("fer2013")) == 60
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path / "empty"))
    with pytest.raises(data.DatasetNotFound) as e:
        data.load_manifest("six_emotions")
    assert str(tmp_path / "empty") in str(e.value) and "Kaggle" in str(e.value)


# --- audit and bad inputs -----------------------------------------------------------------------

@pytest.fixture
def odd(tmp_path):
    return fixtures.make_odd_images(tmp_path / "odd" / "happy")


def test_audit_finds_formats_corruption_and_duplicates(odd, tmp_path):
    root = odd["rgba"].parent.parent
    (root / "sad").mkdir()
    (root / "sad" / "copy.png").write_bytes(odd["la"].read_bytes())  # same bytes, other label
    a = data.audit(data.load_manifest(root), progress=False).set_index("key")
    assert a.loc["happy/webp_named.jpg", "format"] == "WEBP"
    assert not a.loc["happy/webp_named.jpg", "ext_matches"] and a.loc["happy/cmyk.jpg", "ext_matches"]
    assert not a.loc["happy/corrupt.jpg", "decodable"] and "cannot identify" in a.loc["happy/corrupt.jpg", "error"]
    assert not a.loc["happy/truncated.jpg", "decodable"] and "truncated" in a.loc["happy/truncated.jpg", "error"]
    assert a.loc["happy/gray16.png", "blank"] and a.loc["happy/cmyk.jpg", "mode"] == "CMYK"
    assert (a.loc["happy/large.jpg", ["width", "height"]] == [4000, 3000]).all()
    assert a.loc["sad/copy.png", "dup_group"] == a.loc["happy/la.png", "dup_group"] >= 0
    assert a.loc["sad/copy.png", "conflict"] and a.loc["happy/la.png", "conflict"]
    assert a.loc["sad/copy.png", "split_group"] == a.loc["happy/la.png", "split_group"]
    u = data.usable(a.reset_index())
    assert u.attrs["skipped"] == {"undecodable": 2, "conflicting labels": 2, "nearly blank": 3}


def test_audit_is_cached(tiny_dataset, monkeypatch):
    m = data.load_manifest(tiny_dataset)
    first = data.audit(m, progress=False)
    monkeypatch.setattr("lib.data.auditor.probe", lambda p: (_ for _ in ()).throw(AssertionError))
    again = data.audit(m, progress=False)
    assert again.attrs["audit_cached"] and again["sha1"].equals(first["sha1"])


def test_odd_modes_decode_to_the_right_shape_and_bad_files_are_skipped(odd):
    m = data.load_manifest(odd["rgba"].parent.parent)
    ds = data.ImageTensors(m, size=24, channels=3, progress=False)
    assert ds.images.shape == (len(m) - 2, 3, 24, 24) and ds.images.dtype == torch.uint8
    assert sorted(ds.skipped["path"].map(lambda p: p.rsplit("/", 1)[1])) == ["corrupt.jpg", "truncated.jpg"]
    assert ds.skipped["reason"].str.len().gt(0).all()
    img = {p.rsplit("/", 1)[1]: ds.images[i] for i, p in enumerate(ds.paths)}
    assert (img["rgba.png"] == 255).all()  # transparent -> white
    assert (img["gray16.png"] == 255).all()  # 65535 -> 255, not clipped garbage
    assert img["large.jpg"][0].float().mean() > 150 and img["large.jpg"][2].float().mean() < 80
    ds1 = data.ImageTensors(m, size=20, channels=1, progress=False)
    rot = ds1.images[ds1.paths.index(str(odd["exif_rotated"]))][0].float()
    assert rot[:8].mean() < 60 and rot[-8:].mean() > 200  # EXIF applied: white half at the bottom
    assert ds1.images.shape[1:] == (1, 20, 20)


def test_image_tensors_labels_classes_and_getitem(tiny_dataset):
    m = data.load_manifest(tiny_dataset)
    ds = data.ImageTensors(m, size=16, channels=1, progress=False)
    assert ds.classes == ["anger", "happiness", "sadness"] and len(ds) == 60
    assert ds.labels.dtype == torch.int64 and torch.bincount(ds.labels).tolist() == [20, 20, 20]
    x, y = ds[3]
    assert x.shape == (1, 16, 16) and int(y) == ds.classes.index(m["label"].iloc[3])
    sub = data.ImageTensors(m[m["label"] == "sadness"], 16, 1,
                            classes=["anger", "happiness", "sadness", "surprise"], progress=False)
    assert set(sub.labels.tolist()) == {2}
    with pytest.raises(ValueError, match="no label"):
        data.ImageTensors(m.assign(label=None), 16, 1, progress=False)


def test_cache_reuse_does_not_decode(tiny_dataset, monkeypatch):
    m = data.load_manifest(tiny_dataset)
    first = data.ImageTensors(m, size=16, channels=1, progress=False)
    assert not first.from_cache and list((paths().cache / "tensors").glob("*.pt"))

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data_tensors, "decode_files", boom)
    again = data.ImageTensors(m, size=16, channels=1, progress=False)
    assert again.from_cache and torch.equal(again.images, first.images)
    with pytest.raises(AssertionError, match="decoded again"):  # another setting: another key
        data.ImageTensors(m, size=17, channels=1, progress=False)


def test_face_crop_falls_back_and_reports(tiny_dataset):
    m = data.load_manifest(tiny_dataset).head(6)
    ds = data.ImageTensors(m, size=16, channels=1, face_crop=True, progress=False)
    assert ds.face_found.shape == (6,) and ds.face_detection_rate == 0.0  # gratings: no faces
    plain = data.ImageTensors(m, size=16, channels=1, progress=False)
    assert plain.face_detection_rate is None and torch.equal(plain.images, ds.images)


# --- splits ---------------------------------------------------------------------------------------

def _synthetic_manifest(n_groups: int = 900, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    classes = np.array(["anger", "fear", "happiness", "neutral", "sadness"])
    p = np.array([0.1, 0.05, 0.4, 0.3, 0.15])
    rows = []
    for g in range(n_groups):
        for i in range(int(rng.integers(1, 5))):
            rows.append(dict(key=f"p{g}_{i}.jpg", path=f"/x/p{g}_{i}.jpg", group=f"p{g}",
                             label=rng.choice(classes, p=p)))
    m = pd.DataFrame(rows).assign(dataset="synthetic", missing_file=False, orig_split=None,
                                  split=None)
    return m.astype({"orig_split": object, "split": object})


def test_splits_are_stratified_group_aware_and_seeded():
    m = _synthetic_manifest()
    s0 = data.assign_splits(m, seed=0, save=False)
    share = s0["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.7) < 0.01 and abs(share["test"] - 0.15) < 0.01
    overall = s0["label"].value_counts(normalize=True)
    per_split = pd.crosstab(s0["label"], s0["split"], normalize="columns")
    assert (per_split.sub(overall, axis=0).abs() < 0.02).all().all(), per_split
    assert group_overlap(s0, "group") == 0
    assert s0["split"].equals(data.assign_splits(m, seed=0, save=False)["split"])
    assert not s0["split"].equals(data.assign_splits(m, seed=1, save=False)["split"])


def test_split_file_is_written_reused_and_checked(tmp_path):
    m = _synthetic_manifest(200)
    s = data.assign_splits(m, seed=0, splits_dir=tmp_path)
    saved = pd.read_csv(tmp_path / "synthetic.csv")
    assert list(saved.columns) == ["key", "split"] and len(saved) == len(m)
    reused = data.assign_splits(m.sample(frac=0.5, random_state=1), seed=0, splits_dir=tmp_path)
    assert reused["split"].equals(s.loc[reused.index, "split"])  # a subset reads its rows
    grown = pd.concat([m, m.head(1).assign(key="new.jpg", path="/x/new.jpg", group="new")])
    with pytest.raises(data.SplitFileMismatch, match="new.jpg"):
        data.assign_splits(grown, seed=0, splits_dir=tmp_path)
    data.assign_splits(grown, seed=0, splits_dir=tmp_path, resplit=True)
    assert len(pd.read_csv(tmp_path / "synthetic.csv")) == len(m) + 1
    data.assign_splits(m, seed=3, splits_dir=tmp_path)
    assert (tmp_path / "synthetic.seed3.csv").exists()
    assert not (paths().root / "data" / "splits" / "synthetic.csv").exists()


def test_subsample_and_kfold():
    s = data.assign_splits(_synthetic_manifest(), seed=0, save=False)
    sub = data.subsample(s, 10, seed=0)
    assert sub.groupby(["split", "label"]).size().max() == 10
    assert sub.index.equals(data.subsample(s, 10, seed=0).index)
    folds = data.kfold(s, k=3, seed=0)
    assert set(folds["split"]) == {"train", "val"} and set(folds["fold"]) == {0, 1, 2}
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    share = folds["fold"].value_counts(normalize=True)
    assert (share - 1 / 3).abs().max() < 0.02


@pytest.mark.parametrize("method", ["greedy", "sklearn"])
def test_kfold_keeps_groups_whole_and_every_class_in_every_fold(method):
    s = data.assign_splits(_synthetic_manifest(), seed=0, save=False)
    rare = pd.DataFrame([dict(key=f"r{g}.jpg", path=f"/x/r{g}.jpg", group=f"r{g}", label="contempt",
                              dataset="synthetic", missing_file=False, split="train")
                         for g in range(3)])  # a class with exactly k groups
    s = pd.concat([s, rare], ignore_index=True)
    folds = data.kfold(s, k=3, seed=0, method=method)
    tv = s[s["split"].isin(["train", "val"])]
    assert folds.drop(columns="fold").equals(tv) and sorted(set(folds["fold"])) == [0, 1, 2]
    assert (folds.groupby("group")["fold"].nunique() == 1).all()  # no group spans two folds
    groups = folds.groupby("label")["group"].nunique()
    per_fold = pd.crosstab(folds["label"], folds["fold"])
    assert (groups >= 3).all() and (per_fold > 0).all().all(), per_fold
    assert ((folds["fold"].value_counts(normalize=True) - 1 / 3).abs() < 0.02).all()
    assert folds["fold"].equals(data.kfold(s, k=3, seed=0, method=method)["fold"])  # seeded
    assert not folds["fold"].equals(data.kfold(s, k=3, seed=1, method=method)["fold"])
    with pytest.raises(ValueError, match="method"):
        data.kfold(s, k=3, method="random")


# --- download -------------------------------------------------------------------------------------

def test_download_extracts_verifies_and_fails_clearly(tmp_path, monkeypatch):
    src = fixtures.make_legend_dataset(tmp_path / "src" / "facial_expressions-master")
    archive = tmp_path / "master.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in src.rglob("*"):
            z.write(f, f.relative_to(src.parent).as_posix())
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path / "root"))
    dest = data.download("facial_expressions", url=archive.as_uri(), min_images=10)
    assert (dest / "data" / "legend.csv").exists() and dest.name == "facial_expressions"
    assert len(data.load_manifest("facial_expressions")) == len(data.load_manifest(src))
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path / "root2"))
    with pytest.raises(data.DatasetNotFound, match="could not download.*unzip it into"):
        data.download("facial_expressions", url=(tmp_path / "nope.zip").as_uri())
    assert not (tmp_path / "root2" / "facial_expressions").exists()
    with pytest.raises(ValueError, match="Kaggle"):
        data.download("fer2013")


def test_cli_audit_and_missing_dataset(fake_data_root, capsys, monkeypatch):
    assert data.main(["audit", "six_emotions"]) == 0
    assert "audit of six_emotions" in capsys.readouterr().out
    monkeypatch.setenv("FER_DATA_ROOT", str(fake_data_root / "nothing"))
    assert data.main(["audit", "ckplus48"]) == 1
    assert "not found" in capsys.readouterr().err


# --- the real datasets ----------------------------------------------------------------------------

@pytest.mark.slow
def test_real_datasets_known_counts_and_committed_splits(real_data_root, monkeypatch):
    committed = paths().root / "data" / "splits"
    monkeypatch.setenv("FER_SPLITS_DIR", str(committed))
    monkeypatch.delenv("FER_CACHE_DIR")  # the project's own (git-ignored) cache: fast re-runs
    got = {}
    for name in REAL_NAMES:
        a = data.audit(data.load_manifest(name), progress=False)
        assert (committed / f"{name}.csv").exists(), f"split file for {name} not committed"
        s = data.assign_splits(a, seed=0, save=False)
        u = data.usable(s)
        assert group_overlap(u) == 0 and group_overlap(u, "group") == 0, name
        if name != "fer2013":  # official splits are kept as published; usable() drops its leaks
            assert group_overlap(s) == 0, name
        got[name] = (a, data.audit_summary(s))
    fer = got["fer2013"][1]
    assert fer["split_counts"] == {"train": 28709, "val": 3589, "test": 3589}
    assert fer["cross_split_dup_groups"] > 0 and fer["dup_conflict_groups"] > 0
    assert 10 <= fer["blank"] <= 16
    fe = got["facial_expressions"][1]
    assert (fe["label_rows"], fe["doubly_labelled"], fe["conflicting_files"],
            fe["unlabelled_files"]) == (13690, 8, 1, 36)
    assert fe["case_styles"] == ["UPPER", "lower"]
    six = got["six_emotions"][1]
    assert six["files"] == 1200 and six["ext_mismatch"].get("WEBP named .jpg", 0) > 0
    assert {"RGBA", "L", "RGB"} <= set(six["modes"]) and six["formats"].get("WEBP", 0) > 50
    assert got["ckplus48"][1]["files"] == 981 and got["ckplus48"][0]["group"].nunique() == 118
