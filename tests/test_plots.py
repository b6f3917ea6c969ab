"""lib.reporting.plots: every helper runs on tiny inputs; savefig writes a real PNG under
figures/<profile>/ and shows it when run in a kernel."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib import config  # noqa: E402
from lib.evaluation import calibration, metrics
from lib.reporting import plots

CLASSES = ["anger", "happiness", "sadness"]
rng = np.random.default_rng(0)
Y = rng.integers(0, 3, 60)
P = calibration.softmax(rng.normal(size=(60, 3)) + 2 * np.eye(3)[Y])


@pytest.fixture(autouse=True)
def figdir(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setattr(config, "_ACTIVE_PROFILE", None)  # restored: get_profile sets it
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
        Y, {"before": P, "after": calibration.apply_temperature(np.log(P), 2.0)}),
    "sizes": lambda: plots.size_scatter(pd.DataFrame({
        "width": [48, 350, 160, np.nan, 300], "height": [48, 350, 120, 10, 200],
        "dataset": ["fer", "fe", "fe", "fe", "six"]}), max_points=3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_helper_makes_png(name, figdir):
    fig = CASES[name]()
    assert isinstance(fig, matplotlib.figure.Figure)
    assert plots.savefig(fig, "00_eda", "fer2013", name) is None  # a cell echoes no path
    path = figdir / config.default_profile() / "00_eda" / "fer2013" / f"{name}.png"
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)  # closed: an inline backend won't draw it twice
    assert not list(figdir.rglob("*.tmp"))  # the atomic write left no temporary file


def test_figures_follow_the_active_profile(figdir):
    config.get_profile("smoke")
    assert config.active_profile() == "smoke"
    plots.savefig(CASES["heatmap"](), "03_capacity", "six_emotions", "cross")
    plots.savefig(CASES["heatmap"](), "03_capacity", "six_emotions", "cross", profile="gpu")
    assert (figdir / "smoke" / "03_capacity" / "six_emotions" / "cross.png").is_file()
    assert (figdir / "gpu" / "03_capacity" / "six_emotions" / "cross.png").is_file()
    assert plots.figure_path("a", "b", "c", profile="cpu") == figdir / "cpu" / "a" / "b" / "c.png"


def test_savefig_shows_the_saved_png_in_a_kernel(figdir, monkeypatch):
    import IPython.display

    assert not plots._in_kernel()  # pytest is no kernel
    shown = []
    monkeypatch.setattr(plots, "_in_kernel", lambda: True)
    monkeypatch.setattr(IPython.display, "display", shown.append)
    plots.savefig(CASES["roc"](), "01_baseline", "fer2013", "roc", profile="cpu")
    (img,) = shown
    assert isinstance(img, IPython.display.Image) and img.format == "png"
    assert img.data == (figdir / "cpu" / "01_baseline" / "fer2013" / "roc.png").read_bytes()
    monkeypatch.setattr(plots, "_in_kernel", lambda: False)
    plots.savefig(CASES["roc"](), "01_baseline", "fer2013", "roc", profile="cpu")
    assert len(shown) == 1  # plain Python: saved only


def test_missing_bundled_fonts_are_added(monkeypatch):
    """A font list without matplotlib's own fonts (a stale per-user cache) made every log axis
    log findfont warnings into the reports; the import of lib.reporting.plots adds them back."""
    from matplotlib import font_manager

    fm = font_manager.fontManager
    bundled = str(Path(matplotlib.get_data_path()))
    monkeypatch.setattr(fm, "ttflist", [f for f in fm.ttflist if not f.fname.startswith(bundled)])
    fm._findfont_cached.cache_clear()
    try:
        with pytest.raises(ValueError):
            font_manager.findfont("STIXGeneral", fallback_to_default=False)
        assert plots.ensure_bundled_fonts() > 0
        assert font_manager.findfont("STIXGeneral", fallback_to_default=False).startswith(bundled)
        assert plots.ensure_bundled_fonts() == 0  # nothing missing: nothing added
    finally:
        fm._findfont_cached.cache_clear()  # the restored list must not see these lookups


def test_titles_carry_the_numbers():
    fig = CASES["class_counts"]()
    assert "imbalance max/min = 3.0" in fig.axes[0].get_title()
    fig = CASES["sizes"]()
    assert "3 of 4 shown, 1 without size" in fig.axes[0].get_title()
    fig = CASES["roc"]()
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("sadness: n/a" in t for t in labels)
    fig = CASES["reliability"]()
    ece = calibration.ece(Y, P)
    assert any(f"ECE {ece:.3f}" in t for t in fig.axes[0].get_legend_handles_labels()[1])


def test_savefig_rejects_bad_names():
    fig, _ = plt.subplots()
    with pytest.raises(ValueError):
        plots.savefig(fig, "00_eda", "fer2013", "../escape")
    with pytest.raises(ValueError):
        plots.savefig(fig, "00_eda", "fer2013", "ok", profile="../cpu")
