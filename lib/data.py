"""Datasets -> one manifest DataFrame; plus the audit, split and tensor-cache API in one place.

    m = data.load_manifest("fer2013")      # every label row and every image file, with flags
    m = data.audit(m)                      # decodability, formats, hashes, duplicates, conflicts
    m = data.assign_splits(m, seed=0)      # official splits kept, else 70/15/15 group-aware
    train = data.ImageTensors(data.usable(m).query("split == 'train'"), size=48, channels=1)

Manifest columns: path (absolute; `csv://file#row` for pixel CSV rows), key (path relative
to the dataset root: machine-independent, used by split files), label (canonical or None),
raw_label, split, orig_split, group (person / subject / file stem), source, dataset, ext,
and the row flags missing_file, unlabelled, n_label_rows, dup_label_row, label_conflict.
Nothing is dropped here: `usable()` removes what cannot be trained on and says why.
`python -m lib.data {download,audit,splits,list} NAME` is the command line.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import labels
from lib.config import paths
from lib.data_audit import audit, audit_summary, print_audit, usable  # noqa: F401 (API)
from lib.data_splits import SplitFileMismatch, assign_splits, kfold, subsample  # noqa: F401
from lib.data_tensors import ImageTensors  # noqa: F401 (API)
from lib.imageio import IMAGE_EXTS, csv_path

KAGGLE_INPUT = Path("/kaggle/input")
FACIAL_EXPRESSIONS_URL = "https://github.com/muxspace/facial_expressions/archive/refs/heads/master.zip"


@dataclass(frozen=True)
class DatasetInfo:
    folders: tuple[str, ...]  # accepted folder names under the data root (case-insensitive)
    how: str  # how to obtain it, shown when it is missing


DATASETS: dict[str, DatasetInfo] = {
    "fer2013": DatasetInfo(
        ("fer2013", "fer-2013", "fer_2013", "fer2013-images", "fer2013.csv"),
        "Kaggle `msambare/fer2013` (image folders: unzip so that <root>/fer2013/train and /test "
        "exist) or the competition CSV `challenges-in-representation-learning-facial-"
        "expression-recognition-challenge` (put fer2013.csv in <root>/fer2013/)"),
    "facial_expressions": DatasetInfo(
        ("facial_expressions", "facial-expressions", "facial_expressions-master",
         "muxspace_facial_expressions"),
        f"`python -m lib.data download facial_expressions` (or unzip {FACIAL_EXPRESSIONS_URL} "
        "into <root>/facial_expressions; GitHub muxspace/facial_expressions, Apache-2.0)"),
    "six_emotions": DatasetInfo(
        ("six_emotions", "six-emotions", "6_emotions", "6-human-emotions",
         "6-human-emotions-for-image-classification", "human-emotions"),
        "Kaggle dataset \"6 Human Emotions for image classification\" (web-scraped): unzip so "
        "that <root>/six_emotions/<class>/* exists (classes anger, disgust, fear, happy, pain, sad)"),
    "ckplus48": DatasetInfo(
        ("ckplus48", "ck+48", "ckplus", "ck+", "ck_48", "ckplus-48"),
        "CK+48 (Kaggle `shawon10/ckplus`, or the CK+48 folder of GitHub WuJie1010/Facial-"
        "Expression-Recognition.Pytorch): <root>/ckplus48/<class>/S005_001_*.png"),
    "rafdb": DatasetInfo(
        ("rafdb", "raf-db", "raf_db", "rafdb-basic", "basic"),
        "RAF-DB basic (research licence from whdeng.cn/RAF/model1.html): <root>/rafdb/"
        "EmoLabel/list_patition_label.txt and <root>/rafdb/Image/aligned/"),
}


class DatasetNotFound(FileNotFoundError):
    """A named dataset is not under the data root; the message says where we looked and how to get it."""


def search_roots() -> list[Path]:
    """The data root, then /kaggle/input when running on Kaggle."""
    roots = [paths().data_root]
    if KAGGLE_INPUT.is_dir():
        roots.append(KAGGLE_INPUT)
    return roots


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A dataset name (or an existing path) -> the folder or file holding it."""
    name = str(name_or_path)
    p = Path(name_or_path).expanduser()
    if p.exists() and (name not in DATASETS or os.sep in name):  # a known name means the data root
        return p.resolve()
    info = DATASETS.get(name, DatasetInfo((name,), "put it in a folder of that name under the data root"))
    wanted = {f.lower() for f in info.folders}
    for root in search_roots():
        # direct children first, then one level down (Kaggle mounts <slug>/<folder>)
        for depth in ("*", "*/*"):
            for cand in sorted(root.glob(depth)) if root.is_dir() else []:
                if cand.name.lower() in wanted and (cand.is_dir() or cand.suffix == ".csv"):
                    return cand.resolve()
    raise DatasetNotFound(
        f"dataset {name!r} not found under {', '.join(map(str, search_roots()))} "
        f"(looked for folders {sorted(info.folders)}). Set FER_DATA_ROOT to the folder that "
        f"holds it, or get it: {info.how}")


