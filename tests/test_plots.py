"""lib.plots: every helper runs on tiny inputs and savefig writes a real PNG under figures/."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib import metrics, plots  # noqa: E402

CLASSES = ["anger", "happiness", "sadness"]
rng = np.random.default_rng(0)
Y = rng.integers(0, 3, 60)
P = metrics.softmax(rng.normal(size=(60, 3)) + 2 * np.eye(3)[Y])


@pytest.fixture(autouse=True)
def figdir(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_FIGURES_DIR", str(tmp_path / "figures"))
    yield tmp_path / "figures"
    plt.close("all")


def _history(offset=0.0):
    return pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.2, 0.9, 0.7],
                         "val_loss": [1.3, 1.1, 1.05], "val_macro_f1": np.array([0.3, 0.4, 0.45]) + offset})


def _seeded(values):
    """Rows: variant/model x seed with macro-F1 and CI columns."""
    rows = []
    for i, (name, params) in enumerate(values):
        for seed in range(3):
            f = 0.3 + 0.1 * i + 0.02 * seed
            rows.append(dict(variant=name, model=name, params=params, seed=seed, k=seed * 5,
                             macro_f1=f, f1_lo=f - 0.05, f1_hi=f + 0.05))
    return pd.DataFrame(rows)


CASES = {
    "class_counts": lambda: plots.class_counts(pd.DataFrame({
        "label": ["anger"] * 6 + ["happiness"] * 3 + ["sadness"] * 2 + [None],
        "split": (["train", "test"] * 6)})),
    "image_grid_tensor": lambda: plots.image_grid(
        torch.randint(0, 255, (7, 1, 12, 12), dtype=torch.uint8), labels=torch.tensor(
            [0, 0, 1, 1, 1, 2, 0]), classes=CLASSES, n_per_class=2),
    "image_grid_list": lambda: plots.image_grid(
        [np.zeros((10, 14, 3), np.uint8), np.full((8, 8), 200, np.uint8)], titles=["a", "b"]),
    "learning_curves": lambda: plots.learning_curves(
        {"small_cnn": [_history(), _history(0.05)], "wider_cnn": _history(0.1)}),
    "learning_one": lambda: plots.learning_curves(_history()),
    "confusion": lambda: plots.confusion_matrix(
        metrics.evaluate(Y, P, CLASSES)["confusion"], CLASSES),
    "roc": lambda: plots.roc_curves(np.where(Y == 2, 0, Y), P, CLASSES),  # class 2 absent
    "per_class": lambda: plots.per_class_bars(
        {"none": [metrics.evaluate(Y, P, CLASSES)["per_class"]] * 2,
         "standard": metrics.evaluate(Y[::-1], P, CLASSES)["per_class"]}),
    "metric_ci": lambda: plots.metric_with_ci(
        _seeded([("none", 1e5), ("standard", 1e5)]).query("seed == 0"), chance=1 / 3,
        reported={"standard": 0.25}),
    "params": lambda: plots.params_vs_metric(_seeded([("small_cnn", 4e5), ("resnet18", 1.1e7)])),
    "heatmap": lambda: plots.heatmap(pd.DataFrame([[0.5, 0.2], [0.1, 0.6]], index=["fer", "six"],
                                                  columns=["fer", "six"]), title="cross"),
    "band": lambda: plots.curve_with_band(
        pd.concat([_seeded([("a", 1)]).assign(k=[1, 5, 10]), _seeded([("b", 1)]).assign(k=[1, 5, 10])]),
        x="k", hue="variant", reference={"zero-shot": 0.2}),
    "reliability": lambda: plots.reliability_diagram(
        Y, {"before": P, "after": metrics.apply_temperature(np.log(P), 2.0)}),
    "sizes": lambda: plots.size_scatter(pd.DataFrame({
        "width": [48, 350, 160, np.nan, 300], "height": [48, 350, 120, 10, 200],
        "dataset": ["fer", "fe", "fe", "fe", "six"]}), max_points=3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_helper_makes_png(name, figdir):
    fig = CASES[name]()
    assert isinstance(fig, matplotlib.figure.Figure)
    path = plots.savefig(fig, "00_eda", "fer2013", name)
    assert path == figdir / "00_eda" / "fer2013" / f"{name}.png"
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.fignum_exists(fig.number)  # savefig does not close the figure
    assert not list(figdir.rglob("*.tmp.png"))


def test_titles_carry_the_numbers():
    fig = CASES["class_counts"]()
    assert "imbalance max/min = 3.0" in fig.axes[0].get_title()
    fig = CASES["sizes"]()
    assert "3 of 4 shown, 1 without size" in fig.axes[0].get_title()
    fig = CASES["roc"]()
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("sadness: n/a" in t for t in labels)
    fig = CASES["reliability"]()
    ece = metrics.ece(Y, P)
    assert any(f"ECE {ece:.3f}" in t for t in fig.axes[0].get_legend_handles_labels()[1])


def test_savefig_rejects_bad_names():
    fig, _ = plt.subplots()
    with pytest.raises(ValueError):
        plots.savefig(fig, "00_eda", "fer2013", "../escape")
