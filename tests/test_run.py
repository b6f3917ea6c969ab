"""The runner: notebook selection, parameter injection, failure reporting, what reports show."""
import os
import sys
from pathlib import Path

import pytest

from lib import config, run


def test_only_selects_by_number():
    names = [p.name[:2] for p in run.notebooks(["1", "00"])]
    assert names == ["00", "01"]
    with pytest.raises(SystemExit, match="names no notebook"):
        run.notebooks(["99"])


def test_parameters_are_the_declared_subset(tmp_path):
    # a notebook of its own: which knobs the real notebooks declare changes with them
    nb = tmp_path / "01_x.ipynb"
    _tiny_notebook(nb, "pass", parameters='PROFILE = None\nDATASET = "none"\nSEEDS = None')
    params = run.parameters_for(nb, config.get_profile("smoke"), "six_emotions")
    assert params == {"PROFILE": "smoke", "DATASET": "six_emotions", "SEEDS": [0]}


def test_failure_message_names_cell_and_output(tmp_path):
    class Err(Exception):
        cell_index, ename, evalue = 7, "ValueError", "boom"
    msg = run._failure_message(tmp_path / "01_baseline.ipynb", tmp_path / "out.ipynb", Err())
    assert "cell 7" in msg and "ValueError: boom" in msg and "out.ipynb" in msg


def _tiny_notebook(path, body: str, parameters: str = 'DATASET = "none"') -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """tmp_path as the project root (results, reports, runs below it); its notebooks folder."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    monkeypatch.setenv("FER_PROJECT_ROOT", str(tmp_path))
    for var in ("FER_RESULTS_DIR", "FER_REPORTS_DIR", "FER_RUNS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(config, "ROOT", tmp_path)
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", nbdir)
    return nbdir


def test_summary_notebooks_run_last_and_datasets_in_parallel(project, tmp_path, monkeypatch):
    """Two datasets side by side in child processes; the summary notebook runs after both, so
    it sees both datasets' marker files; per-dataset and whole-run times are recorded."""
    _tiny_notebook(project / "00_a.ipynb", "import pathlib, os\n"
                   "pathlib.Path(os.environ['MARK_DIR'], DATASET).write_text(str(os.getpid()))")
    _tiny_notebook(project / "07_summary.ipynb", "import os\n"
                   "assert sorted(os.listdir(os.environ['MARK_DIR'])) == ['d1', 'd2']")
    (tmp_path / "marks").mkdir()
    monkeypatch.setenv("MARK_DIR", str(tmp_path / "marks"))
    assert [run.is_summary(p) for p in run.notebooks()] == [False, True]
    assert run.main(["--profile", "smoke", "--dataset", "d1", "d2", "--jobs", "2"]) == 0
    pids = {(tmp_path / "marks" / d).read_text() for d in ("d1", "d2")}
    assert len(pids) == 2  # each dataset ran in its own kernel
    from lib.evaluation import results
    t = results.load_timings(profile="smoke")
    assert set(t["dataset"]) == {"d1", "d2"}
    assert {"00_a", "07_summary", "series", "series_wall_all_datasets"} <= set(t["notebook"])
    assert (tmp_path / "runs" / "smoke_d1.log").exists()


def test_a_failing_dataset_fails_the_parallel_run(project, tmp_path):
    _tiny_notebook(project / "00_a.ipynb", "assert DATASET != 'bad', 'bad dataset'")
    assert run.main(["--profile", "smoke", "--dataset", "good", "bad", "--jobs", "2"]) == 1
    assert (tmp_path / "reports" / "smoke" / "good" / "00_a.ipynb").exists()


