"""Named training subsets: fixed stratified samples, re-sampling, CV folds without leaks."""
import numpy as np
import pytest

from lib import config, data
from lib.training import plan, runner, store, subsets

P = config.get_profile("smoke")


def test_parse_rejects_bad_names():
    assert subsets.parse("stratified:10+cv3:2") == [("stratified", "10"), ("cv3", "2")]
    for bad in ("half", "stratified", "cv3:3", "cv3:x"):
        with pytest.raises(ValueError):
            subsets.parse(bad)
    assert subsets.holds_out("stratified:5+cv3:0") and not subsets.holds_out("all")


def test_stratified_sample_is_fixed_and_keeps_every_class():
    y = np.repeat([0, 1, 2], [500, 100, 10])
    idx = subsets.stratified_index(y, 61)
    assert abs(len(idx) - 61) <= 3 and set(y[idx]) == {0, 1, 2}
    assert np.array_equal(idx, subsets.stratified_index(y, 61))
    assert len(subsets.stratified_index(y, 10_000)) == len(y)


def test_under_and_over_sampling_balance_the_classes():
    y = np.repeat([0, 1, 2], [50, 20, 5])
    under = np.bincount(y[subsets.resample_index(y, "undersample", 0)])
    over = np.bincount(y[subsets.resample_index(y, "oversample", 0)])
    assert under.tolist() == [5, 5, 5] and over.tolist() == [50, 50, 50]


def test_cv_folds_partition_the_pool_without_shared_people(fake_data_root):
    splits = data.load_splits("facial_expressions", max_per_class=P.max_per_class, seed=0)
    tr, va, _ = splits.tensors(48, 1)
    pool = len(tr) + len(va)
    seen = []
    for k in range(3):
        a, b = subsets.apply(f"cv3:{k}", 0, tr, va)
        assert len(a) + len(b) == pool and len(b) > 0
        assert not set(a.rows["group"]) & set(b.rows["group"])
        seen += list(b.paths)
    assert len(seen) == pool and len(set(seen)) == pool  # every pooled row held out once


def test_cv_spec_cannot_early_stop_on_its_fold():
    r = plan.recipe(P, "six_emotions", "conv4net")
    with pytest.raises(ValueError, match="patience"):
        store.FitSpec("conv4net", r, 0, 48, 3, subset="cv3:0")
    store.FitSpec("conv4net", {**r, "patience": None}, 0, 48, 3, subset="cv3:0")


def test_study_arms_and_the_remedy_chosen_once_stored(fake_data_root):
    names = [a.name for a in plan.arms(P, "fer2013")]
    assert "03.sweep.kernel_size=5" in names and "03.cv.fold2" in names
    assert "03.imbalance.focal" in names
    fer = plan.arm(P, "fer2013", "03.imbalance.undersample").specs[0]
    assert fer.subset == f"stratified:{plan.STUDY_IMAGES}+undersample"
    cpu = config.get_profile("cpu")
    assert not any(n.startswith("03.imbalance_seeds") for n in (a.name for a in plan.arms(cpu, "six_emotions")))
    imb = {n: (a.specs[0].recipe, a.specs[0].subset) for n, a in
           ((a.name.split(".", 2)[2], a) for a in plan.arms(P, "six_emotions") if a.section == "imbalance")}
    assert plan.best_remedy(P, "six_emotions", imb) is None  # nothing stored yet
    runner.train_missing(P, ["six_emotions"], arm_names=[f"03.imbalance.{n}" for n in imb])
    assert plan.best_remedy(P, "six_emotions", imb) in set(imb) - {"plain_ce"}


def test_a_remedy_a_seed_study_reported_gets_the_remaining_seeds(monkeypatch):
    cpu = config.get_profile("cpu")
    monkeypatch.setattr(plan, "best_remedy", lambda *a: "focal")
    def seeded(ds):
        return {a.name.split(".", 2)[2]: [s.seed for s in a.specs] for a in plan.study_arms(cpu, ds)
                if a.name.startswith("03.imbalance_seeds.")}
    rest = list(cpu.seeds[1:])
    assert seeded("facial_expressions") == {"plain_ce": rest, "focal": rest, "augment_to_balance": rest}
    assert seeded("six_emotions") == {"plain_ce": rest, "focal": rest}
    assert set(plan.STUDY_REMEDIES["facial_expressions"]) <= set(plan.IMBALANCE)
