"""Canonical labels, aliases and sentiment scales."""
import numpy as np
import pytest

from lib.data import labels


def test_aliases_case_insensitive():
    assert labels.canonicalize(["HAPPINESS", "happy", " Angry ", "sad"]) == [
        "happiness", "happiness", "anger", "sadness"]


def test_unknown_labels_listed():
    with pytest.raises(labels.UnknownLabelError, match="'bored'.*'meh'"):
        labels.canonicalize(["happy", "bored", "meh"])


def test_ordered_is_canonical():
    assert labels.ordered(["sadness", "anger", "pain"]) == ["anger", "sadness", "pain"]


@pytest.mark.parametrize("levels", [3, 5])
def test_scales_cover_every_emotion(levels):
    m, used = labels.to_scale(list(labels.EMOTIONS), levels)
    assert m.shape == (len(labels.EMOTIONS), levels) and np.all(m.sum(1) == 1)
    assert len(used) == levels


def test_scale_collapses_probabilities():
    m, used = labels.to_scale(["anger", "happiness", "neutral"], 3)
    p = np.array([[0.2, 0.7, 0.1]]) @ m
    assert used == ["negative", "neutral", "positive"]
    np.testing.assert_allclose(p, [[0.2, 0.1, 0.7]])
