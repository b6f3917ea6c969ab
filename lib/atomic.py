"""The one atomic write: a temporary file beside the target, then os.replace.

A reader never sees a half-written result, record or checkpoint; a writer killed midway
leaves only its own `.<name>.<pid>.tmp`, which the next write of the same target removes.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_with(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Call `writer(tmp_path)` then move the temporary file onto `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        try:
            if not _alive(int(stale.name.rsplit(".", 2)[-2])):
                stale.unlink(missing_ok=True)
        except ValueError:
            continue
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write `data` to `path`."""
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write `text` (UTF-8) to `path`."""
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover from an earlier failed write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
