"""Classical baselines (kNN on pixels, HOG + linear) on a small separable synthetic set."""
import types

import numpy as np
import pytest
import torch

from lib.models import classical

K = 3


def make_ds(n, seed, size=32, c=1, k=K, classes=None):
    """Class 0: horizontal stripes, 1: vertical stripes, 2: a centred blob; plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    r = torch.arange(size).float()
    patterns = [
        (torch.sin(r / 2)[:, None].expand(size, size)),
        (torch.sin(r / 2)[None, :].expand(size, size)),
        torch.exp(-((r[:, None] - size / 2) ** 2 + (r[None, :] - size / 2) ** 2) / (2 * size))
        * 2 - 1,
    ]
    base = torch.stack(patterns)[y].unsqueeze(1).expand(n, c, size, size)
    x = 128 + 70 * base + 40 * torch.randn(n, c, size, size, generator=g)
    return types.SimpleNamespace(images=x.clamp(0, 255).to(torch.uint8), labels=y,
                                 classes=classes or [f"c{i}" for i in range(k)])


TRAIN, TEST = make_ds(450, 0), make_ds(90, 1)  # k=101 needs a few hundred images


def macro_f1(ds, p):
    from sklearn.metrics import f1_score
    return f1_score(ds.labels.numpy(), p.argmax(1), average="macro")


@pytest.mark.parametrize("model", [
    classical.KNNPixels(k=101),
    classical.KNNPixels(k=15, pca=20, size=16),
    classical.HOGLinear("svm"),
    classical.HOGLinear("logreg", size=32),
])
def test_baselines_beat_chance(model):
    p = model.fit(TRAIN).predict_proba(TEST)
    assert p.shape == (90, K) and np.allclose(p.sum(1), 1)
    assert macro_f1(TEST, p) > 0.7  # chance is ~1/3
    assert np.array_equal(model.predict(TEST), p.argmax(1))


def test_rgb_input_and_missing_class_column():
    four = ["a", "b", "c", "d"]  # class 3 never appears in training
    tr, te = make_ds(120, 2, c=3, classes=four), make_ds(30, 3, c=3, classes=four)
    for m in (classical.KNNPixels(k=5), classical.HOGLinear("logreg")):
        p = m.fit(tr).predict_proba(te)
        assert p.shape == (30, 4) and np.all(p[:, 3] == 0)


def test_knn_caps_k_and_svm_falls_back_to_softmax(capsys):
    small = types.SimpleNamespace(images=TRAIN.images[:8],
                                  labels=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
                                  classes=TRAIN.classes)
    classical.KNNPixels(k=101).fit(small)
    assert "using k=8" in capsys.readouterr().out
    p = classical.HOGLinear("svm").fit(small).predict_proba(TEST)
    assert "softmax" in capsys.readouterr().out
    assert p.shape == (90, K) and np.allclose(p.sum(1), 1)


def test_errors():
    with pytest.raises(ValueError, match="multiples of 8"):
        classical.hog_features(torch.zeros(2, 1, 20, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match="clf"):
        classical.HOGLinear("tree")
    one = types.SimpleNamespace(images=TRAIN.images[:5], labels=torch.zeros(5, dtype=torch.long),
                                classes=TRAIN.classes)
    with pytest.raises(ValueError, match="two classes"):
        classical.KNNPixels().fit(one)
    with pytest.raises(TypeError, match="uint8"):
        classical.KNNPixels().fit(types.SimpleNamespace(images=TRAIN.images.float(),
                                                       labels=TRAIN.labels, classes=TRAIN.classes))


def test_knn_chooses_k_on_validation_with_one_search():
    val = make_ds(90, 5)
    m = classical.KNNChosenK(val, ks=(1, 5, 101)).fit(TRAIN)
    assert set(m.val_scores_) == {1, 5, 101} and m.k_ in (1, 5, 101)
    assert m.val_scores_[m.k_] == max(m.val_scores_.values())
    for k in (1, 5, 101):  # each k's votes are sklearn's kNN with that k
        ref = classical.KNNPixels(k=k).fit(TRAIN).predict_proba(TEST)
        np.testing.assert_allclose(m._by_k(TEST)[k], ref)
    np.testing.assert_allclose(m.predict_proba(TEST), m._by_k(TEST)[m.k_])

