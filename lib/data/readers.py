"""Layout detection and strict, line-numbered readers for what lib.data's adapters read.

A label line that cannot be read is an error naming `file:line` (a label is never guessed).
A bad pixel cell in a FER2013-style CSV is not: it becomes that row's reason (the row is an
undecodable, counted skip in the audit and `usable()`; every other row is kept). Listing a
folder reports what it leaves out: empty class folders and files that are not images.
"""
from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from lib.data import labels

USAGE_SPLIT = {"training": "train", "publictest": "val", "privatetest": "test"}
FOLDER_SPLIT = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testing": "test"}
SHOW_LINES = 3  # bad lines quoted in an error message; the count says how many in all
IMAGE_EXTS = {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif",
              ".tiff", ".pgm", ".ppm", ".pbm"}


class LabelFileError(labels.UnknownLabelError):
    """Lines of a label file that cannot be read as (item, known label); names file:line."""


def _bad_lines(file: str | Path, bad: list[tuple[int, str]]) -> LabelFileError:
    """One error for all bad (line number, what is wrong), quoting the first few."""
    shown = "; ".join(f"line {n}: {why}" for n, why in bad[:SHOW_LINES])
    more = f" (and {len(bad) - SHOW_LINES} more)" if len(bad) > SHOW_LINES else ""
    return LabelFileError(f"{file}: {len(bad)} bad line(s): {shown}{more}; fix or remove them")


def is_listed_image(p: Path) -> bool:
    """An image entry by extension: a file, or a dangling symlink (kept so it is reported
    as a missing file instead of vanishing from the listing)."""
    return p.suffix.lower() in IMAGE_EXTS and (p.is_file() or (p.is_symlink() and not p.exists()))


def _is_ignored_file(p: Path) -> bool:
    """A regular, non-hidden file that listing skips because it is not an image."""
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_EXTS


def list_class_folder(cls: Path, notes: list[dict]) -> list[Path]:
    """The image entries under a class folder; notes an empty folder and ignored files."""
    entries = sorted(cls.rglob("*"))
    found = [f for f in entries if is_listed_image(f)]
    ignored = [f for f in entries if _is_ignored_file(f)]
    if not found:
        other = f" ({len(ignored)} non-image file(s))" if ignored else ""
        notes.append(dict(path=str(cls), problem="empty class folder",
                          reason=f"empty class folder: {cls}: no image files{other}"))
    notes.extend(dict(path=str(f), problem="not an image",
                      reason=f"not an image: {f}: extension {f.suffix or '(none)'} is not read")
                 for f in ignored)
    return found


def warn_listing(root: Path, notes: list[dict]) -> None:
    """Print what listing left out: every empty class folder, and a count of non-image files."""
    empty = [n["path"] for n in notes if n["problem"] == "empty class folder"]
    other = [n["path"] for n in notes if n["problem"] == "not an image"]
    if empty:
        print(f"warning: {root}: {len(empty)} empty class folder(s) (no image files): "
              + ", ".join(empty))
    if other:
        print(f"warning: {root}: {len(other)} file(s) without an image extension not read, "
              f"e.g. {', '.join(other[:3])}")


def _head(file: Path, n: int = 200) -> str:
    """The first characters of a file (a pixels CSV can be 300 MB: never read it all here)."""
    with open(file, encoding="utf-8", errors="replace") as f:
        return f.read(n)


def detect_layout(path: Path) -> tuple[str, Path, Path]:
    """(layout, dataset root, label file or root): legend | pixels_csv | rafdb | folders."""
    if path.is_file():
        if "pixels" in _head(path).lower():
            return "pixels_csv", path.parent, path
        root = path.parent.parent if path.parent.name == "data" else path.parent
        return "legend", root, path
    while True:  # descend through single wrapper folders (zip archives often add one)
        kids = [d for d in path.iterdir() if not d.name.startswith(".")]
        name = kids[0].name.lower() if len(kids) == 1 else ""
        if kids and kids[0].is_dir() and name and name not in labels.ALIASES \
                and name not in FOLDER_SPLIT and name != "emolabel":  # RAF-DB without images
            path = kids[0]
        else:
            break
    for legend in (path / "data" / "legend.csv", path / "legend.csv"):
        if legend.exists():
            return "legend", path, legend
    for lab in [path] + [d for d in path.iterdir() if d.is_dir()]:
        if (lab / "EmoLabel" / "list_patition_label.txt").exists():
            return "rafdb", lab, lab
    csvs = [f for f in sorted(path.glob("*.csv")) if "pixels" in _head(f)]
    if csvs:
        return "pixels_csv", path, csvs[0]
    return "folders", path, path


