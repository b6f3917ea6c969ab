"""Robust image decoding and per-file probing, shared by the audit and the tensor cache.

Decoding is by content, never by extension (a WEBP named `.jpg` decodes as WEBP). Every
failure becomes a short reason string instead of an exception, so callers can count and
report skips. Rows of the FER2013 competition CSV are addressed as `csv://<file>#<row>`.
"""
from __future__ import annotations

import hashlib
import io
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from lib.progress import tqdm

IMAGE_EXTS = {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif",
              ".tiff", ".pgm", ".ppm", ".pbm"}
# extension -> the PIL formats a file with that name may honestly contain
EXT_FORMATS = {
    ".jpg": {"JPEG", "MPO"}, ".jpeg": {"JPEG", "MPO"}, ".jfif": {"JPEG"}, ".jpe": {"JPEG"},
    ".png": {"PNG"}, ".bmp": {"BMP"}, ".gif": {"GIF"}, ".webp": {"WEBP"},
    ".tif": {"TIFF"}, ".tiff": {"TIFF"}, ".pgm": {"PPM"}, ".ppm": {"PPM"}, ".pbm": {"PPM"},
}
# Refuse images above this many pixels before decoding them (PIL's own bomb limit is 2x
# MAX_IMAGE_PIXELS; we check explicitly so the reason is a clear skip, not a warning).
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
CSV_SCHEME = "csv://"
POOL_MIN = 256  # below this many files a process pool costs more than it saves


class DecodeError(Exception):
    """An image that cannot be turned into pixels; the message is the reported reason."""


def is_csv_path(path: str) -> bool:
    return str(path).startswith(CSV_SCHEME)


def csv_path(file: str | Path, row: int) -> str:
    """The manifest path of one row of a FER2013-style pixels CSV."""
    return f"{CSV_SCHEME}{Path(file).resolve()}#{row}"


def split_csv_path(path: str) -> tuple[str, int]:
    file, row = str(path)[len(CSV_SCHEME):].rsplit("#", 1)
    return file, int(row)


@lru_cache(maxsize=2)
def csv_pixels(file: str) -> np.ndarray:
    """All rows of a pixels CSV as (N, side, side) uint8; bad rows become all -1 -> flagged."""
    import pandas as pd

    col = pd.read_csv(file, usecols=["pixels"])["pixels"].astype(str)
    n = len(col)
    first = np.array(col.iloc[0].split(), dtype=np.int64) if n else np.zeros(2304)
    side = int(round(len(first) ** 0.5))
    out = np.full((n, side * side), -1, dtype=np.int16)
    for i, s in enumerate(col):
        v = np.array(s.split(), dtype=np.int64)
        if v.size == side * side and v.min() >= 0 and v.max() <= 255:
            out[i] = v
    return out.reshape(n, side, side)


def _csv_image(path: str) -> Image.Image:
    file, row = split_csv_path(path)
    if not os.path.exists(file):
        raise DecodeError(f"missing file: {file}")
    arr = csv_pixels(file)[row]
    if arr.min() < 0:
        raise DecodeError(f"bad pixels string in {Path(file).name} row {row}")
    return Image.fromarray(arr.astype(np.uint8), "L")


def open_image(path: str, draft: tuple[str, int] | None = None) -> Image.Image:
    """Open and fully load an image by content; `draft=(mode, side)` lets JPEG decode reduced."""
    if is_csv_path(path):
        return _csv_image(path)
    if not os.path.exists(path):
        raise DecodeError("missing file")
    try:
        img = Image.open(path)
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise DecodeError(f"too large: {w}x{h} pixels > {MAX_PIXELS}")
        if draft and img.format == "JPEG":
            img.draft(draft[0], (draft[1], draft[1]))  # decode at 1/2..1/8 scale: fast on big JPEGs
        img.load()
    except DecodeError:
        raise
    except Exception as e:  # PIL raises many types: UnidentifiedImageError, OSError, SyntaxError...
        raise DecodeError(f"{type(e).__name__}: {e}") from None
    return img


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit / int / float pixels -> 0..255: 16-bit range by /257, else min-max."""
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 255:
        return arr.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return np.round(arr / 257.0).astype(np.uint8)
    return np.round((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> 'L' (channels=1) or 'RGB' (channels=3).

    Transparency is composited on white (scraped images with an alpha background are
    usually meant to be seen on a white page); CMYK/YCbCr/P/1 go through PIL's conversion;
    16-bit and float modes are rescaled to 8 bits rather than clipped.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    target = "L" if channels == 1 else "RGB"
    if img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(_scale_to_uint8(np.asarray(img)), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == target else img.convert(target)


def load(path: str, channels: int, min_side: int | None = None) -> Image.Image:
    """Open, apply EXIF orientation, convert to L/RGB; JPEGs decoded no smaller than min_side."""
    img = open_image(path, draft=("L" if channels == 1 else "RGB", min_side) if min_side else None)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        pass
    return to_mode(img, channels)


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Resize keeping aspect so the shorter side is `size`, then centre-crop the longer side."""
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)


