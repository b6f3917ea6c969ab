"""Datasets -> one manifest DataFrame; plus the audit, split and tensor-cache API in one place.

    m = data.load_manifest("fer2013")      # every label row and every image file, with flags
    m = data.audit(m)                      # decodability, formats, hashes, duplicates, conflicts
    m = data.assign_splits(m, seed=0)      # official splits kept, else 70/15/15 group-aware
    train = data.ImageTensors(data.usable(m).query("split == 'train'"), size=48, channels=1)

Manifest columns: path (absolute; `csv://file#row` for pixel CSV rows), key (path relative
to the dataset root: machine-independent, used by split files), label (canonical or None),
raw_label, split, orig_split, group (person / subject / file stem), source, dataset, ext,
and the row flags missing_file, unlabelled, n_label_rows, dup_label_row, label_conflict.
Nothing is dropped here: `usable()` removes what cannot be trained on and says why; what
listing leaves out (empty class folders, non-image files) is printed and kept in
`attrs["listing_problems"]`. Label lines that cannot be read are errors naming file:line.
`python -m lib.data {download,audit,splits,list} NAME [--debug]` is the command line.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.data import labels
from lib.config import paths
from lib.data.auditor import audit, audit_summary, print_audit, problems, usable  # noqa: F401
from lib.data.readers import (FOLDER_SPLIT, USAGE_SPLIT, LabelFileError,  # noqa: F401 (API)
                              detect_layout, is_listed_image, list_class_folder,
                              read_label_csv, read_pixel_labels, read_rafdb_list, warn_listing)
from lib.data.splits import SplitFileMismatch, assign_splits, kfold, subsample  # noqa: F401
from lib.data.tensors import ImageTensors  # noqa: F401 (API)
from lib.data.imageio import IMAGE_EXTS, csv_path

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

FER_PREFIX = USAGE_SPLIT  # FER2013 Usage values, also the file-name prefixes of its folders
CKPLUS_RE = re.compile(r"^(S\d{3})_\d{3}_")


def _group_of(stem: str) -> str:
    """CK+ subject id (S005) when the name carries one, else the lower-cased file stem."""
    m = CKPLUS_RE.match(stem)
    return m.group(1) if m else stem.lower()


def _row(path: Path, root: Path, raw_label, split=None, group=None, source="") -> dict:
    return dict(path=str(path), key=path.relative_to(root).as_posix(), raw_label=raw_label,
                orig_split=split, group=group if group is not None else _group_of(path.stem),
                source=source)


def _image_folders(root: Path, notes: list[dict]) -> list[dict]:
    """<class>/* or {train,val,test}/<class>/*; FER2013 name prefixes give the official split.
    Empty class folders and non-image files go to `notes` (reported, never silently lost)."""
    tops = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    split_dirs = [d for d in tops if d.name.lower() in FOLDER_SPLIT]
    bases = [(d, FOLDER_SPLIT[d.name.lower()]) for d in split_dirs] if split_dirs else [(root, None)]
    rows = []
    for base, split in bases:
        for f in sorted(base.iterdir()):  # images lying next to the class folders: unlabelled
            if is_listed_image(f):
                rows.append(_row(f, root, None, split, source=root.name))
        for cls in sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for f in list_class_folder(cls, notes):
                prefix = f.stem.split("_", 1)[0].lower()
                rows.append(_row(f, root, cls.name, FER_PREFIX.get(prefix, split),
                                 source=root.name))
    return rows


def _legend(root: Path, file: Path) -> list[dict]:
    """muxspace: label CSV + images/; source = user.id, group = person name from the file name."""
    images = root / "images"
    lab = read_label_csv(file)
    rows = [_row(images / r.image, root, r.emotion, None, re.sub(r"_\d+$", "", Path(r.image).stem),
                 str(r._1)) for r in lab.itertuples()]
    labelled = set(lab["image"])
    for f in sorted(images.iterdir()) if images.is_dir() else []:
        if is_listed_image(f) and f.name not in labelled:
            rows.append(_row(f, root, None, None, re.sub(r"_\d+$", "", f.stem), ""))
    return rows


def _pixels_csv(file: Path) -> list[dict]:
    """FER2013 competition CSV: emotion (0-6), pixels (48*48 ints), Usage -> official split.
    A bad label or Usage cell is an error naming its line; a bad pixels cell is left to the
    audit (that row alone is undecodable)."""
    return [dict(path=csv_path(file, i), key=f"{file.name}#{i}", raw_label=label,
                 orig_split=split, group=f"row{i}", source=file.stem)
            for i, (_, label, split) in enumerate(read_pixel_labels(file))]


def _rafdb(root: Path) -> list[dict]:
    """RAF-DB basic: EmoLabel/list_patition_label.txt (`train_00001.jpg 5`) + Image/aligned/."""
    lab = root / "EmoLabel" / "list_patition_label.txt"
    rows = []
    for name, code in read_rafdb_list(lab):
        stem = Path(name).stem
        aligned = root / "Image" / "aligned" / f"{stem}_aligned.jpg"
        f = aligned if aligned.exists() or not (root / "Image" / "original" / name).exists() \
            else root / "Image" / "original" / name
        rows.append(_row(f, root, labels.RAFDB_CODES[int(code)], FOLDER_SPLIT.get(stem.split("_")[0]),
                         stem.lower(), "rafdb"))
    return rows


def load_manifest(name_or_path: str | os.PathLike) -> pd.DataFrame:
    """Every label row and every image file of a dataset as one DataFrame (see module doc)."""
    layout, root, where = detect_layout(resolve(name_or_path))
    notes: list[dict] = []
    rows = {"legend": lambda: _legend(root, where), "pixels_csv": lambda: _pixels_csv(where),
            "rafdb": lambda: _rafdb(root), "folders": lambda: _image_folders(root, notes)}[layout]()
    warn_listing(root, notes)
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
    m.attrs.update(dataset=name, root=str(root), layout=layout, label_file=str(where),
                   listing_problems=notes)
    return m


def _flag_rows(m: pd.DataFrame, layout: str) -> pd.DataFrame:
    """Row-level facts that need no decoding: missing files, unlabelled, repeated/conflicting rows."""
    if layout == "pixels_csv":
        m["missing_file"] = False
    else:  # folders too: a listed dangling symlink is a missing file
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

def cli_error(e: BaseException) -> str:
    """An exception as the one line a command line prints (our errors already name the file)."""
    msg = " ".join(str(e).split()) or "(no message)"
    if isinstance(e, (ValueError, OSError, LookupError)):
        return f"error: {msg}"
    return f"error: {type(e).__name__}: {msg} (--debug shows the traceback)"


def run_cli(body: Callable[[], int], debug: bool) -> int:
    """Run a command-line body: a failure prints one `error:` line and exits 1; `--debug`
    re-raises it for the full traceback."""
    try:
        return body()
    except Exception as e:
        if debug:
            raise
        print(cli_error(e), file=sys.stderr)
        return 1


def _command(a: argparse.Namespace) -> int:
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
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.data", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["download", "ensure", "audit", "splits", "list"])
    ap.add_argument("name", nargs="*", help="dataset name(s) or path(s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--url", help="download: another archive URL (e.g. a local mirror)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    a = ap.parse_args(argv)
    return run_cli(lambda: _command(a), a.debug)

