"""The series runs end to end in the smoke profile and records what it claims to.

Notebooks run through the real runner (papermill) into temporary results/figures/reports
folders, on a small generated dataset and, when the shared data is present, on six_emotions.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from lib import config, run

NOTEBOOKS = run.notebooks()
SHARED = Path(os.environ.get("FER_DATA_ROOT", config.ROOT.parent / "shared" / "data"))


def test_series_exists():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:2] == ["00_eda", "01_baseline"], names


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_is_output_free_and_well_formed(nb: Path):
    cells = json.loads(nb.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, f"{nb.name}: code cells {dirty} carry outputs; strip them"
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{nb.name}: needs exactly one cell tagged `parameters`"
    src = "".join(params[0]["source"])
    assert "PROFILE" in src and "DATASET" in src
    heads = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
             and "".join(c["source"]).lstrip().startswith("## Findings")]
    assert heads, f"{nb.name}: no '## Findings' section"
    tail = cells[heads[-1] + 1:]  # generated findings: only code that calls lib.reporting.findings
    assert all(c["cell_type"] == "code" and "findings." in "".join(c["source"]) for c in tail), \
        f"{nb.name}: the Findings section must be prose-free code calling lib.reporting.findings, or last"


def _isolate(monkeypatch, tmp: Path) -> None:
    """Send every artefact of a test run to tmp, never into the committed folders."""
    for var, sub in [("FER_RESULTS_DIR", "results"), ("FER_FIGURES_DIR", "figures"),
                     ("FER_REPORTS_DIR", "reports"), ("FER_RUNS_DIR", "runs")]:
        monkeypatch.setenv(var, str(tmp / sub))


# experiments each notebook must record, and for some the rows per experiment and split in
# the smoke profile (1 seed): a notebook that silently skips an arm fails here
EXPECTED = {
    "00_eda": {"chance": 2},
    "01_baseline": {"baseline": 1, "classical": 2, "label_shuffle": 1},
    "02_augmentation": {"policy": 3, "single_transforms": 2, "strength_sweep": 5,
                        "resnet18_augmentation": 2},
    "03_capacity": {"capacity": None, "sweep_filters": None, "sweep_kernel_size": None,
                    "sweep_dropout": None, "kfold_cv": None, "imbalance": None},
    # before and after, plus the class-only after arm whenever the evidence adds extras
    "04_targeted_augmentation": {"targeted_augmentation": (2, 3)},
    "05_domain_shift": {"cross_dataset": None},  # the rest depends on the datasets present
    "06_ensemble": {"base": None, "ensemble": None, "sentiment": None, "calibration": None},
    "07_summary": {"selected": None},
}


def _check_outputs(tmp: Path, dataset: str) -> None:
    for nb in NOTEBOOKS:
        assert (tmp / "reports" / "smoke" / dataset / nb.name).exists(), nb.name
        csv = tmp / "results" / "smoke" / dataset / f"{nb.stem}.csv"
        assert csv.exists(), f"{nb.stem} wrote no result rows"
        rows = pd.read_csv(csv)
        assert len(rows) > 0 and rows["macro_f1"].between(0, 1).all(), nb.stem
        for exp, n in EXPECTED.get(nb.stem, {}).items():
            got = rows[rows["experiment"] == exp]
            assert len(got), f"{nb.stem} recorded no {exp!r} rows"
            if n is not None:  # per split: every evaluated split has the same number of rows
                counts = got.groupby("split").size()
                ok = counts.isin(n if isinstance(n, tuple) else (n,)) & (counts == counts.iloc[0])
                assert ok.all(), f"{nb.stem} {exp}: rows per split {counts.to_dict()}"
        figs = list((tmp / "figures" / "smoke" / nb.stem / dataset).glob("*.png"))
        assert figs, f"{nb.stem} saved no figure"


@pytest.mark.slow
def test_smoke_series_on_generated_data(tmp_path, monkeypatch):
    from tests.fixtures import make_image_folder_dataset

    root = tmp_path / "data"
    make_image_folder_dataset(root / "synthetic", classes=("anger", "happy", "sad"),
                              per_class=30, size=48)
    monkeypatch.setenv("FER_DATA_ROOT", str(root))
    monkeypatch.setenv("FER_SPLITS_DIR", str(tmp_path / "splits"))
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    _isolate(monkeypatch, tmp_path)
    assert run.main(["--profile", "smoke", "--dataset", "synthetic"]) == 0
    _check_outputs(tmp_path, "synthetic")


@pytest.mark.slow
@pytest.mark.full
@pytest.mark.skipif(not (SHARED / "six_emotions").is_dir(), reason="shared data not present")
def test_smoke_series_on_six_emotions(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_DATA_ROOT", str(SHARED))
    _isolate(monkeypatch, tmp_path)
    assert run.main(["--profile", "smoke", "--dataset", "six_emotions"]) == 0
    _check_outputs(tmp_path, "six_emotions")
