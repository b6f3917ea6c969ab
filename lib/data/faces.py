"""Offline face detection: OpenCV's frontal-face Haar cascade (ships with opencv-python-headless).

`largest_face` works on a downscaled gray copy (fast, and Haar needs faces of at least
~24 px, so tiny 48 px crops are upscaled) and returns the largest face, squared and widened
by a margin, in the input image's coordinates. No face -> None (callers centre-crop and count).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

CASCADE = "haarcascade_frontalface_default.xml"


@lru_cache(maxsize=1)
def _cascade():
    import cv2

    cv2.setNumThreads(1)  # we parallelise over images; nested threads only thrash 2 cores
    clf = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if clf.empty():
        raise RuntimeError(f"OpenCV could not load {cv2.data.haarcascades + CASCADE}")
    return clf


def detect(gray: np.ndarray, work_side: int = 320, min_work_side: int = 96) -> np.ndarray:
    """Every detected face as float (x, y, w, h) rows in the input's coordinates, found on a
    downscaled (or, for tiny crops, upscaled), histogram-equalised copy of side `work_side`."""
    import cv2

    h, w = gray.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    if max(h, w) * scale < min_work_side:
        scale = min_work_side / max(h, w)
    small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    small = cv2.equalizeHist(np.ascontiguousarray(small, dtype=np.uint8))
    found = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    return np.asarray(found, dtype=float).reshape(-1, 4) / scale


def largest_face(gray: np.ndarray, margin: float = 0.2, work_side: int = 320,
                 min_work_side: int = 96) -> tuple[int, int, int, int] | None:
    """(left, upper, right, lower) box of the largest detected face with `margin`, or None."""
    h, w = gray.shape[:2]
    found = detect(gray, work_side, min_work_side)
    if len(found) == 0:
        return None
    x, y, fw, fh = max(found, key=lambda r: r[2] * r[3])
    side = max(fw, fh) * (1 + 2 * margin)
    cx, cy = x + fw / 2, y + fh / 2
    side = min(side, w, h)  # keep the square inside the image
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    upper = int(round(min(max(cy - side / 2, 0), h - side)))
    return left, upper, left + int(round(side)), upper + int(round(side))
