"""The one progress-bar choice: widgets in interactive Jupyter, text when run headless.

The runner sets FER_PLAIN_PROGRESS=1 so that papermill's log and the executed reports carry
readable text bars instead of widget placeholders.
"""
from __future__ import annotations

import os

if os.environ.get("FER_PLAIN_PROGRESS"):
    from tqdm.std import tqdm  # noqa: F401
else:
    from tqdm.auto import tqdm  # noqa: F401
