"""Classical baselines with a fit / predict_proba interface on uint8 image datasets.

KNNPixels   study 003's kNN (k=101) on flattened, standardised pixels, optional PCA.
KNNChosenK  the same with k chosen on a validation set.
HOGLinear   HOG features (OpenCV's HOGDescriptor; skimage is not installed) + a linear SVM
            or logistic regression.

Datasets are any object with `images` (uint8 N,C,H,W tensor), `labels` and `classes`.
`predict_proba` returns (N, K) with K = len(train classes), in that class order; a class
absent from the training set gets a zero column.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC


def _images(ds, size: int | None, channels: int | None) -> torch.Tensor:
    """The dataset's images as uint8 N,C,H,W, optionally resized / reduced to one channel."""
    x = ds.images
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
        raise TypeError("classical baselines need ds.images as a uint8 (N, C, H, W) tensor")
    return _prep(x.cpu(), size, channels)


def _prep(x: torch.Tensor, size: int | None, channels: int | None) -> torch.Tensor:
    if channels == 1 and x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return x


class _Base:
    """Shared bookkeeping: class list, label checks, and mapping sklearn columns to K."""

    def _fit_labels(self, ds) -> np.ndarray:
        y = np.asarray(torch.as_tensor(ds.labels).cpu(), dtype=np.int64)
        self.classes_ = list(getattr(ds, "classes", range(int(y.max()) + 1)))
        if len(y) != len(ds.images):
            raise ValueError(f"{len(ds.images)} images but {len(y)} labels")
        if y.min() < 0 or y.max() >= len(self.classes_):
            raise ValueError(f"labels outside [0, {len(self.classes_)})")
        if len(np.unique(y)) < 2:
            raise ValueError("need at least two classes in the training set")
        return y

    def _full_proba(self, p: np.ndarray, seen: np.ndarray) -> np.ndarray:
        out = np.zeros((p.shape[0], len(self.classes_)), dtype=np.float64)
        out[:, seen] = p
        return out

    def predict(self, ds) -> np.ndarray:
        return self.predict_proba(ds).argmax(1)


class KNNPixels(_Base):
    """kNN on standardised pixels (k capped at the training size); PCA first if `pca` is set."""

    def __init__(self, k: int = 101, pca: int | None = None, size: int | None = None,
                 channels: int | None = None, weights: str = "uniform", seed: int = 0):
        self.k, self.pca, self.size, self.channels = k, pca, size, channels
        self.weights, self.seed = weights, seed

    def _x(self, ds) -> np.ndarray:
        x = _images(ds, self.size, self.channels)
        return x.reshape(len(x), -1).numpy().astype(np.float32) / 255.0

    def fit(self, train_ds) -> "KNNPixels":
        y = self._fit_labels(train_ds)
        x = self._x(train_ds)
        k = min(self.k, len(y))
        if k < self.k:
            print(f"KNNPixels: k={self.k} > {len(y)} training images; using k={k}")
        steps = [StandardScaler()]
        if self.pca:
            steps.append(PCA(n_components=min(self.pca, *x.shape), random_state=self.seed))
        steps.append(KNeighborsClassifier(n_neighbors=k, weights=self.weights))
        self.model_ = make_pipeline(*steps).fit(x, y)
        return self

    def predict_proba(self, ds) -> np.ndarray:
        p = self.model_.predict_proba(self._x(ds))
        return self._full_proba(p, self.model_.classes_)


KS = (1, 3, 5, 11, 21, 51, 101)  # the k a validation-chosen kNN tries


