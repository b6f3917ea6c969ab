"""Canonical emotion vocabulary, label aliases, and the 3/5-level sentiment scales."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Canonical order: every dataset's classes are a subset of this, kept in this order.
EMOTIONS: tuple[str, ...] = (
    "anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "pain",
)

# Spellings met in the wild (folder names, CSV codes, other datasets) -> canonical.
ALIASES: dict[str, str] = {
    "angry": "anger", "anger": "anger", "mad": "anger",
    "contempt": "contempt", "contemptuous": "contempt",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happiness", "happiness": "happiness", "joy": "happiness",
    "neutral": "neutral", "calm": "neutral",
    "sad": "sadness", "sadness": "sadness",
    "surprise": "surprise", "surprised": "surprise",
    "pain": "pain",
}

# FER2013 competition CSV codes and RAF-DB basic codes (1-based) -> canonical.
FER2013_CODES: dict[int, str] = {
    0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise", 6: "neutral",
}
RAFDB_CODES: dict[int, str] = {
    1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral",
}


class UnknownLabelError(ValueError):
    """Raised when labels cannot be mapped onto the canonical vocabulary."""


def canonical(label: str) -> str:
    """Map one label (any case, surrounding spaces) to its canonical name, or raise."""
    key = str(label).strip().lower()
    if key not in ALIASES:
        raise UnknownLabelError(
            f"unknown emotion label {label!r}; known spellings: {sorted(ALIASES)}"
        )
    return ALIASES[key]


def canonicalize(labels: Iterable[str]) -> list[str]:
    """Map many labels at once; the error lists every unknown label, not only the first."""
    labels = list(labels)
    unknown = sorted({str(x) for x in labels if str(x).strip().lower() not in ALIASES})
    if unknown:
        raise UnknownLabelError(
            f"{len(unknown)} unknown emotion label(s): {unknown}; known spellings: {sorted(ALIASES)}"
        )
    return [ALIASES[str(x).strip().lower()] for x in labels]


def ordered(classes: Iterable[str]) -> list[str]:
    """The given canonical classes in canonical order (stable class indices across datasets)."""
    s = set(classes)
    return [e for e in EMOTIONS if e in s]


# --- sentiment scales -------------------------------------------------------------------
# One documented mapping, used for every dataset. Surprise is counted as positive (as in the
# RAF-DB sentiment work that study 001 follows); pain, absent from the basic-emotion sets,
# is strongly negative; contempt is mildly negative.
SCALE_5: dict[str, str] = {
    "anger": "strongly negative", "disgust": "strongly negative", "fear": "strongly negative",
    "pain": "strongly negative",
    "sadness": "negative", "contempt": "negative",
    "neutral": "neutral",
    "surprise": "positive",
    "happiness": "strongly positive",
}
LEVELS_5: tuple[str, ...] = (
    "strongly negative", "negative", "neutral", "positive", "strongly positive",
)
SCALE_3: dict[str, str] = {
    e: ("negative" if "negative" in v else "positive" if "positive" in v else "neutral")
    for e, v in SCALE_5.items()
}
LEVELS_3: tuple[str, ...] = ("negative", "neutral", "positive")


def scale_map(levels: int) -> tuple[dict[str, str], tuple[str, ...]]:
    """The emotion -> level mapping and level order for a 3- or 5-level scale."""
    if levels == 3:
        return SCALE_3, LEVELS_3
    if levels == 5:
        return SCALE_5, LEVELS_5
    raise ValueError(f"sentiment scales have 3 or 5 levels, not {levels}")


def to_scale(classes: Sequence[str], levels: int) -> tuple[np.ndarray, list[str]]:
    """Matrix M (n_classes x n_levels) so that `probs @ M` gives level probabilities.

    Only the levels that the classes reach are kept, in scale order.
    """
    mapping, order = scale_map(levels)
    used = [lv for lv in order if any(mapping[c] == lv for c in classes)]
    m = np.zeros((len(classes), len(used)), dtype=np.float64)
    for i, c in enumerate(classes):
        m[i, used.index(mapping[c])] = 1.0
    return m, used