def decode(path: str, size: int, channels: int, face_crop: bool = False
           ) -> tuple[np.ndarray | None, bool | None, str]:
    """One image -> (H x W x C uint8 or None, face found (None if not asked), error reason)."""
    try:
        img = load(path, channels, min_side=max(size * 4, 320) if face_crop else size)
        found = None
        if face_crop:
            from lib import faces

            box = faces.largest_face(np.asarray(img.convert("L")))
            found = box is not None
            if found:
                img = img.crop(box)
        arr = np.asarray(fit_square(img, size), dtype=np.uint8)
        return (arr[..., None] if arr.ndim == 2 else arr), found, ""
    except DecodeError as e:
        return None, None, str(e)
    except Exception as e:  # decoding must never kill a whole run; the reason is reported
        return None, None, f"{type(e).__name__}: {e}"


def decode_job(job: tuple) -> tuple[np.ndarray | None, bool | None, str]:
    """Pool entry point: job = (path, size, channels, face_crop)."""
    return decode(*job)


def dhash(gray: Image.Image) -> str:
    """64-bit difference hash (9x8 gray, left<right per pixel) as 16 hex digits."""
    a = np.asarray(gray.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def probe(path: str) -> dict:
    """Audit facts about one file: decodable, error, format, ext_matches, mode, size, hashes."""
    out = dict(path=path, decodable=False, error="", format="", ext_matches=False, mode="",
               width=-1, height=-1, sha1="", phash="", pixel_std=np.nan, bytes=-1)
    try:
        if is_csv_path(path):
            img = _csv_image(path)
            out.update(format="CSV", ext_matches=True, bytes=img.width * img.height,
                       sha1=hashlib.sha1(img.tobytes()).hexdigest())
        else:
            if not os.path.exists(path):
                raise DecodeError("missing file")
            data = Path(path).read_bytes()
            out.update(bytes=len(data), sha1=hashlib.sha1(data).hexdigest())
            try:
                img = Image.open(io.BytesIO(data))
            except Exception as e:
                raise DecodeError(f"{type(e).__name__}: {e}") from None
            fmt = img.format or ""
            out.update(format=fmt, mode=img.mode, width=img.width, height=img.height,
                       ext_matches=fmt in EXT_FORMATS.get(Path(path).suffix.lower(), set()))
            if img.width * img.height > MAX_PIXELS:
                raise DecodeError(f"too large: {img.width}x{img.height} pixels")
            try:
                img.load()
            except Exception as e:
                raise DecodeError(f"{type(e).__name__}: {e}") from None
        out.update(mode=img.mode, width=img.width, height=img.height)
        gray = to_mode(img, 1)
        small = np.asarray(gray.resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
        out.update(decodable=True, phash=dhash(gray), pixel_std=float(small.std()))
    except DecodeError as e:
        out["error"] = str(e)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def parallel_map(func: Callable, items: Sequence, desc: str, workers: int | None = None,
                 progress: bool = True) -> list:
    """`[func(x) for x in items]` with a tqdm bar; a small process pool for large inputs."""
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    bar = dict(total=len(items), desc=desc, disable=not progress, mininterval=1.0)
    if workers <= 1 or len(items) < POOL_MIN:
        return [func(x) for x in tqdm(items, **bar)]
    with mp.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(func, items, chunksize=64), **bar))


def stat_key(paths: Iterable[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) for each file (csv rows use their CSV's stat): cache keys."""
    out, seen = [], {}
    for p in paths:
        f = split_csv_path(p)[0] if is_csv_path(p) else p
        if f not in seen:
            try:
                st = os.stat(f)
                seen[f] = (st.st_size, st.st_mtime_ns)
            except OSError:
                seen[f] = (-1, -1)
        out.append((str(p), *seen[f]))
    return out
