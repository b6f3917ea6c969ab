"""The outside peer: class mapping and input conversion always; the model when installed."""
import types

import numpy as np
import pytest
import torch

from lib import data
from lib.analysis import domain, peer

needs_peer = pytest.mark.skipif(not peer.available(), reason=f"peer not installed: {peer.INSTALL}")


def test_classes_are_canonical_in_model_order():
    assert peer.CLASSES == ["anger", "disgust", "fear", "happiness", "sadness", "surprise",
                            "neutral"]


def test_map_proba_restricts_to_shared_classes_and_renormalises():
    raw = np.array([[0.1, 0.0, 0.1, 0.4, 0.1, 0.1, 0.2],
                    [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5]])
    six = ["anger", "disgust", "fear", "happiness", "sadness", "pain"]
    p, shared = peer.map_proba(raw, six)
    assert shared == ["anger", "disgust", "fear", "happiness", "sadness"]  # no pain
    np.testing.assert_allclose(p[0], [1 / 7, 0, 1 / 7, 4 / 7, 1 / 7])
    np.testing.assert_allclose(p[1], np.full(5, 0.2))  # no mass on shared classes: uniform
    ck = ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]
    p, shared = peer.map_proba(raw, ck)
    assert "contempt" not in shared and p.shape == (2, 6)
    with pytest.raises(ValueError):
        peer.map_proba(raw, ["pain", "contempt"])


def test_to_input_gray_64_in_minus_one_one():
    x = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    x[1] = 255
    x[2, 0] = 255  # pure red -> luma 0.299
    out = peer.to_input(x)
    assert out.shape == (3, 64, 64, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], -1.0)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[2], (0.299 - 0.5) * 2, atol=1e-5)
    assert peer.to_input(torch.zeros(1, 1, 64, 64, dtype=torch.uint8)).shape == (1, 64, 64, 1)
    with pytest.raises(TypeError):
        peer.to_input(torch.zeros(1, 1, 8, 8))


def test_not_installed_is_reported_not_crashing(monkeypatch):
    monkeypatch.setattr(peer, "model_file", lambda: None)
    assert peer.available() is False
    peer.load.cache_clear()
    with pytest.raises(ImportError, match="pip install"):
        peer.load()


@needs_peer
def test_peer_predicts_probabilities_over_shared_classes():
    g = torch.Generator().manual_seed(0)
    ds = types.SimpleNamespace(images=torch.randint(0, 256, (5, 1, 48, 48), generator=g,
                                                    dtype=torch.uint8),
                               labels=torch.tensor([0, 1, 2, 0, 1]),
                               classes=["anger", "happiness", "pain"])
    p = peer.predict_proba(ds)
    assert p.shape == (5, 2) and np.allclose(p.sum(1), 1)
    ev = peer.evaluate(ds)
    assert ev.shared == ["anger", "happiness"] and ev.excluded == {"pain": 1}


@needs_peer
def test_peer_beats_chance_on_real_fer2013(real_data_root):
    """The FER2013-trained model must be well above chance on FER2013 test faces: a wrong
    input scaling, channel order or class order would pull it to chance."""
    m = data.load_manifest("fer2013")  # no audit: listing only, fast
    m = m[(m["split"] == "test") & m["label"].notna() & (m["label"] != "disgust")]
    ds = data.ImageTensors(data.subsample(m, 8, seed=0), size=48, channels=1, progress=False)
    ev = peer.evaluate(ds)
    assert ev.report["n"] == 48 and ev.shared == domain.shared_classes(peer.CLASSES, ds.classes)
    assert ev.report["accuracy"] > 0.4 and ev.report["macro_f1"] > 0.3, ev.report["accuracy"]
