"""Profiles, paths and seeding."""
import pytest
import torch

from lib import config


def test_profiles_resolve_and_override():
    p = config.get_profile("smoke", EPOCHS=None, IMG_SIZE=32)
    assert p.img_size == 32 and p.name == "smoke" and p.seeds == (0,)
    assert config.get_profile("cpu").seeds == (0, 1, 2)
    assert len(config.get_profile("gpu").seeds) == 5
    with pytest.raises(ValueError, match="unknown profile"):
        config.get_profile("tpu")
    with pytest.raises(ValueError, match="unknown profile field"):
        config.get_profile("cpu", LEARNING_RATE=1)


def test_default_profile_follows_hardware():
    assert config.default_profile() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_epochs_budget():
    p = config.get_profile("cpu")
    assert p.epochs_for(800) == min(p.max_epochs, round(p.train_images / 800))
    assert p.epochs_for(10**7) == 1
    with pytest.raises(ValueError):
        p.epochs_for(0)


def test_params_are_upper_case_literals():
    params = config.get_profile("cpu").as_params()
    assert params["PROFILE"] == "cpu" and params["SEEDS"] == [0, 1, 2]
    assert all(k.isupper() for k in params)


def test_paths_follow_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "r"))
    p = config.paths()
    assert p.data_root == tmp_path and p.results == tmp_path / "r"


def test_seed_everything_repeats():
    config.seed_everything(3)
    a = torch.rand(4)
    config.seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_data_root_rule(monkeypatch, tmp_path):
    """$FER_DATA_ROOT, else <root>/../shared/data when it exists, else <root>/data/raw."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setattr(config, "ROOT", root)
    monkeypatch.delenv("FER_DATA_ROOT", raising=False)
    assert config.paths().data_root == root / "data" / "raw"
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    assert config.paths().data_root == shared
    monkeypatch.setenv("FER_DATA_ROOT", "")  # empty counts as unset
    assert config.paths().data_root == shared
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert config.paths().data_root == tmp_path / "elsewhere"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER_DATA_ROOT", "rel")  # relative: to the working directory
    assert config.paths().data_root == (tmp_path / "rel").resolve()


def test_active_profile_is_the_last_resolved(monkeypatch):
    monkeypatch.setattr(config, "_ACTIVE_PROFILE", None)
    assert config.active_profile() == config.default_profile()
    config.get_profile("smoke", IMG_SIZE=32)
    assert config.active_profile() == "smoke"
    with pytest.raises(ValueError):
        config.get_profile("tpu")
    with pytest.raises(ValueError):
        config.get_profile("gpu", LEARNING_RATE=1)
    assert config.active_profile() == "smoke"  # a failed resolution changes nothing
    config.get_profile("gpu")
    assert config.active_profile() == "gpu"
