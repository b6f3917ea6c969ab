"""The one progress-bar choice: widgets in interactive Jupyter, one line per bar when headless.

The runner sets FER_PLAIN_PROGRESS=1. Text bars redrawn per epoch or per batch of files piled
up as walls of stderr in the executed reports, so headless bars draw nothing while they run
and print one summary line when they close: description, count, elapsed time, last postfix.
"""
from __future__ import annotations

import os
import sys

from tqdm.std import tqdm as _text_tqdm


class _Nowhere:
    """A file that drops what tqdm writes (its redraws and the final newline)."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


class OneLineTqdm(_text_tqdm):
    """tqdm that is silent per iteration and prints one line to stdout on close."""

    def __init__(self, *args, **kwargs):
        kwargs["file"] = _Nowhere()
        self._started = 0
        super().__init__(*args, **kwargs)

    def __iter__(self):
        # counted here, not from self.n: tqdm updates n lazily, and a loop left with `break`
        # (early stopping) never reports its last iteration
        for obj in super().__iter__():
            self._started += 1
            yield obj

    def summary(self) -> str:
        """'fit: 6/30 ep in 01:23, loss=0.912, val_f1=0.412' (count and unit as the bar's)."""
        d = self.format_dict
        n = max(self.n, self._started)
        scale = bool(d.get("unit_scale"))
        fmt = (lambda v: self.format_sizeof(v, divisor=d.get("unit_divisor", 1000))) if scale \
            else str
        count = f"{fmt(n)}/{fmt(self.total)}" if self.total else fmt(n)
        desc = f"{self.desc.rstrip(': ')}: " if self.desc else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        return (f"{desc}{count} {self.unit} in {self.format_interval(d['elapsed'])}"
                f"{postfix}")

    def close(self) -> None:
        if self.disable:  # disabled by the caller, or already closed: no line
            return super().close()
        line = self.summary()
        super().close()
        print(line, file=sys.stdout, flush=True)


if os.environ.get("FER_PLAIN_PROGRESS"):
    tqdm = OneLineTqdm
else:
    from tqdm.auto import tqdm  # noqa: F401
