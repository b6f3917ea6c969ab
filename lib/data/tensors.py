"""Decode once: manifest rows -> a cached uint8 tensor (N, C, H, W) plus int64 labels.

Each image is opened by content, EXIF-rotated, converted to L or RGB (alpha composited on
white, 16-bit rescaled), resized so its shorter side is `size` and centre-cropped to a
square (no padding: faces sit in the middle of these datasets). With `face_crop=True` the
largest Haar-cascade face (plus a 20% margin) is cropped first; images without a detected
face fall back to the centre crop and are counted. The result is saved under
paths().cache/tensors/<key>.pt, the key hashing the file list with each file's size and
mtime plus the settings, so a changed file or setting re-decodes and nothing else does.
Undecodable files are dropped, counted and listed in `skipped` with their reasons.
"""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pandas as pd
import torch

from lib.data import imageio, labels
from lib.atomic import write_with
from lib.config import paths

CACHE_VERSION = 1


def cache_key(files: list[str], size: int, channels: int, face_crop: bool) -> str:
    blob = json.dumps([CACHE_VERSION, size, channels, bool(face_crop), imageio.stat_key(files)])
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def decode_files(files: list[str], size: int, channels: int, face_crop: bool,
                 progress: bool = True, workers: int | None = None) -> dict:
    """Decode unique files -> dict(images kept, ok mask, reasons, face_found) for the cache."""
    jobs = [(f, size, channels, face_crop) for f in files]
    disk = [j for j in jobs if not imageio.is_csv_path(j[0])]
    rows = [j for j in jobs if imageio.is_csv_path(j[0])]  # CSV rows: cheap, and the CSV is
    res = dict(zip([j[0] for j in disk],  # parsed once in this process rather than per worker
                   imageio.parallel_map(imageio.decode_job, disk, f"decode {size}px",
                                        workers=workers, progress=progress)))
    res.update({j[0]: imageio.decode_job(j) for j in rows})
    out = [res[f] for f in files]
    ok = torch.tensor([a is not None for a, _, _ in out], dtype=torch.bool)
    arrays = [a for a, _, _ in out if a is not None]
    images = (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous() if arrays
              else torch.zeros((0, channels, size, size), dtype=torch.uint8))
    return dict(images=images, ok=ok, reasons=[e for _, _, e in out],
                face_found=torch.tensor([bool(f) for _, f, _ in out], dtype=torch.bool))


class ImageTensors:
    """Rows of a manifest as uint8 images (N, C, size, size) and int64 label indices.

    `classes` fixes the label order (pass the train set's to val/test); by default the rows'
    labels in canonical order. Attributes: images, labels, classes, paths, rows (the kept
    manifest rows), skipped (DataFrame path, reason), face_found, face_detection_rate.
    """

    def __init__(self, rows: pd.DataFrame, size: int, channels: int = 1, face_crop: bool = False,
                 classes: list[str] | None = None, cache: bool = True, progress: bool = True,
                 workers: int | None = None):
        if rows["label"].isna().any():
            raise ValueError(f"{int(rows['label'].isna().sum())} rows have no label; "
                             "pass data.usable(manifest) rows")
        self.classes = list(classes) if classes is not None else labels.ordered(rows["label"].unique())
        unknown = sorted(set(rows["label"]) - set(self.classes))
        if unknown:
            raise labels.UnknownLabelError(f"labels {unknown} are not in classes {self.classes}")
        self.size, self.channels, self.face_crop = size, channels, face_crop
        files = sorted(set(rows["path"]))
        t0 = time.perf_counter()
        blob, self.from_cache = self._load_or_decode(files, cache, progress, workers)
        self.seconds = time.perf_counter() - t0
        pos = {f: i for i, f in enumerate(files)}
        idx = np.array([pos[p] for p in rows["path"]], dtype=np.int64)
        ok = blob["ok"].numpy()
        kept_rank = np.cumsum(ok) - 1  # index of each ok file inside the stored images
        keep = ok[idx]
        self.rows = rows[keep].reset_index(drop=True)
        self.images = blob["images"][torch.from_numpy(kept_rank[idx[keep]])]
        self.labels = torch.tensor([self.classes.index(c) for c in self.rows["label"]],
                                   dtype=torch.int64)
        self.paths = self.rows["path"].tolist()
        self.skipped = pd.DataFrame({"path": [f for f, k in zip(files, ok) if not k],
                                     "reason": [r for r, k in zip(blob["reasons"], ok) if not k]})
        found = blob["face_found"].numpy()
        self.face_found = found[idx[keep]] if face_crop else None
        self.face_detection_rate = float(self.face_found.mean()) if face_crop and keep.any() else None
        self._report(len(files))

    def _load_or_decode(self, files, cache, progress, workers) -> tuple[dict, bool]:
        file = paths().cache / "tensors" / f"{cache_key(files, self.size, self.channels, self.face_crop)}.pt"
        if cache and file.exists():
            return torch.load(file, weights_only=True, mmap=True), True
        blob = decode_files(files, self.size, self.channels, self.face_crop, progress, workers)
        if cache:
            write_with(file, lambda tmp: torch.save(blob, tmp))
        return blob, False

    def _report(self, n_files: int) -> None:
        msg = (f"ImageTensors: {len(self):,} images {tuple(self.images.shape[1:])} from "
               f"{n_files:,} files, {'cache' if self.from_cache else 'decoded'} in {self.seconds:.1f} s")
        if len(self.skipped):
            why = self.skipped["reason"].str.split(":").str[0].value_counts().to_dict()
            msg += f"; skipped {len(self.skipped)} undecodable file(s): {why}"
        if self.face_crop:
            n = int(self.face_found.sum()) if self.face_found is not None else 0
            msg += (f"; face found in {n:,} of {len(self):,} "
                    f"({(self.face_detection_rate or 0):.0%}), centre crop for the other {len(self) - n:,}")
        print(msg)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def __repr__(self) -> str:
        return (f"ImageTensors(n={len(self)}, shape={tuple(self.images.shape[1:])}, "
                f"classes={self.classes})")


def take(ds, idx) -> "ImageTensors":
    """A shallow copy of `ds` restricted to positions `idx` (repeats allowed: over-sampling);
    images, labels, rows and paths stay aligned. The one place datasets are subset."""
    import copy

    idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
    out = copy.copy(ds)
    out.images, out.labels = ds.images[idx], torch.as_tensor(ds.labels)[idx]
    if getattr(ds, "rows", None) is not None:
        out.rows = ds.rows.iloc[idx.numpy()].reset_index(drop=True)
        out.paths = out.rows["path"].tolist()
    return out


def concat(*parts) -> "ImageTensors":
    """The datasets one after another (same classes, size and channels)."""
    import copy

    first = parts[0]
    if any(list(p.classes) != list(first.classes) for p in parts):
        raise ValueError("concat: the datasets have different classes")
    out = copy.copy(first)
    out.images = torch.cat([p.images for p in parts])
    out.labels = torch.cat([torch.as_tensor(p.labels) for p in parts])
    out.rows = pd.concat([p.rows for p in parts], ignore_index=True)
    out.paths = out.rows["path"].tolist()
    return out
