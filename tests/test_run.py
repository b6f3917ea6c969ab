"""The runner: notebook selection, parameter injection, failure reporting."""
import pytest

from lib import config, run


def test_only_selects_by_number():
    names = [p.name[:2] for p in run.notebooks(["1", "00"])]
    assert names == ["00", "01"]
    with pytest.raises(SystemExit, match="names no notebook"):
        run.notebooks(["99"])


def test_parameters_are_the_declared_subset():
    nb = run.notebooks(["01"])[0]
    params = run.parameters_for(nb, config.get_profile("smoke"), "six_emotions")
    assert params["PROFILE"] == "smoke" and params["DATASET"] == "six_emotions"
    assert params["SEEDS"] == [0] and "FEW_SHOT_K" not in params


def test_failure_message_names_cell_and_output(tmp_path):
    class Err(Exception):
        cell_index, ename, evalue = 7, "ValueError", "boom"
    msg = run._failure_message(tmp_path / "01_baseline.ipynb", tmp_path / "out.ipynb", Err())
    assert "cell 7" in msg and "ValueError: boom" in msg and "out.ipynb" in msg


def _tiny_notebook(path, body: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('DATASET = "none"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))


def test_summary_notebooks_run_last_and_datasets_in_parallel(tmp_path, monkeypatch):
    """Two datasets side by side in child processes; the summary notebook runs after both, so
    it sees both datasets' marker files; per-dataset and whole-run times are recorded."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _tiny_notebook(nbdir / "00_a.ipynb", "import pathlib, os\n"
                   "pathlib.Path(os.environ['MARK_DIR'], DATASET).write_text(str(os.getpid()))")
    _tiny_notebook(nbdir / "07_summary.ipynb", "import os\n"
                   "assert sorted(os.listdir(os.environ['MARK_DIR'])) == ['d1', 'd2']")
    (tmp_path / "marks").mkdir()
    monkeypatch.setenv("MARK_DIR", str(tmp_path / "marks"))
    monkeypatch.setenv("FER_PROJECT_ROOT", str(tmp_path))
    for var in ("FER_RESULTS_DIR", "FER_REPORTS_DIR", "FER_RUNS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(config, "ROOT", tmp_path)
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", nbdir)
    assert [run.is_summary(p) for p in run.notebooks()] == [False, True]
    assert run.main(["--profile", "smoke", "--dataset", "d1", "d2", "--jobs", "2"]) == 0
    pids = {(tmp_path / "marks" / d).read_text() for d in ("d1", "d2")}
    assert len(pids) == 2  # each dataset ran in its own kernel
    from lib import results
    t = results.load_timings(profile="smoke")
    assert set(t["dataset"]) == {"d1", "d2"}
    assert {"00_a", "07_summary", "series", "series_wall_all_datasets"} <= set(t["notebook"])
    assert (tmp_path / "runs" / "smoke_d1.log").exists()


def test_a_failing_dataset_fails_the_parallel_run(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _tiny_notebook(nbdir / "00_a.ipynb", "assert DATASET != 'bad', 'bad dataset'")
    monkeypatch.setenv("FER_PROJECT_ROOT", str(tmp_path))
    for var in ("FER_RESULTS_DIR", "FER_REPORTS_DIR", "FER_RUNS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(config, "ROOT", tmp_path)
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", nbdir)
    assert run.main(["--profile", "smoke", "--dataset", "good", "bad", "--jobs", "2"]) == 1
    assert (tmp_path / "reports" / "smoke" / "good" / "00_a.ipynb").exists()


def test_default_jobs(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run.default_jobs(3) == 3 and run.default_jobs(1) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run.default_jobs(3) == 1
