"""Predict emotions for new images with a saved checkpoint.

    python -m lib.predict FOLDER --checkpoint CKPT [--out predictions.csv] [--tta] [--debug]

Preprocessing equals training: files are decoded by lib.data_tensors.decode_files (the
decoder behind ImageTensors: EXIF rotation, L/RGB conversion, shorter side to the
checkpoint's `img_size`, centre crop, optional face crop) and batches go through
lib.train.predict_proba, i.e. lib.models.preprocess with the checkpoint's fer_cfg.
Checkpoints are written by lib.models.save_checkpoint and read by lib.models.load_checkpoint.
Undecodable files (dangling symlinks too) are not dropped: they get a row with an `error`
naming the file and no probabilities, and are counted in a printed summary. A checkpoint
that cannot be used is a `CheckpointError` naming the file; the command line prints it as
one line and exits 1 (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from lib import config, imageio
from lib.data_readers import is_listed_image
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
    from lib.data_tensors import decode_files

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
    from lib.train import predict_proba

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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.predict", description=__doc__.split("\n")[0])
    ap.add_argument("images", help="a folder of images (searched recursively) or one image")
    ap.add_argument("--checkpoint", required=True, help="file written by save_checkpoint")
    ap.add_argument("--out", help="write the predictions to this CSV (atomic)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tta", action="store_true", help="average with the mirrored image")
    ap.add_argument("--face-crop", choices=["auto", "yes", "no"], default="auto",
                    help="auto = as the model was trained")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = ap.parse_args(argv)
    from lib.data import run_cli

    return run_cli(lambda: _command(args), args.debug)


def _command(args: argparse.Namespace) -> int:
    face = {"auto": None, "yes": True, "no": False}[args.face_crop]
    df = predict(args.images, args.checkpoint, face, args.batch_size, args.tta)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        df.to_csv(tmp, index=False)
        os.replace(tmp, out)
        print(f"wrote {out}")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(df.to_string(index=False, float_format="%.3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
