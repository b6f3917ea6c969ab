"""The fit store: content keys, train-once, records without pickles, resume after SIGKILL."""
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from lib import config, data
from lib.training import plan, store, train

P = config.get_profile("smoke")


@pytest.fixture
def six(fake_data_root):
    return data.load_splits("six_emotions", max_per_class=P.max_per_class, seed=0)


def spec(**kw):
    base = dict(model="small_cnn", recipe=plan.recipe(P, "six_emotions", "small_cnn"), seed=0,
                img_size=48, channels=3)
    return store.FitSpec(**{**base, **kw})


def test_fit_trains_once_then_loads_the_record(six, monkeypatch):
    first = store.fit(spec(), six, "smoke")
    assert first.model is not None and first.record.endswith(".json")
    rec = json.loads(open(first.record).read())
    assert rec["spec"]["model"] == "small_cnn" and rec["recipe_version"] == store.RECIPE_VERSION
    assert {"history", "attrs", "params", "commit", "key", "seconds"} <= set(rec)

    def boom(*a, **k):
        raise AssertionError("a stored fit was trained again")

    monkeypatch.setattr(store, "_train", boom)
    again = store.fit(spec(), six, "smoke")
    assert again.model is None and again.params == first.params
    for split in ("val", "test", "val_tta", "test_tta"):
        assert np.allclose(again.probs[split], first.probs[split], atol=1e-6)
    assert again.reports["test"]["macro_f1"] == pytest.approx(first.reports["test"]["macro_f1"])


def test_key_follows_content(six):
    data3 = store.prepare(spec(), six)
    h = store.data_hash(data3)
    k = store.key(spec(), h)
    assert store.key(spec(seed=1), h) != k
    assert store.key(spec(recipe={**spec().recipe, "lr": 5e-4}), h) != k
    assert store.key(spec(subset="label_shuffle"), h) != k
    assert store.key(spec(), h[::-1]) != k
    shuffled = store.prepare(spec(subset="label_shuffle"), six)
    assert store.data_hash(shuffled) != h  # the labels are part of the data's identity


def test_records_hold_no_pickles(six):
    run = store.fit(spec(), six, "smoke")
    meta, probs = store.read(run.record)
    with np.load(run.record.replace(".json", ".npz"), allow_pickle=False) as z:
        assert set(z.files) == {"val", "test", "val_tta", "test_tta"}
    assert probs["test"].shape == (len(six["test"]), len(six.classes))


def test_missing_fit_is_refused_when_training_is_off(six, monkeypatch):
    monkeypatch.setenv("FER_STORE_TRAIN", "0")
    with pytest.raises(store.MissingFit, match="lib.plan --train"):
        store.fit(spec(seed=7), six, "smoke")


def test_bad_spec_fails_at_declaration():
    with pytest.raises(ValueError):
        spec(subset="half")
    with pytest.raises(TypeError):
        spec(recipe={"epochz": 3})


KILLED = """
import os, signal, sys
import torch
torch.set_num_threads(1)  # as this test process (conftest): same kernels, same numbers
sys.path.insert(0, {root!r})
from tests.test_train import TRAIN, VAL, tiny, cfg
def die(row):
    if row["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
from lib.training import train
train.fit(tiny(), TRAIN, VAL, cfg(epochs=4, checkpoint={ck!r}, resume=True, callback=die))
"""