def dataset_name(root: Path) -> str:
    """The canonical name of a dataset folder (its own name when it is not a known one)."""
    low = root.name.lower()
    for name, info in DATASETS.items():
        if low in {f.lower() for f in info.folders}:
            return name
    return root.name


# --- download -------------------------------------------------------------------------------

def download(name: str, url: str | None = None, min_images: int = 13_000) -> Path:
    """Fetch and verify a dataset with a public archive (only facial_expressions has one)."""
    if name != "facial_expressions":
        raise ValueError(f"{name!r} has no public download; get it this way: "
                         f"{DATASETS[name].how if name in DATASETS else 'unknown dataset'}")
    from lib.progress import tqdm

    url = url or FACIAL_EXPRESSIONS_URL
    root = paths().data_root
    dest = root / name
    if dest.exists():
        print(f"{dest} exists; verifying it")
        return _verify_facial_expressions(dest, min_images)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        archive = Path(tmp) / "archive.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(archive, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar:
                    while chunk := r.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
            with zipfile.ZipFile(archive) as z:
                z.extractall(Path(tmp) / "x")
        except (OSError, zipfile.BadZipFile) as e:
            raise DatasetNotFound(
                f"could not download {name} from {url}: {type(e).__name__}: {e}. If the network "
                f"is blocked, download that zip elsewhere and unzip it into {dest}") from None
        src = Path(tmp) / "x"
        top = list(src.iterdir())
        if len(top) == 1 and top[0].is_dir():  # GitHub archives wrap everything in <repo>-master/
            src = top[0]
        _verify_facial_expressions(src, min_images)
        os.replace(src, dest)  # atomic: a half-extracted archive never appears under its name
    print(f"{name} ready in {dest}")
    return dest


def _verify_facial_expressions(root: Path, min_images: int) -> Path:
    legend = root / "data" / "legend.csv"
    n = sum(1 for p in (root / "images").glob("*") if p.suffix.lower() in IMAGE_EXTS) \
        if (root / "images").is_dir() else 0
    if not legend.exists() or n < min_images:
        raise DatasetNotFound(f"{root} is not a complete facial_expressions copy: legend.csv "
                              f"{'found' if legend.exists() else 'missing'}, {n} images "
                              f"(expected at least {min_images})")
    print(f"verified {root}: legend.csv present, {n:,} images")
    return root


# --- adapters -------------------------------------------------------------------------------

FER_PREFIX = {"training": "train", "publictest": "val", "privatetest": "test"}
FOLDER_SPLIT = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testing": "test"}
CKPLUS_RE = re.compile(r"^(S\d{3})_\d{3}_")


def _group_of(stem: str) -> str:
    """CK+ subject id (S005) when the name carries one, else the lower-cased file stem."""
    m = CKPLUS_RE.match(stem)
    return m.group(1) if m else stem.lower()


def _row(path: Path, root: Path, raw_label, split=None, group=None, source="") -> dict:
    return dict(path=str(path), key=path.relative_to(root).as_posix(), raw_label=raw_label,
                orig_split=split, group=group if group is not None else _group_of(path.stem),
                source=source)


