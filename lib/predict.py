"""Predict emotions for new photos: find the faces, crop each, classify it.

    python -m lib.predict PHOTO_OR_FOLDER [--model NAME | --checkpoint CKPT] [--csv out.csv]
                          [--faces all|largest|none] [--tta] [--debug]

Without --model / --checkpoint the released model is used (lib.models.releases: models/six_emotions.pt
when present, else the first models/*.pt); `--model fer2013` picks another release by its
dataset name. Faces are found by OpenCV's Haar cascade (lib.data.faces); each face box (x, y, w,
h, in the photo's pixels after EXIF rotation) is widened by 20% to a square, as the training
face crop is, and fed to the model at the checkpoint's size and channels. A photo with no
detected face is classified whole, exactly as the training decoder prepares it, and its row
says `whole image (no face found)`. `--faces none` classifies every file whole (`predict`).

Preprocessing equals training: files are decoded by lib.data.tensors.decode_files / lib.data.imageio
(EXIF rotation, L/RGB conversion, shorter side to the checkpoint's `img_size`, centre crop)
and batches go through lib.training.train.predict_proba, i.e. lib.models.preprocess with the
checkpoint's fer_cfg. Checkpoints are written by lib.models.save_checkpoint and read by
lib.models.load_checkpoint. Undecodable files (dangling symlinks too) are not dropped: they
get a row with an `error` naming the file and no probabilities, and are counted in a printed
summary. A checkpoint that cannot be used is a `CheckpointError` naming the file; the command
line prints it as one line and exits 1 (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from lib import config
from lib.data import imageio
from lib.data.readers import is_listed_image
from lib.models import load_checkpoint


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used; the message names the file and says why."""


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu"
                    ) -> tuple[torch.nn.Module, dict]:
    """`load_checkpoint`, every failure one line naming the file (still weights_only=True)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p}: {'is a folder' if p.is_dir() else 'no such file'}")
    try:
        return load_checkpoint(p, device=device)
    except pickle.UnpicklingError:  # torch's text would suggest weights_only=False: never that
        why = "not a torch checkpoint of tensors and plain values (corrupt, or unsafe to load)"
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # wrong keys or contents
        msg = _first_sentence(str(e).replace(f"{p}: ", ""))
        why = msg if msg.startswith("not a lib.models") else f"not a lib.models checkpoint: {msg}"
    except EOFError:
        why = "empty or truncated file"
    except Exception as e:  # torch's zip reader (truncated file), weights that do not fit...
        why = f"cannot be read: {type(e).__name__}: {_first_sentence(str(e))}"
    raise CheckpointError(f"checkpoint {p}: {why}")


def _first_sentence(msg: str, limit: int = 300) -> str:
    """The first sentence of a (torch) message, on one line: the rest is advice or internals."""
    return " ".join(msg.split(". ")[0].split())[:limit]


def image_files(folder: str | Path) -> list[str]:
    """Image files under `folder` (recursive, by extension, sorted, absolute paths); dangling
    symlinks are kept so they are reported as missing files, not silently left out."""
    folder = Path(folder).resolve()
    files = sorted(str(p) for p in folder.rglob("*") if is_listed_image(p))
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(sorted(imageio.IMAGE_EXTS))}) "
                                f"under {folder}")
    return files


def _inputs(images_or_folder) -> list[str] | torch.Tensor:
    """A folder, one file, a list of files, or an already decoded uint8 (N,C,H,W) tensor."""
    if isinstance(images_or_folder, torch.Tensor):
        x = images_or_folder
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise TypeError(f"expected a uint8 (N,C,H,W) tensor, got {x.dtype} {tuple(x.shape)}")
        return x
    if isinstance(images_or_folder, (str, os.PathLike)):
        p = Path(images_or_folder)
        if p.is_dir():
            return image_files(p)
        if p.is_file():
            return [str(p.resolve())]
        raise FileNotFoundError(f"{p} is neither a folder nor a file")
    files = [str(Path(f).resolve()) for f in images_or_folder]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) not found, e.g. {missing[:3]}")
    return files


def _decode(files: list[str], meta: dict, progress: bool) -> tuple[torch.Tensor, list[str]]:
    """Decode exactly as ImageTensors does; returns kept images and a reason per file."""
    from lib.data.tensors import decode_files

    blob = decode_files(files, int(meta["img_size"]), int(meta["channels"]),
                        bool(meta["face_crop"]), progress=progress)
    reasons = [r if not ok else "" for r, ok in zip(blob["reasons"], blob["ok"].tolist())]
    return blob["images"], reasons


def predict(images_or_folder, checkpoint: str | Path, face_crop: bool | None = None,
            batch_size: int = 64, tta: bool = False, progress: bool = True) -> pd.DataFrame:
    """One row per image: path, pred (class name), confidence, one probability column per
    class (named by the class), error ("" when the image decoded).

    face_crop=None uses the checkpoint's setting (what the model was trained with).
    """
    from lib.training.train import predict_proba

    model, meta = read_checkpoint(checkpoint, device=config.device())
    if face_crop is not None:
        meta = {**meta, "face_crop": bool(face_crop)}
    classes = list(meta["classes"])
    inputs = _inputs(images_or_folder)
    if isinstance(inputs, torch.Tensor):
        images, paths, reasons = inputs, [f"#{i}" for i in range(len(inputs))], [""] * len(inputs)
    else:
        paths = inputs
        images, reasons = _decode(paths, meta, progress)
    probs = np.full((len(paths), len(classes)), np.nan)
    ok = np.array([r == "" for r in reasons])
    if ok.any():
        probs[ok] = predict_proba(model, SimpleNamespace(images=images), batch_size, tta=tta)
    best = np.nan_to_num(probs, nan=-1.0).argmax(1)
    df = pd.DataFrame({"path": paths,
                       "pred": [classes[i] if k else None for i, k in zip(best, ok)],
                       "confidence": np.nanmax(np.where(ok[:, None], probs, -1.0), 1)})
    df.loc[~ok, "confidence"] = np.nan
    df = pd.concat([df, pd.DataFrame(probs, columns=classes)], axis=1)
    df["error"] = reasons
    n_bad = int((~ok).sum())
    print(f"predict: {int(ok.sum()):,} image(s) classified"
          + (f", {n_bad:,} skipped (undecodable; see the 'error' column)" if n_bad else ""))
    return df



# ---------------------------------------------------------------- faces in photos ------
Box = tuple[int, int, int, int]  # x, y, w, h in the photo's pixels
WHOLE = "whole image (no face found)"


def detect_faces(gray: np.ndarray, largest_only: bool = False, work_side: int = 640,
                 min_work_side: int = 96) -> list[Box]:
    """Face boxes (x, y, w, h), largest first, by lib.data.faces' Haar cascade.

    As lib.data.faces.largest_face, detection runs on a downscaled, equalised copy (Haar needs
    faces of >= 24 px there); 640 px rather than 320 so the smaller faces of a group photo
    are found too."""
    from lib.data import faces

    found = faces.detect(gray, work_side, min_work_side)
    boxes = sorted((tuple(int(round(v)) for v in r) for r in found),
                   key=lambda b: (-b[2] * b[3], b[0], b[1]))
    return boxes[:1] if largest_only else boxes


def crop_box(box: Box, width: int, height: int, margin: float = 0.2) -> tuple[int, int, int, int]:
    """(left, upper, right, lower): the face squared and widened by `margin` a side, kept
    inside the photo, as lib.data.faces.largest_face crops the training images."""
    x, y, fw, fh = box
    side = min(max(fw, fh) * (1 + 2 * margin), width, height)
    cx, cy = x + fw / 2, y + fh / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    upper = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, upper, left + int(round(side)), upper + int(round(side))


def classify(model: torch.nn.Module, arrays: list[np.ndarray], batch_size: int = 64,
             tta: bool = False) -> np.ndarray:
    """(N, K) probabilities of H x W x C uint8 crops at the checkpoint's size."""
    from lib.training.train import predict_proba

    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return predict_proba(model, SimpleNamespace(images=x), batch_size, tta=tta)