def test_fit_killed_midway_resumes_with_the_same_history(tmp_path):
    from tests.test_train import TRAIN, VAL, cfg, tiny

    ck = str(tmp_path / "best.pt")
    proc = subprocess.run([sys.executable, "-c", KILLED.format(root=str(config.ROOT), ck=ck)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL, after epoch 2 was saved
    resumed = train.fit(tiny(), TRAIN, VAL, cfg(epochs=4, checkpoint=ck, resume=True))
    full = train.fit(tiny(), TRAIN, VAL, cfg(epochs=4))
    assert list(resumed.epoch) == [1, 2, 3, 4]
    assert np.allclose(resumed.train_loss, full.train_loss, atol=1e-6)
    assert np.allclose(resumed.val_macro_f1, full.val_macro_f1, atol=1e-9)


def test_spec_config_adds_runtime_fields():
    cfg = spec(seed=3).config(progress=False)
    assert isinstance(cfg, train.Config) and cfg.seed == 3 and cfg.progress is False
    assert replace(spec(), seed=3) == spec(seed=3)


def test_an_empty_init_keeps_the_key_and_a_set_one_changes_it(six):
    h = store.data_hash(store.prepare(spec(), six))
    assert "init" not in store.spec_dict(spec())  # keys of fits stored before the field stay
    src = {"dataset": "fer2013", "spec": store.spec_dict(spec(channels=1))}
    assert store.key(spec(init=src), h) != store.key(spec(), h)
    assert store.spec_dict(spec(init=src))["init"] == src
    with pytest.raises(ValueError):
        spec(init={"dataset": "fer2013"})


def test_a_fit_starts_from_another_datasets_stored_fit(fake_data_root, monkeypatch, tmp_path):
    """fer2013 -> facial_expressions: the target's first epoch starts from the source's
    weights (shared head rows copied), the record names its source, and a target whose
    source is not stored is refused as missing."""
    import torch

    monkeypatch.setenv("FER_STORE_DIR", str(tmp_path / "store"))
    fer = data.load_splits("fer2013", max_per_class=P.max_per_class, seed=0)
    fe = data.load_splits("facial_expressions", max_per_class=P.max_per_class, seed=0)
    src = spec(recipe=plan.recipe(P, "fer2013", "small_cnn"), channels=1)
    target = spec(recipe={**plan.recipe(P, "facial_expressions", "small_cnn"), "epochs": 1, "lr": 1e-9},
                  channels=1, init={"dataset": "fer2013", "spec": store.spec_dict(src)})
    with pytest.raises(store.MissingFit, match="not in the store yet"):
        store.fit(target, fe, "smoke")
    source = store.fit(src, fer, "smoke")
    run = store.fit(target, fe, "smoke")
    meta = store.meta_of(run.record)
    assert meta["init_from"]["dataset"] == "fer2013" and meta["init_from"]["copied_tensors"] > 0
    shared = [c for c in fe.classes if c in fer.classes]
    assert meta["init_from"]["shared_classes"] == len(shared) > 0
    # lr ~0 for one epoch: the convolutions are still the source's
    a = dict(source.model.named_parameters())
    b = dict(run.model.named_parameters())
    conv = next(n for n in a if n.endswith("weight") and a[n].ndim == 4)
    assert torch.allclose(a[conv], b[conv], atol=1e-5)


def test_a_lost_checkpoint_is_rebuilt_and_checked_against_the_record(six):
    run = store.fit(spec(seed=3), six, "smoke")
    rec = run.record
    ckpt = store.checkpoint_dir("smoke", "six_emotions") / (store.Path(rec).stem + ".pt")
    before = open(rec).read()
    ckpt.unlink()
    assert store.rebuild(spec(seed=3), six, "smoke") <= store.REBUILD_ATOL
    assert ckpt.exists() and open(rec).read() == before  # the record is left as it was
    with pytest.raises(FileExistsError):
        store.rebuild(spec(seed=3), six, "smoke")

    # a record the retrained model does not reproduce: the checkpoint is kept aside, not used
    meta, probs = store.read(rec)
    probs["val"] = probs["val"][:, ::-1].copy()
    store._write_record(store.Path(rec), store.Path(rec).with_suffix(".npz"), meta, probs)
    ckpt.unlink()
    assert meta["host"] == store.host()  # what the numbers depend on beyond the key
    with pytest.raises(ValueError, match="differ from the record"):
        store.rebuild(spec(seed=3), six, "smoke")
    assert not ckpt.exists() and ckpt.with_suffix(".unmatched.pt").exists()


def test_an_interrupted_rebuild_leaves_no_checkpoint_behind(six, monkeypatch):
    # the best-so-far weights of a half-done rebuild must not pass for the record's model
    run = store.fit(spec(seed=4), six, "smoke")
    ckpt = store.checkpoint_dir("smoke", "six_emotions") / (store.Path(run.record).stem + ".pt")
    ckpt.unlink()
    real = store._train

    def killed(spec_, data, path, profile):
        real(spec_, data, path, profile)  # writes its checkpoint, as every epoch does
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_train", killed)
    with pytest.raises(KeyboardInterrupt):
        store.rebuild(spec(seed=4), six, "smoke")
    assert not ckpt.exists() and store.checkpoint_of(run.record) is None
    monkeypatch.setattr(store, "_train", real)
    assert store.rebuild(spec(seed=4), six, "smoke") <= store.REBUILD_ATOL and ckpt.exists()