def _image_folders(root: Path) -> list[dict]:
    """<class>/* or {train,val,test}/<class>/*; FER2013 name prefixes give the official split."""
    tops = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    split_dirs = [d for d in tops if d.name.lower() in FOLDER_SPLIT]
    bases = [(d, FOLDER_SPLIT[d.name.lower()]) for d in split_dirs] if split_dirs else [(root, None)]
    rows = []
    for base, split in bases:
        for f in sorted(base.iterdir()):  # images lying next to the class folders: unlabelled
            if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
                rows.append(_row(f, root, None, split, source=root.name))
        for cls in sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for f in sorted(cls.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
                    prefix = f.stem.split("_", 1)[0].lower()
                    rows.append(_row(f, root, cls.name, FER_PREFIX.get(prefix, split),
                                     source=root.name))
    return rows


def read_label_csv(file: Path) -> pd.DataFrame:
    """A muxspace-style label CSV (user.id,image,emotion), header or not, any line endings."""
    text = Path(file).read_bytes().decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if lines and lines[0].strip().lower().replace(" ", "") == "user.id,image,emotion":
        lines = lines[1:]
    parts = [ln.split(",") for ln in lines]
    bad = [i for i, p in enumerate(parts) if len(p) != 3]
    if bad:
        raise ValueError(f"{file}: {len(bad)} line(s) without 3 fields, e.g. line {bad[0] + 1}: "
                         f"{lines[bad[0]]!r}")
    return pd.DataFrame([[s.strip() for s in p] for p in parts], columns=["user.id", "image", "emotion"])


def _legend(root: Path, file: Path) -> list[dict]:
    """muxspace: label CSV + images/; source = user.id, group = person name from the file name."""
    images = root / "images"
    lab = read_label_csv(file)
    rows = [_row(images / r.image, root, r.emotion, None, re.sub(r"_\d+$", "", Path(r.image).stem),
                 str(r._1)) for r in lab.itertuples()]
    labelled = set(lab["image"])
    for f in sorted(images.iterdir()) if images.is_dir() else []:
        if f.is_file() and f.suffix.lower() in IMAGE_EXTS and f.name not in labelled:
            rows.append(_row(f, root, None, None, re.sub(r"_\d+$", "", f.stem), ""))
    return rows


def _pixels_csv(file: Path) -> list[dict]:
    """FER2013 competition CSV: emotion (0-6), pixels (48*48 ints), Usage -> official split."""
    df = pd.read_csv(file, usecols=lambda c: c.strip() in ("emotion", "Usage"))
    df.columns = [c.strip() for c in df.columns]
    usage = df["Usage"] if "Usage" in df else pd.Series([None] * len(df))
    bad = sorted({str(e) for e in df["emotion"] if pd.isna(e) or int(e) not in labels.FER2013_CODES})
    if bad:
        raise labels.UnknownLabelError(f"{file}: unknown FER2013 emotion code(s) {bad}")
    return [dict(path=csv_path(file, i), key=f"{file.name}#{i}",
                 raw_label=labels.FER2013_CODES[int(e)],
                 orig_split=FER_PREFIX.get(str(u).strip().lower()) if isinstance(u, str) else None,
                 group=f"row{i}", source=file.stem) for i, (e, u) in enumerate(zip(df["emotion"], usage))]


def _rafdb(root: Path) -> list[dict]:
    """RAF-DB basic: EmoLabel/list_patition_label.txt (`train_00001.jpg 5`) + Image/aligned/."""
    lab = root / "EmoLabel" / "list_patition_label.txt"
    rows = []
    for ln in lab.read_text().splitlines():
        if not ln.strip():
            continue
        name, code = ln.split()[:2]
        if int(code) not in labels.RAFDB_CODES:
            raise labels.UnknownLabelError(f"{lab}: unknown RAF-DB code {code} for {name}")
        stem = Path(name).stem
        aligned = root / "Image" / "aligned" / f"{stem}_aligned.jpg"
        f = aligned if aligned.exists() or not (root / "Image" / "original" / name).exists() \
            else root / "Image" / "original" / name
        rows.append(_row(f, root, labels.RAFDB_CODES[int(code)], FOLDER_SPLIT.get(stem.split("_")[0]),
                         stem.lower(), "rafdb"))
    return rows


def detect_layout(path: Path) -> tuple[str, Path, Path]:
    """(layout, dataset root, label file or root): legend | pixels_csv | rafdb | folders."""
    if path.is_file():
        head = path.read_text(errors="replace")[:200].lower()
        if "pixels" in head:
            return "pixels_csv", path.parent, path
        root = path.parent.parent if path.parent.name == "data" else path.parent
        return "legend", root, path
    while True:  # descend through single wrapper folders (zip archives often add one)
        kids = [d for d in path.iterdir() if not d.name.startswith(".")]
        name = kids[0].name.lower() if len(kids) == 1 else ""
        if kids and kids[0].is_dir() and name and name not in labels.ALIASES \
                and name not in FOLDER_SPLIT:
            path = kids[0]
        else:
            break
    for legend in (path / "data" / "legend.csv", path / "legend.csv"):
        if legend.exists():
            return "legend", path, legend
    for lab in [path] + [d for d in path.iterdir() if d.is_dir()]:
        if (lab / "EmoLabel" / "list_patition_label.txt").exists():
            return "rafdb", lab, lab
    csvs = [f for f in path.glob("*.csv") if "pixels" in f.read_text(errors="replace")[:200]]
    if csvs:
        return "pixels_csv", path, csvs[0]
    return "folders", path, path


def load_manifest(name_or_path: str | os.PathLike) -> pd.DataFrame:
    """Every label row and every image file of a dataset as one DataFrame (see module doc)."""
    layout, root, where = detect_layout(resolve(name_or_path))
    rows = {"legend": lambda: _legend(root, where), "pixels_csv": lambda: _pixels_csv(where),
            "rafdb": lambda: _rafdb(root), "folders": lambda: _image_folders(root)}[layout]()
    if not rows:
        raise DatasetNotFound(f"no images or label rows found in {where} (layout {layout})")
    m = pd.DataFrame(rows)
    has = m["raw_label"].notna()
    canon = labels.canonicalize(m.loc[has, "raw_label"].astype(str))  # raises, listing unknowns
    m["label"] = pd.Series([None] * len(m), dtype=object)
    m.loc[has, "label"] = canon
    m["split"] = m["orig_split"]
    name = str(name_or_path) if str(name_or_path) in DATASETS else dataset_name(root)
    m["dataset"] = name
    m["ext"] = [Path(p).suffix.lower() if not p.startswith("csv://") else ".csv" for p in m["path"]]
    m = _flag_rows(m, layout)
    cols = ["path", "key", "label", "raw_label", "split", "orig_split", "group", "source",
            "dataset", "ext", "missing_file", "unlabelled", "n_label_rows", "dup_label_row",
            "label_conflict"]
    m = m[cols].astype({"label": object, "split": object, "orig_split": object})
    m.attrs.update(dataset=name, root=str(root), layout=layout, label_file=str(where))
    return m


def _flag_rows(m: pd.DataFrame, layout: str) -> pd.DataFrame:
    """Row-level facts that need no decoding: missing files, unlabelled, repeated/conflicting rows."""
    if layout == "pixels_csv":
        m["missing_file"] = False
    elif layout == "folders":
        m["missing_file"] = False  # found by listing
    else:
        m["missing_file"] = [not os.path.exists(p) for p in m["path"]]
    m["unlabelled"] = m["label"].isna()
    lab = m[~m["unlabelled"]]
    m["n_label_rows"] = m["key"].map(lab.groupby("key").size()).fillna(0).astype(int)
    m["dup_label_row"] = ~m["unlabelled"] & m.duplicated("key", keep="first")
    n_labels = lab.groupby("key")["label"].nunique()
    m["label_conflict"] = m["key"].map(n_labels).fillna(0).astype(int) > 1
    return m


# --- what a notebook needs in one call -----------------------------------------------------

@dataclass
class Splits:
    """Usable manifest rows per split of one dataset, with the class order fixed by train."""

    dataset: str
    frames: dict[str, pd.DataFrame]
    classes: list[str]
    manifest: pd.DataFrame  # the audited manifest with splits, every row kept

    def __getitem__(self, split: str) -> pd.DataFrame:
        return self.frames[split]

    def tensors(self, size: int, channels: int, face_crop: bool = False,
                splits: tuple[str, ...] = ("train", "val", "test")) -> list[ImageTensors]:
        """Decoded (cached) uint8 tensors for the given splits, all with the same classes."""
        return [ImageTensors(self.frames[s], size=size, channels=channels, face_crop=face_crop,
                             classes=self.classes) for s in splits]


def load_splits(name: str, max_per_class: int | None = None, seed: int = 0,
                drop_leaks: bool = True) -> Splits:
    """Manifest -> audit -> shared split (seed 0 file) -> usable rows -> optional subsample."""
    m = assign_splits(audit(load_manifest(name)), seed=0)
    use = usable(m, drop_leaks=drop_leaks)
    use = subsample(use, max_per_class, seed=seed)
    frames = {s: use[use["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    empty = [s for s, f in frames.items() if f.empty]
    if empty:
        raise ValueError(f"{name}: no usable rows in split(s) {empty}")
    classes = labels.ordered(frames["train"]["label"].unique())
    return Splits(str(m["dataset"].iloc[0]), frames, classes, m)


def ensure(name: str) -> Path:
    """The dataset's folder; downloads the ones that can be downloaded when missing."""
    try:
        return resolve(name)
    except DatasetNotFound:
        if name == "facial_expressions":
            return download(name)
        raise


# --- command line ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.data", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["download", "ensure", "audit", "splits", "list"])
    ap.add_argument("name", nargs="*", help="dataset name(s) or path(s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--url", help="download: another archive URL (e.g. a local mirror)")
    a = ap.parse_args(argv)
    try:
        if a.command == "list":
            for n, info in DATASETS.items():
                try:
                    print(f"{n:20s} {resolve(n)}")
                except DatasetNotFound:
                    print(f"{n:20s} missing: {info.how}")
        for name in a.name:
            if a.command == "download":
                download(name, a.url)
            elif a.command == "ensure":
                print(f"{name}: {ensure(name)}")
            elif a.command == "audit":
                print_audit(audit(load_manifest(name)))
            elif a.command == "splits":
                m = assign_splits(audit(load_manifest(name)), seed=a.seed)
                print(m.groupby(["split", "label"]).size().unstack(fill_value=0))
    except (DatasetNotFound, SplitFileMismatch, labels.UnknownLabelError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
