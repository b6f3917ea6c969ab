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
