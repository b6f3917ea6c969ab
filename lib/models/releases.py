"""Where released models live and how a release name resolves to its checkpoint.

Below lib.predict (which resolves names) and lib.release (which writes releases), so that
prediction never loads the store.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lib import config

DEFAULT = "six_emotions"  # the release lib.predict / lib.demo use without --model


class ReleaseError(LookupError):
    """No release can be made or found; the message says what is missing and what to run."""


def models_dir() -> Path:
    """Where releases live: $FER_MODELS_DIR, else <project root>/models (committed)."""
    return Path(os.environ.get("FER_MODELS_DIR") or config.ROOT / "models")


def of_record(record: Path) -> Path | None:
    """The release published from this very store record (models/<dataset>.json names it),
    or None: a fresh clone has no checkpoints, but a released fit's weights are committed."""
    info_file = models_dir() / f"{record.parent.name}.json"
    if not info_file.is_file():
        return None
    info = json.loads(info_file.read_text())
    # the record name carries the fit's key, so a republished release no longer matches
    same = info.get("record") == f"{record.parent.parent.name}/{record.parent.name}/{record.name}"
    return models_dir() / info["file"] if same else None


def released(name: str | None = None) -> Path:
    """The checkpoint of release `name` (a dataset name; '.pt' optional); without a name
    models/six_emotions.pt when present, else the first models/*.pt."""
    d = models_dir()
    have = sorted(d.glob("*.pt"))
    if name is None:
        if (d / f"{DEFAULT}.pt").is_file():
            return d / f"{DEFAULT}.pt"
        if have:
            return have[0]
        raise ReleaseError(f"no released model in {d}; make one with `python -m lib.release "
                           f"--profile cpu --dataset {DEFAULT}` or pass --checkpoint FILE")
    p = d / (name if name.endswith(".pt") else f"{name}.pt")
    if not p.is_file():
        names = ", ".join(h.stem for h in have) or "none"
        raise ReleaseError(f"no release {Path(name).stem!r} in {d} (have: {names}); "
                           f"`python -m lib.release --dataset {Path(name).stem}` makes it")
    return p
