"""Robust image decoding and per-file probing, shared by the audit and the tensor cache.

Decoding is by content, never by extension (a WEBP named `.jpg` decodes as WEBP). Every
failure becomes a short reason string `<kind>: <path>[: detail]` instead of an exception,
so callers can count skips by kind and say which file. Rows of the FER2013 competition CSV
are addressed as `csv://<file>#<row>`; their reasons name `<file>:<line>`. Both the audit
and the tensor cache decode JPEGs at reduced scale (PIL draft) when they need fewer pixels.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lib.data.readers import IMAGE_EXTS, read_pixel_arrays  # noqa: F401 (IMAGE_EXTS: API)
from lib.progress import tqdm

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
# The audit's checks need 64 px (std) and 9x8 (hash); decoding at >= 256 px leaves typical
# dataset images (<= 511 px) untouched, so their hashes do not change, yet a 12000 px JPEG
# decodes at 1/8 scale. Non-JPEG formats cannot decode reduced; they are reduced right after.
AUDIT_SIDE = 256
STREAM_CHUNK = 1 << 20


class DecodeError(Exception):
    """An image that cannot be turned into pixels; the message is the reported reason."""


def _reason(kind: str, path: str, detail: str = "") -> str:
    """The one reason format: `<kind>: <path>[: detail]` (kind first: callers count by it)."""
    return f"{kind}: {path}" + (f": {detail}" if detail else "")


def _pil_error(e: Exception, path: str) -> DecodeError:
    """A PIL exception as a reason naming the path (PIL names a BytesIO or repeats the path)."""
    msg = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e))
    msg = msg.replace(f" {path!r}", "").replace(f" {path}", "").strip()
    return DecodeError(_reason(type(e).__name__, path, msg))


def _missing(path: str) -> DecodeError:
    """A missing file, saying when it is a symlink whose target is gone."""
    link = f"dangling symlink to {os.readlink(path)}" if os.path.islink(path) else ""
    return DecodeError(_reason("missing file", path, link))


def is_csv_path(path: str) -> bool:
    return str(path).startswith(CSV_SCHEME)


def csv_path(file: str | Path, row: int) -> str:
    """The manifest path of one row of a FER2013-style pixels CSV."""
    return f"{CSV_SCHEME}{Path(file).resolve()}#{row}"


def split_csv_path(path: str) -> tuple[str, int]:
    file, row = str(path)[len(CSV_SCHEME):].rsplit("#", 1)
    return file, int(row)


@lru_cache(maxsize=2)
def csv_table(file: str) -> tuple[np.ndarray, list[str]]:
    """A pixels CSV parsed once: (N, side, side) int16 (-1 on bad rows), reason per row."""
    return read_pixel_arrays(file)


def csv_pixels(file: str) -> np.ndarray:
    """All rows of a pixels CSV as (N, side, side) int16; bad rows are all -1 (see csv_table)."""
    return csv_table(file)[0]


def _csv_image(path: str) -> Image.Image:
    file, row = split_csv_path(path)
    if not os.path.exists(file):
        raise _missing(file)
    pixels, reasons = csv_table(file)
    if row >= len(pixels):
        raise DecodeError(_reason("missing row", path, f"the CSV has {len(pixels)} rows"))
    if reasons[row]:
        raise DecodeError(reasons[row])
    return Image.fromarray(pixels[row].astype(np.uint8), "L")


def _open_lazy(path: str) -> Image.Image:
    """Image.open by content (reads the header only); failures name the path."""
    if not os.path.exists(path):
        raise _missing(path)
    try:
        return Image.open(path)
    except Exception as e:  # PIL raises many types: UnidentifiedImageError, OSError, SyntaxError...
        raise _pil_error(e, path) from None


def _load(img: Image.Image, path: str, draft: tuple[str | None, int] | None) -> Image.Image:
    """Refuse oversized images, then decode; `draft=(mode or None = keep, side)` lets a JPEG
    decode at 1/2..1/8 scale, no smaller than `side` (fast and light on big JPEGs)."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise DecodeError(_reason("too large", path, f"{w}x{h} pixels > {MAX_PIXELS}"))
    try:
        if draft and img.format == "JPEG":
            img.draft(draft[0] or img.mode, (draft[1], draft[1]))
        img.load()
    except Exception as e:
        raise _pil_error(e, path) from None
    return img