def face_crops(img, meta: dict, largest_only: bool = False, work_side: int = 640
               ) -> tuple[list[Box], list[np.ndarray]]:
    """Boxes and model-ready crops (H x W x C uint8) of the faces in a PIL image whose mode
    already matches the checkpoint's channels."""
    boxes = detect_faces(np.asarray(img.convert("L")), largest_only, work_side)
    size = int(meta["img_size"])
    crops = []
    for b in boxes:
        arr = np.asarray(imageio.fit_square(img.crop(crop_box(b, *img.size)), size), np.uint8)
        crops.append(arr[..., None] if arr.ndim == 2 else arr)
    return boxes, crops


def _rows_of(path: str, model, meta: dict, faces: str, tta: bool) -> list[dict]:
    """The rows of one photo: one per face, or one whole-image row, or one error row."""
    channels, size = int(meta["channels"]), int(meta["img_size"])
    try:
        img = imageio.load(path, channels)  # full size: boxes are in the photo's pixels
    except Exception as e:  # DecodeError names the file; anything else must not stop a folder
        why = str(e) if isinstance(e, imageio.DecodeError) else f"{type(e).__name__}: {path}: {e}"
        return [{"path": path, "face": None, "source": "", "box": None, "error": why}]
    boxes, crops = face_crops(img, meta, faces == "largest")
    rows = [{"path": path, "face": i, "source": "face", "box": b, "error": ""}
            for i, b in enumerate(boxes)]
    if not crops:  # the whole file as the training decoder sees it (shorter side, centre crop)
        arr, _, err = imageio.decode(path, size, channels, face_crop=False)
        if arr is None:
            return [{"path": path, "face": None, "source": "", "box": None, "error": err}]
        rows = [{"path": path, "face": None, "source": WHOLE, "box": (0, 0, *img.size),
                 "error": ""}]
        crops = [arr]
    for r, p in zip(rows, classify(model, crops, tta=tta)):
        r["probs"] = p
    return rows