class KNNChosenK(KNNPixels):
    """KNNPixels whose k is chosen on a validation set (macro-F1; ties: the smaller k) from
    `ks`, with one neighbour search for every k: study 003's k = 101 suits its 9,600 training
    images, not a set of 837. `k_` is the chosen k, `val_scores_` every k's score."""

    def __init__(self, val_ds, ks: tuple[int, ...] = KS, **kw):
        super().__init__(k=max(ks), **kw)
        self.val_ds, self.ks = val_ds, tuple(sorted(ks))

    def _by_k(self, ds) -> dict[int, np.ndarray]:
        """{k: (N, K) vote shares of the k nearest training images} for every k tried."""
        knn = self.model_[-1]
        x = self.model_[:-1].transform(self._x(ds))
        idx = knn.kneighbors(x, n_neighbors=knn.n_neighbors, return_distance=False)
        votes = np.eye(len(self.classes_))[self.train_y_[idx]]  # (N, kmax, K)
        cum = votes.cumsum(axis=1)
        return {k: cum[:, min(k, idx.shape[1]) - 1] / min(k, idx.shape[1]) for k in self.ks}

    def fit(self, train_ds) -> "KNNChosenK":
        from sklearn.metrics import f1_score

        super().fit(train_ds)
        self.train_y_ = self._fit_labels(train_ds)
        y = np.asarray(torch.as_tensor(self.val_ds.labels).cpu(), dtype=np.int64)
        self.val_scores_ = {k: float(f1_score(y, p.argmax(1), average="macro",
                                              labels=range(len(self.classes_))))
                            for k, p in self._by_k(self.val_ds).items()}
        self.k_ = max(self.ks, key=lambda k: (self.val_scores_[k], -k))
        return self

    def predict_proba(self, ds) -> np.ndarray:
        return self._by_k(ds)[self.k_]


def hog_features(x: torch.Tensor, cell: int = 8, bins: int = 9) -> np.ndarray:
    """HOG (16x16 blocks of 2x2 cells, stride one cell, L2-Hys) per image, on grayscale.

    The side must be a multiple of `cell` and at least 2 cells; use `size` to resize.
    """
    n, c, h, w = x.shape
    if h % cell or w % cell or h < 2 * cell or w < 2 * cell:
        raise ValueError(f"HOG needs sides that are multiples of {cell} and >= {2 * cell}; "
                         f"got {h}x{w} (pass size=...)")
    hog = cv2.HOGDescriptor((w, h), (2 * cell, 2 * cell), (cell, cell), (cell, cell), bins)
    gray = _prep(x.cpu(), None, 1)[:, 0].numpy()
    return np.stack([hog.compute(np.ascontiguousarray(im)).ravel() for im in gray])


class HOGLinear(_Base):
    """HOG + linear classifier. clf='svm': LinearSVC; probabilities from
    CalibratedClassifierCV (sigmoid, 3-fold) when every class has >= 3 images, else the
    softmax of the decision function (reported; monotone in the score, not calibrated).
    clf='logreg': multinomial logistic regression (probabilities native)."""

    def __init__(self, clf: str = "svm", size: int = 64, C: float = 0.1, calibrate: bool = True,
                 seed: int = 0):
        if clf not in ("svm", "logreg"):
            raise ValueError(f"clf must be 'svm' or 'logreg', got {clf!r}")
        self.clf, self.size, self.C, self.calibrate, self.seed = clf, size, C, calibrate, seed

    def _x(self, ds) -> np.ndarray:
        return hog_features(_images(ds, self.size, 1))

    def fit(self, train_ds) -> "HOGLinear":
        y = self._fit_labels(train_ds)
        x = self._x(train_ds)
        if self.clf == "logreg":
            est = LogisticRegression(C=self.C, max_iter=2000)
        else:
            # dual="auto": primal when n > features (fer2013), dual otherwise; 1,000 iterations
            # (the default) left six_emotions unconverged (a ConvergenceWarning per fold)
            est = LinearSVC(C=self.C, random_state=self.seed, dual="auto", max_iter=10_000)
            fewest = np.bincount(y)[np.unique(y)].min()
            if self.calibrate and fewest >= 3:
                est = CalibratedClassifierCV(est, method="sigmoid", cv=3)
            elif self.calibrate:
                print(f"HOGLinear: smallest class has {fewest} < 3 images; SVM probabilities "
                      "from the softmax of the decision function instead of calibration")
        self.model_ = make_pipeline(StandardScaler(), est).fit(x, y)
        return self

    def predict_proba(self, ds) -> np.ndarray:
        x = self._x(ds)
        if hasattr(self.model_, "predict_proba") and (
                self.clf == "logreg" or isinstance(self.model_[-1], CalibratedClassifierCV)):
            p = self.model_.predict_proba(x)
        else:
            d = self.model_.decision_function(x)
            d = d[:, None] * np.array([0.0, 1.0]) if d.ndim == 1 else d  # binary: sigmoid
            d = d - d.max(1, keepdims=True)
            p = np.exp(d) / np.exp(d).sum(1, keepdims=True)
        return self._full_proba(p, self.model_.classes_)
