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