def predict_faces(images_or_folder, checkpoint: str | Path, faces: str = "all",
                  tta: bool = False) -> pd.DataFrame:
    """One row per detected face (faces='all'), the largest face ('largest'), or the whole
    image when no face is found: path, face (index, empty for a whole image), source, x, y,
    w, h, pred, confidence, one probability column per class, error."""
    if faces not in ("all", "largest"):
        raise ValueError(f"faces={faces!r}; choose 'all' or 'largest'")
    model, meta = read_checkpoint(checkpoint, device=config.device())
    classes = list(meta["classes"])
    files = _inputs(images_or_folder)
    if isinstance(files, torch.Tensor):
        raise TypeError("predict_faces takes files (faces are found in the photo); "
                        "use predict() for decoded tensors")
    rows = [r for f in files for r in _rows_of(f, model, meta, faces, tta)]
    out = []
    for r in rows:
        p = r.get("probs", np.full(len(classes), np.nan))
        box = r["box"] or (None,) * 4
        ok = not r["error"]
        out.append({"path": r["path"], "face": r["face"], "source": r["source"],
                    **dict(zip("xywh", box)), "pred": classes[int(p.argmax())] if ok else None,
                    "confidence": float(p.max()) if ok else np.nan,
                    **dict(zip(classes, p.tolist())), "error": r["error"]})
    df = pd.DataFrame(out, columns=["path", "face", "source", "x", "y", "w", "h", "pred",
                                    "confidence", *classes, "error"])
    for c in ("face", "x", "y", "w", "h"):
        df[c] = df[c].astype("Int64")  # integers with gaps, not floats
    n_files, bad = df.path.nunique(), df[df.error != ""].path.nunique()
    whole = int((df.source == WHOLE).sum())
    print(f"predict: {n_files - bad:,} image(s), {int((df.source == 'face').sum()):,} face(s)"
          + (f"; no face found in {whole:,} (classified whole)" if whole else "")
          + (f"; {bad:,} skipped (undecodable; see the 'error' column)" if bad else ""))
    return df