def read_label_csv(file: str | Path) -> pd.DataFrame:
    """A muxspace-style label CSV (user.id,image,emotion), header or not, any line endings."""
    text = Path(file).read_bytes().decode("utf-8-sig", errors="replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    numbered = [(i + 1, ln) for i, ln in enumerate(text.split("\n")) if ln.strip()]
    if numbered and numbered[0][1].strip().lower().replace(" ", "") == "user.id,image,emotion":
        numbered = numbered[1:]
    parts = [ln.split(",") for _, ln in numbered]
    bad = [(n, f"{len(p)} field(s), expected 3: {ln[:80]!r}")
           for (n, ln), p in zip(numbered, parts) if len(p) != 3]
    if bad:
        raise _bad_lines(file, bad)
    return pd.DataFrame([[s.strip() for s in p] for p in parts],
                        columns=["user.id", "image", "emotion"])


def read_rafdb_list(file: str | Path) -> list[tuple[str, int]]:
    """RAF-DB `list_patition_label.txt`: (image name, code) per line `train_00001.jpg 5`."""
    rows, bad = [], []
    text = Path(file).read_text(encoding="utf-8-sig", errors="replace")
    for n, ln in enumerate(text.splitlines(), 1):
        parts = ln.split()
        if not parts:
            continue
        if len(parts) != 2:  # a name never holds a space: 1 or 3+ fields is a broken line
            bad.append((n, f"{len(parts)} field(s), expected `<image name> <code 1-7>`: "
                           f"{ln[:80]!r}"))
        elif not parts[1].isdecimal() or int(parts[1]) not in labels.RAFDB_CODES:
            bad.append((n, f"code {parts[1]!r} is not one of {sorted(labels.RAFDB_CODES)}: "
                           f"{ln[:80]!r}"))
        else:
            rows.append((parts[0], int(parts[1])))
    if bad:
        raise _bad_lines(file, bad)
    return rows


# --- FER2013-style pixel CSVs ---------------------------------------------------------------

def _open_csv(file: str | Path) -> TextIO:
    """Open for csv.reader: a stray non-UTF-8 byte shows up in its cell, not as a crash."""
    return open(file, newline="", encoding="utf-8-sig", errors="replace")


def pixel_csv_header(file: str | Path) -> list[str]:
    """The column names of a pixels CSV, stripped (`emotion, Usage` headers have spaces)."""
    with _open_csv(file) as f:
        return [c.strip() for c in next(csv.reader(f), [])]


def pixel_csv_rows(file: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: cell}) for each data row; blank lines are not rows.

    Both the manifest (labels) and the pixel decoder read through this, so row i is the
    same record in both.
    """
    with _open_csv(file) as f:
        reader = csv.reader(f)
        cols = [c.strip() for c in next(reader, [])]
        for rec in reader:
            if any(c.strip() for c in rec):
                yield reader.line_num, dict(zip(cols, rec))


def read_pixel_labels(file: str | Path) -> list[tuple[int, str, str | None]]:
    """(line, canonical label, official split or None) per row of a FER2013-style CSV."""
    header = pixel_csv_header(file)
    if "emotion" not in header:
        raise LabelFileError(f"{file}: no 'emotion' column (header: {header})")
    has_usage = "Usage" in header  # without one, every row is unsplit (assign_splits splits)
    rows, bad = [], []
    for n, rec in pixel_csv_rows(file):
        code, usage = rec.get("emotion", "").strip(), rec.get("Usage", "").strip()
        if not code.isdecimal() or int(code) not in labels.FER2013_CODES:
            bad.append((n, f"emotion {code!r} is not one of {sorted(labels.FER2013_CODES)}"))
        elif has_usage and usage.lower() not in USAGE_SPLIT:
            bad.append((n, f"Usage {usage!r} is not Training, PublicTest or PrivateTest"))
        else:
            rows.append((n, labels.FER2013_CODES[int(code)], USAGE_SPLIT.get(usage.lower())))
    if bad:
        raise _bad_lines(file, bad)
    return rows


def _parse_pixels(cell: str) -> np.ndarray | str:
    """One pixels cell -> uint8 values, or the reason it is not a valid image row."""
    if not cell.strip():
        return "empty pixels cell"
    try:
        v = np.fromstring(cell, dtype=np.int64, sep=" ")  # C parser: ~5x faster than split()
    except ValueError:
        return "non-numeric pixel value(s)"
    if v.min() < 0 or v.max() > 255:
        return f"pixel values outside 0-255 (min {v.min()}, max {v.max()})"
    return v.astype(np.uint8)


def read_pixel_arrays(file: str | Path) -> tuple[np.ndarray, list[str]]:
    """All rows as (N, side, side) int16 (-1 filling bad rows) and a reason per row ("" = ok).

    The side comes from the most common value count among parsed rows; a row with another
    count is bad. Linear in the rows: one pass, no re-parsing on a bad row.
    """
    parsed = [(n, _parse_pixels(rec.get("pixels", ""))) for n, rec in pixel_csv_rows(file)]
    sizes = pd.Series([v.size for _, v in parsed if not isinstance(v, str)], dtype=int)
    count = int(sizes.mode().max()) if len(sizes) else 0
    side = int(round(count ** 0.5))
    out = np.full((len(parsed), side * side), -1, dtype=np.int16)
    reasons = []
    for i, (n, v) in enumerate(parsed):
        why = v if isinstance(v, str) else "" if v.size == side * side else \
            f"{v.size} pixel values, expected {side * side} ({side}x{side})"
        if not why:
            out[i] = v
        reasons.append(f"bad pixels: {file}:{n}: {why}" if why else "")
    return out.reshape(len(parsed), side, side), reasons
