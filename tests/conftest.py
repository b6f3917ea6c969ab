"""Shared fixtures: isolated cache/splits folders, generated datasets, the real data root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lib import config
from tests import fixtures

# Where the real datasets are (read-only): FER_DATA_ROOT as given to the run, else ../shared/data.
REAL_DATA = Path(os.environ.get("FER_DATA_ROOT", config.ROOT.parent / "shared" / "data")).resolve()
REAL_NAMES = ("fer2013", "facial_expressions", "six_emotions", "ckplus48")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Unit tests use tiny tensors: with 2 OpenMP threads on a shared 2-core machine, fits ran
    ~50x slower (threads wait on each other while other processes hold the cores)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _isolated_outputs(monkeypatch, tmp_path_factory):
    """No test writes split files or caches into the project: both go to a session tmp dir."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("FER_SPLITS_DIR", str(base / "splits"))
    monkeypatch.setenv("FER_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("FER_STORE_DIR", str(tmp_path_factory.mktemp("store")))  # per test
    monkeypatch.delenv("FER_CKPT_DIR", raising=False)
    monkeypatch.delenv("FER_STORE_TRAIN", raising=False)


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """A learnable 3-class image-folder dataset (20 images a class, 32 px)."""
    return fixtures.make_image_folder_dataset(tmp_path / "tiny")


@pytest.fixture
def fake_data_root(tmp_path, monkeypatch) -> Path:
    """A data root with tiny copies of every named dataset; FER_DATA_ROOT points at it."""
    root = fixtures.make_data_root(tmp_path / "data")
    monkeypatch.setenv("FER_DATA_ROOT", str(root))
    return root


@pytest.fixture
def real_data_root(monkeypatch) -> Path:
    """The shared real datasets (skips when absent); FER_DATA_ROOT points at them."""
    if not all((REAL_DATA / n).is_dir() for n in REAL_NAMES):
        pytest.skip(f"real datasets not found under {REAL_DATA}")
    monkeypatch.setenv("FER_DATA_ROOT", str(REAL_DATA))
    return REAL_DATA