# ---------------------------------------------------------------- command line ---------
def checkpoint_for(model: str | None = None, checkpoint: str | None = None) -> Path:
    """--checkpoint as given, else the release named --model, else the default release."""
    if checkpoint:
        return Path(checkpoint)
    from lib.models import releases

    return releases.released(model)


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """--model / --checkpoint, shared with lib.demo and lib.export."""
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--model", help="a release by dataset name (models/NAME.pt); "
                   "default six_emotions, else the first release")
    g.add_argument("--checkpoint", help="a file written by lib.models.save_checkpoint")


def run_main(ap: argparse.ArgumentParser, argv: Sequence[str] | None,
             command: Callable[[argparse.Namespace], int]) -> int:
    """Add --debug, parse argv, run `command(args)` with lib.data.run_cli's one-line errors;
    the end of every CLI's main (lib.predict, demo, export, release)."""
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = ap.parse_args(argv)
    from lib.data import run_cli

    return run_cli(lambda: command(args), args.debug)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.predict", description=__doc__.split("\n")[0])
    ap.add_argument("images", help="a photo, or a folder of photos (searched recursively)")
    add_model_args(ap)
    ap.add_argument("--csv", "--out", dest="csv", help="write the rows to this CSV (atomic)")
    ap.add_argument("--faces", choices=["all", "largest", "none"], default="all",
                    help="classify every face, the largest, or (none) each file whole")
    ap.add_argument("--batch-size", type=int, default=64, help="with --faces none")
    ap.add_argument("--tta", action="store_true", help="average with the mirrored image")
    return run_main(ap, argv, _command)


def _table(df: pd.DataFrame, base: Path) -> str:
    """The printed rows: file, face, box, emotion, confidence (what a person reads)."""
    def rel(p: str) -> str:
        return os.path.relpath(p, base) if base.is_dir() else Path(p).name

    conf = [f"{c:.3f}" if c == c else "" for c in df.confidence]  # NaN: undecodable
    if "source" not in df:  # --faces none: whole images
        view = pd.DataFrame({"file": df.path.map(rel), "emotion": df.pred,
                             "confidence": conf, "error": df.error})
    else:
        box = [f"{x},{y},{w},{h}" if r == "face" else (f"whole {w}x{h}" if r else "")
               for x, y, w, h, r in zip(df.x, df.y, df.w, df.h, df.source)]
        face = df.face.astype(str).replace("<NA>", "-")
        view = pd.DataFrame({"file": df.path.map(rel), "face": face, "box (x,y,w,h)": box,
                             "emotion": df.pred,
                             "confidence": conf, "error": df.error})
    if not (view.error != "").any():
        view = view.drop(columns="error")
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 80, "display.max_rows", 10_000):
        return view.astype(object).fillna("").to_string(index=False)


def _command(args: argparse.Namespace) -> int:
    ckpt = checkpoint_for(args.model, args.checkpoint)
    print(f"predict: model {ckpt}")
    if args.faces == "none":
        df = predict(args.images, ckpt, None, args.batch_size, args.tta)
    else:
        df = predict_faces(args.images, ckpt, args.faces, args.tta)
    if args.csv:
        from lib.atomic import write_text

        print(f"wrote {write_text(args.csv, df.to_csv(index=False))}")
    else:
        print(_table(df, Path(args.images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
