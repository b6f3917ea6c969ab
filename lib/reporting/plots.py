"""Every figure helper of the series. Each returns a matplotlib Figure; `savefig` writes it to
figures/<profile>/<notebook>/<dataset>/<name>.png and shows it in the notebook. Figures are
made with pyplot; the backend is whatever matplotlib picked (Agg when headless).
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import font_manager
from matplotlib.ticker import MaxNLocator

from lib.evaluation import calibration, metrics
from lib.atomic import write_bytes
from lib.config import active_profile, paths

DPI = 110
STYLE = "whitegrid"
# matplotlib's own fonts that mathtext (log-axis tick labels such as 10^2) looks up by name
_BUNDLED = ("STIXGeneral", "cmr10", "DejaVu Sans Display")


def ensure_bundled_fonts() -> int:
    """Add matplotlib's bundled fonts to its font list when they are missing; the number added.

    The per-user font cache (~/.cache/matplotlib/fontlist-v*.json) is keyed by matplotlib's
    version only and is read as is, so a list built while matplotlib was still being installed
    (or by another install of that version) can lack the bundled STIX, Computer Modern and
    DejaVu Display fonts. Mathtext needs them for every log-axis tick label (10^2), and each
    lookup then wrote a `findfont: Font family ... not found` line into the report.
    """
    known = {f.name for f in font_manager.fontManager.ttflist}
    if all(name in known for name in _BUNDLED):
        return 0
    have = {f.fname for f in font_manager.fontManager.ttflist}
    added = 0
    for path in sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf")):
        if str(path) not in have:
            font_manager.fontManager.addfont(str(path))  # also clears findfont's cache
            added += 1
    return added


ensure_bundled_fonts()


def _fig(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.4, 4.0), **kw):
    """Figure and axes with the light seaborn style applied to these axes only."""
    with sns.axes_style(STYLE):
        return plt.subplots(nrows, ncols, figsize=size, **kw)


def figure_path(notebook: str, dataset: str, name: str, profile: str | None = None) -> Path:
    """figures/<profile>/<notebook>/<dataset>/<name>.png; profile defaults to the active one."""
    profile = profile or active_profile()
    for what, v in (("profile", profile), ("notebook", notebook), ("dataset", dataset),
                    ("name", name)):
        if not v or "/" in str(v) or "\\" in str(v) or str(v).startswith("."):
            raise ValueError(f"bad {what} for a figure path: {v!r}")
    return paths().figures / profile / notebook / dataset / f"{name}.png"


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (interactive or papermill), where display() reaches the
    notebook; a terminal IPython or plain Python would only print a repr."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def savefig(fig, notebook: str, dataset: str, name: str, profile: str | None = None) -> None:
    """Write `fig` atomically to figures/<profile>/<notebook>/<dataset>/<name>.png, show that
    PNG in the notebook when run in a kernel, and close the figure.

    Returns None so the cell echoes no path. Headless kernels use Agg, which shows nothing by
    itself, so the saved bytes are displayed; closing keeps an interactive inline backend from
    drawing the same figure a second time at the end of the cell.
    """
    path = figure_path(notebook, dataset, name, profile)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, bbox_inches="tight", format="png")
    png = buf.getvalue()
    write_bytes(path, png)
    if _in_kernel():
        from IPython.display import Image, display

        display(Image(data=png, format="png"))
    plt.close(fig)


def class_counts(manifest: pd.DataFrame, label: str = "label", split: str | None = "split",
                 title: str = "Images per class"):
    """Bars per class (hue = split when present); title gives the max/min imbalance ratio."""
    df = manifest[manifest[label].notna()]
    if df.empty:
        raise ValueError("class_counts: no labelled rows")
    total = df[label].value_counts()
    ratio = total.max() / total.min()
    fig, ax = _fig(size=(max(6.0, 0.8 * len(total)), 4.0))
    use_split = split in df.columns and df[split].notna().any()
    counts = (df.groupby([label, split]).size().rename("count").reset_index() if use_split
              else total.rename("count").rename_axis(label).reset_index())
    sns.barplot(data=counts, x=label, y="count", hue=split if use_split else None,
                order=list(total.index), ax=ax)
    ax.set(title=f"{title} (n={len(df)}, imbalance max/min = {ratio:.1f})", xlabel="",
           ylabel="images")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def _to_hwc(img) -> np.ndarray:
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)  # CHW -> HWC
    return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a


def image_grid(images, titles: Sequence[str] | None = None, labels=None,
               classes: Sequence[str] | None = None, n_per_class: int | None = None,
               ncols: int = 8, size: float = 1.6):
    """A grid of images (uint8 N x C x H x W tensor/array, or a list of H x W [x C] arrays).

    With `labels` and `n_per_class`: one row per class, its first n images, class as title.
    """
    n = len(images)
    idx = list(range(n))
    if labels is not None:
        labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
        if titles is None:
            titles = [str(classes[int(v)]) if classes is not None else str(v) for v in labels]
        if n_per_class:
            rows = [np.flatnonzero(labels == c)[:n_per_class] for c in np.unique(labels)]
            ncols = n_per_class
            idx = [i for r in rows for i in list(r) + [-1] * (n_per_class - len(r))]
    if not idx:
        raise ValueError("image_grid: no images")
    ncols = min(ncols, len(idx))
    nrows = -(-len(idx) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3),
                             squeeze=False)
    for ax, i in zip(axes.flat, idx + [-1] * (nrows * ncols - len(idx))):
        ax.axis("off")
        if i < 0:
            continue
        a = _to_hwc(images[i])
        vmax = 255 if a.dtype == np.uint8 else None
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=vmax)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    fig.tight_layout()
    return fig


def _runs(histories) -> dict[str, list[pd.DataFrame]]:
    """{label: [History, ...]} from one History, a list, or a mapping of either."""
    if isinstance(histories, pd.DataFrame):
        return {"run": [histories]}
    if isinstance(histories, Mapping):
        return {str(k): [v] if isinstance(v, pd.DataFrame) else list(v)
                for k, v in histories.items()}
    return {f"run {i}": [h] for i, h in enumerate(histories)}


def learning_curves(histories, title: str = "Learning curves"):
    """Train (solid) / val (dashed) loss and val macro-F1 per epoch (History DataFrames from
    train.fit); several runs (seeds) of one label share a colour."""
    fig, (ax_l, ax_f) = _fig(1, 2, size=(11, 3.8))
    colours = sns.color_palette(n_colors=max(1, len(_runs(histories))))
    for colour, (label, runs) in zip(colours, _runs(histories).items()):
        for j, h in enumerate(runs):
            x = h["epoch"] if "epoch" in h else np.arange(1, len(h) + 1)
            kw = dict(color=colour, alpha=1.0 if len(runs) == 1 else 0.6)
            tag = label if j == 0 else None
            if "train_loss" in h:
                ax_l.plot(x, h["train_loss"], "-", label=f"{tag} train" if tag else None, **kw)
            if "val_loss" in h:
                ax_l.plot(x, h["val_loss"], "--", label=f"{tag} val" if tag else None, **kw)
            if "val_macro_f1" in h:
                ax_f.plot(x, h["val_macro_f1"], "-o", ms=3, label=tag, **kw)
    ax_l.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    ax_f.set(title="validation macro-F1", xlabel="epoch", ylabel="macro-F1")
    for ax in (ax_l, ax_f):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(cm, classes: Sequence[str], title: str = "Confusion matrix (rows: true)"):
    """Colours = row-normalised rates (recall on the diagonal); cells annotated with counts."""
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    annot = np.array([[f"{c}\n{r:.0%}" for c, r in zip(crow, rrow)]
                      for crow, rrow in zip(cm, rates)])
    k = len(classes)
    fig, ax = _fig(size=(2.2 + 0.8 * k, 1.6 + 0.7 * k))
    sns.heatmap(rates, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 8})
    ax.set(title=title, xlabel="predicted", ylabel="true")
    ax.tick_params(axis="y", rotation=0)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def roc_curves(y_true, probs, classes: Sequence[str], title: str = "ROC, one-vs-rest"):
    """One ROC curve per class with its AUC in the legend (classes absent from y_true: n/a)."""
    from sklearn.metrics import roc_curve
    y, p = np.asarray(y_true), np.asarray(probs)
    auc = metrics.roc_auc_ovr(y, p)
    fig, ax = _fig(size=(5.5, 5.0))
    for j, c in enumerate(classes):
        if np.isnan(auc[j]):
            ax.plot([], [], " ", label=f"{c}: n/a (absent)")
            continue
        fpr, tpr, _ = roc_curve(y == j, p[:, j])
        ax.plot(fpr, tpr, label=f"{c}: AUC {auc[j]:.2f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set(title=f"{title} (macro AUC {np.nanmean(auc) if np.isfinite(auc).any() else np.nan:.2f})",
           xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _mean_std(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mean and std (0 for a single run) of `value` per key group, in first-seen order."""
    g = df.groupby(keys, sort=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def per_class_bars(per_class, metric: str = "f1", variant: str = "variant",
                   title: str | None = None):
    """Grouped bars of a per-class metric for several variants; error bars = std over runs.

    `per_class`: a mapping {variant: evaluate()['per_class'] or list of them (seeds)}, or a
    long DataFrame with columns class, `variant`, `metric` (several rows = several runs).
    """
    if isinstance(per_class, Mapping):
        parts = []
        for name, v in per_class.items():
            for pc in [v] if isinstance(v, pd.DataFrame) else v:
                parts.append(pc.assign(**{variant: name}))
        per_class = pd.concat(parts, ignore_index=True)
    s = _mean_std(per_class, ["class", variant], metric)
    classes, variants = list(pd.unique(s["class"])), list(pd.unique(s[variant]))
    fig, ax = _fig(size=(max(6.0, 0.9 * len(classes) * max(1, len(variants)) ** 0.5), 4.0))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        d = s[s[variant] == v].set_index("class").reindex(classes)
        ax.bar(np.arange(len(classes)) + (i - (len(variants) - 1) / 2) * width, d["mean"], width,
               yerr=d["std"], capsize=2, label=str(v))
    ax.set_xticks(np.arange(len(classes)), classes, rotation=30)
    ax.set(ylim=(0, 1.05), ylabel=metric, title=title or f"Per-class {metric}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _label(df: pd.DataFrame, label: str | Sequence[str]) -> pd.Series:
    cols = [label] if isinstance(label, str) else list(label)
    return df[cols].astype(str).agg(" / ".join, axis=1)


def metric_with_ci(df: pd.DataFrame, label: str | Sequence[str] = "variant",
                   metric: str = "macro_f1", lo: str = "f1_lo", hi: str = "f1_hi",
                   chance: float | None = None, reported: Mapping[str, float] | None = None,
                   title: str | None = None):
    """One point per row with its interval as a horizontal error bar.

    `chance` draws a vertical reference line; `reported` ({label: value}) adds the seed
    studies' numbers as hollow diamonds, visibly distinct from measured points.
    """
    d = df.assign(_label=_label(df, label).values).reset_index(drop=True)
    y = np.arange(len(d))[::-1]
    fig, ax = _fig(size=(6.4, 1.2 + 0.45 * len(d)))
    xerr = np.vstack([d[metric] - d[lo], d[hi] - d[metric]]) if lo in d and hi in d else None
    ax.errorbar(d[metric], y, xerr=xerr, fmt="o", capsize=3, label="measured (95% CI)")
    for name, value in (reported or {}).items():
        hit = np.flatnonzero(d["_label"] == name)
        if len(hit):
            ax.plot(value, y[hit[0]], "D", mfc="none", color="tab:red",
                    label="reported by study" if name == next(iter(reported)) else None)
    if chance is not None:
        ax.axvline(chance, ls=":", color="grey", label=f"chance {chance:.2f}")
    ax.set_yticks(y, d["_label"])
    ax.set(xlabel=metric, title=title or metric)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def params_vs_metric(df: pd.DataFrame, params: str = "params", metric: str = "macro_f1",
                     label: str = "model", title: str | None = None):
    """Parameters (log x) vs metric, mean ± std over runs per label, each point labelled."""
    s = _mean_std(df, [label, params], metric)
    fig, ax = _fig()
    ax.errorbar(s[params], s["mean"], yerr=s["std"], fmt="o", capsize=3)
    for _, r in s.iterrows():
        ax.annotate(f"{r[label]} (n={int(r['count'])})", (r[params], r["mean"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters (log)", ylabel=metric,
           title=title or f"{metric} vs model size")
    fig.tight_layout()
    return fig


def heatmap(matrix: pd.DataFrame, title: str = "", fmt: str = ".2f", cmap: str = "viridis",
            xlabel: str = "", ylabel: str = "", vmin: float | None = None,
            vmax: float | None = None):
    """Annotated heatmap of a DataFrame (e.g. train dataset x test dataset macro-F1)."""
    fig, ax = _fig(size=(1.5 + 1.1 * matrix.shape[1], 1.0 + 0.7 * matrix.shape[0]))
    sns.heatmap(matrix.astype(float), annot=True, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax,
                ax=ax, cbar=True)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.tight_layout()
    return fig


def curve_with_band(df: pd.DataFrame, x: str = "k", y: str = "macro_f1", hue: str | None = None,
                    reference: Mapping[str, float] | None = None, logx: bool = False,
                    title: str | None = None):
    """Mean line with a ± std band over runs (seeds) per x, one line per `hue`; `reference`
    ({name: value}) draws horizontal lines (e.g. zero-shot, chance)."""
    fig, ax = _fig()
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=False))
    for name, g in groups:
        s = _mean_std(g, [x], y).sort_values(x)
        line, = ax.plot(s[x], s["mean"], "-o", ms=4, label=None if name is None else str(name))
        ax.fill_between(s[x], s["mean"] - s["std"], s["mean"] + s["std"], alpha=0.2,
                        color=line.get_color())
    for name, value in (reference or {}).items():
        ax.axhline(value, ls=":", color="grey")
        ax.annotate(name, (ax.get_xlim()[0], value), xytext=(3, 3), textcoords="offset points",
                    fontsize=8, color="grey")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=x, ylabel=y, title=title or f"{y} vs {x} (mean ± std over runs)")
    if hue is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reliability_diagram(y_true, probs: Mapping[str, np.ndarray] | np.ndarray, bins: int = 15,
                        title: str = "Reliability"):
    """Accuracy vs confidence per bin for one or more probability sets (e.g. before/after
    temperature scaling), ECE in the legend; the diagonal is perfect calibration."""
    probs = probs if isinstance(probs, Mapping) else {"model": probs}
    fig, ax = _fig(size=(5.0, 5.0))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    for name, p in probs.items():
        r = calibration.reliability(y_true, p, bins)
        r = r[r["count"] > 0]
        ax.plot(r["confidence"], r["accuracy"], "-o", ms=4,
                label=f"{name}: ECE {calibration.ece(y_true, p, bins):.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def size_scatter(df: pd.DataFrame, x: str = "width", y: str = "height", hue: str | None = "dataset",
                 max_points: int = 5000, seed: int = 0, title: str = "Image sizes"):
    """Width vs height (log axes) coloured by `hue`; above max_points a random sample is
    drawn and the title says how many of how many are shown."""
    d = df.dropna(subset=[x, y])
    shown = d if len(d) <= max_points else d.sample(max_points, random_state=seed)
    unsized = f", {len(df) - len(d)} without size" if len(d) < len(df) else ""
    fig, ax = _fig(size=(5.5, 5.0))
    sns.scatterplot(data=shown, x=x, y=y, hue=hue if hue in shown else None, s=12, alpha=0.5,
                    ax=ax, linewidth=0)
    ax.set(xscale="log", yscale="log",
           title=(f"{title} ({len(shown)} of {len(d)} shown{unsized})" if len(shown) < len(d)
                  else f"{title} (n={len(d)}{unsized})"))
    fig.tight_layout()
    return fig