def test_default_jobs(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run.default_jobs(3) == 3 and run.default_jobs(1) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run.default_jobs(3) == 1


def test_printed_paths_are_relative_to_the_project():
    assert run.rel(config.ROOT / "runs" / "cpu_fer2013.log") == os.path.join("runs",
                                                                           "cpu_fer2013.log")
    assert run.rel("/elsewhere/x.log") == "/elsewhere/x.log"  # outside the project: as given
    msg = run._failure_message(run.NOTEBOOKS_DIR / "01_baseline.ipynb",
                               config.ROOT / "reports" / "cpu" / "d" / "01_baseline.ipynb",
                               ValueError("boom"))
    assert str(config.ROOT) not in msg and "reports/cpu/d/01_baseline.ipynb" in msg


def test_headless_bars_print_one_line(capsys):
    from lib.progress import OneLineTqdm

    bar = OneLineTqdm(range(30), desc="fit", unit="ep", leave=False)
    for epoch in bar:
        bar.set_postfix(loss="0.900", val_f1="0.412")
        if epoch == 5:  # early stopping leaves the loop with break
            break
    bar.close()
    bar.close()  # a second close prints nothing
    list(OneLineTqdm(range(100), desc="decode", mininterval=1.0))
    list(OneLineTqdm(range(3), desc="off", disable=True))
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 2 and out.err == ""
    assert lines[0].startswith("fit: 6/30 ep in 00:0") and lines[0].endswith(
        ", loss=0.900, val_f1=0.412")
    assert lines[1].startswith("decode: 100/100 it in ")


def test_report_shows_figures_and_one_line_per_bar(tmp_path, monkeypatch):
    """A kernel run as the runner runs it: the figure is an embedded PNG in the HTML (no
    PosixPath echo), a bar leaves one line, and the figure lands under figures/<profile>/."""
    nb = tmp_path / "00_t.ipynb"
    _tiny_notebook(nb, "import matplotlib.pyplot as plt\n"
                   "from lib import config\nfrom lib.reporting import plots\n"
                   "from lib.progress import tqdm\n"
                   "P = config.get_profile('smoke')\n"
                   "for _ in tqdm(range(3), desc='fit', unit='ep'):\n"
                   "    pass\n"
                   "fig, ax = plt.subplots()\n"
                   "ax.plot([1, 100], [1, 1000]); ax.set_xscale('log')\n"
                   "plots.savefig(fig, '00_t', DATASET, 'curve')")
    monkeypatch.setenv("FER_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("FER_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("FER_PLAIN_PROGRESS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    folder = tmp_path / "figures" / "smoke" / "00_t" / "d"
    folder.mkdir(parents=True)
    (folder / "old_model.png").write_bytes(b"an earlier run's figure")
    os.utime(folder / "old_model.png", (1, 1))
    run.run_notebook(nb, config.get_profile("smoke"), "d", html=True)
    assert (folder / "curve.png").is_file()
    assert not (folder / "old_model.png").exists()  # not drawn by this run: pruned
    html = (tmp_path / "reports" / "smoke" / "d" / "00_t.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 1  # shown once; alt= comes first
    assert "PosixPath" not in html and "findfont" not in html
    assert "fit: 3/3 ep in 00:0" in html and "it/s]" not in html and "ep/s]" not in html


def test_rows_of_a_failed_run_are_undone_and_the_runner_says_so(tmp_path, monkeypatch, capsys):
    """A notebook that records rows and then fails leaves results as the last complete run
    left them (here: the earlier file; on a first run: no file), and the runner says which."""
    from lib.evaluation import results

    nb = tmp_path / "09_fail.ipynb"
    _tiny_notebook(nb, "from lib.evaluation import results\n"
                   "results.record([{'experiment': 'x', 'split': 'test', 'macro_f1': 0.9}],"
                   " '09_fail', 'smoke', DATASET)\n"
                   "raise RuntimeError('midway')")
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("FER_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    csv = results.path_for("09_fail", "smoke", "d")
    with pytest.raises(Exception):
        run.run_notebook(nb, config.get_profile("smoke"), "d")
    assert not csv.exists() and "removed" in capsys.readouterr().err
    results.record([{"experiment": "x", "split": "test", "macro_f1": 0.5}], "09_fail", "smoke", "d")
    before = csv.read_bytes()
    with pytest.raises(Exception):
        run.run_notebook(nb, config.get_profile("smoke"), "d")
    assert csv.read_bytes() == before and "restored" in capsys.readouterr().err