def open_image(path: str, draft: tuple[str | None, int] | None = None) -> Image.Image:
    """Open and fully load an image by content; `draft=(mode, side)` lets JPEG decode reduced."""
    if is_csv_path(path):
        return _csv_image(path)
    return _load(_open_lazy(path), path, draft)


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
            from lib.data import faces

            box = faces.largest_face(np.asarray(img.convert("L")))
            found = box is not None
            if found:
                img = img.crop(box)
        arr = np.asarray(fit_square(img, size), dtype=np.uint8)
        return (arr[..., None] if arr.ndim == 2 else arr), found, ""
    except DecodeError as e:
        return None, None, str(e)
    except Exception as e:  # decoding must never kill a whole run; the reason is reported
        return None, None, _reason(type(e).__name__, path, str(e))


def decode_job(job: tuple) -> tuple[np.ndarray | None, bool | None, str]:
    """Pool entry point: job = (path, size, channels, face_crop)."""
    return decode(*job)


def dhash(gray: Image.Image) -> str:
    """64-bit difference hash (9x8 gray, left<right per pixel) as 16 hex digits."""
    a = np.asarray(gray.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def file_sha1(path: str) -> tuple[str, int]:
    """(sha1 hex, size in bytes), read in chunks: a huge file is never held in memory whole."""
    h, n = hashlib.sha1(), 0
    with open(path, "rb") as f:
        while chunk := f.read(STREAM_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def reduced(img: Image.Image, side: int = AUDIT_SIDE) -> Image.Image:
    """A decoded image box-reduced by an integer factor, its shorter side kept >= `side`."""
    factor = min(img.size) // side
    if factor < 2:
        return img
    try:
        return img.reduce(factor)
    except ValueError:  # P, 1 and I;16 cannot be reduced directly; to_mode converts them later
        return img


def probe(path: str) -> dict:
    """Audit facts about one file: decodable, error, format, ext_matches, mode, size, hashes.

    Format, mode and size are the file's own; the pixel checks (std, dHash) run on the
    reduced-scale decode (JPEG draft to >= AUDIT_SIDE, else a box reduction after decoding).
    """
    out = dict(path=path, decodable=False, error="", format="", ext_matches=False, mode="",
               width=-1, height=-1, sha1="", phash="", pixel_std=np.nan, bytes=-1)
    try:
        if is_csv_path(path):
            img = _csv_image(path)
            out.update(format="CSV", ext_matches=True, bytes=img.width * img.height, mode=img.mode,
                       width=img.width, height=img.height,
                       sha1=hashlib.sha1(img.tobytes()).hexdigest())
            _pixel_facts(img, out)
            return out
        if not os.path.exists(path):
            raise _missing(path)
        try:
            sha1, size = file_sha1(path)
        except OSError as e:
            raise DecodeError(_reason(type(e).__name__, path, e.strerror or str(e))) from None
        out.update(bytes=size, sha1=sha1)
        with _open_lazy(path) as img:
            fmt = img.format or ""
            out.update(format=fmt, mode=img.mode, width=img.width, height=img.height,
                       ext_matches=fmt in EXT_FORMATS.get(Path(path).suffix.lower(), set()))
            _pixel_facts(reduced(_load(img, path, draft=(None, AUDIT_SIDE))), out)
    except DecodeError as e:
        out["error"] = str(e)
    except Exception as e:
        out["error"] = _reason(type(e).__name__, path, str(e))
    return out


def _pixel_facts(img: Image.Image, out: dict) -> None:
    """dHash and the 64x64 gray std of a decoded image, into `out`; marks it decodable."""
    gray = to_mode(img, 1)
    small = np.asarray(gray.resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    out.update(decodable=True, phash=dhash(gray), pixel_std=float(small.std()))


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
