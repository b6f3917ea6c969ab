"""Notebook-level loops over the plan and the store: rows, official test, missing arms."""
import pandas as pd
import pytest

from lib import config, data
from lib.training import plan, store
from lib.analysis import studies

P = config.get_profile("smoke")


def test_official_test_holds_every_privatetest_image(fake_data_root):
    splits = data.load_splits("fer2013", max_per_class=P.max_per_class, seed=0)
    ds = studies.official_test(splits, 48, 1)
    n_private = len(list((fake_data_root / "fer2013" / "test").glob("*/PrivateTest_*.jpg")))
    assert len(ds) == n_private == 12  # 4 a class in the fixture, duplicates included
    six = data.load_splits("six_emotions", max_per_class=P.max_per_class, seed=0)
    assert studies.official_test(six, 48, 3) is None  # no official split: nothing to add


def test_fits_rows_and_official_rows_from_the_store(fake_data_root, monkeypatch):
    splits = data.load_splits("fer2013", max_per_class=P.max_per_class, seed=0)
    arms = studies.fits(P, "fer2013", splits, "01_baseline")
    assert set(arms) == {"01.small_cnn", "01.label_shuffle"}
    rows = studies.arm_rows(arms, "baseline")
    assert {r["split"] for r in rows} == {"val", "test"} and len(rows) == 4
    off = studies.official_rows(arms, splits, "baseline", bootstrap=0)
    assert {r["split"] for r in off} == {"test_official"} and len(off) == 2
    assert all(r["n"] == 12 for r in off)
    again = studies.official_rows(arms, splits, "baseline", bootstrap=0)  # read from the record
    assert [r["macro_f1"] for r in again] == [r["macro_f1"] for r in off]
    table = studies.side_by_side(rows + off)
    assert {"accuracy_test", "accuracy_test_official"} <= set(table.columns)
    run = arms["01.small_cnn"][0]  # an arm named after its input size keeps its rows apart
    size = store.meta_of(run.record)["spec"]["img_size"]
    assert studies.model_label(f"03.small_cnn@{size}", run) == f"small_cnn@{size}"
    assert studies.model_label(f"03.small_cnn@{size + 1}", run) == "small_cnn"
    assert studies.model_label("02.strength.standard@0.5", run) == "small_cnn"
    ep = store.meta_of(run.record)["spec"]["recipe"]["epochs"]  # ... and after its epoch cap
    assert studies.model_label(f"03.small_cnn@{ep}ep", run) == f"small_cnn@{ep}ep"
    assert studies.model_label(f"03.small_cnn@{ep + 1}ep", run) == "small_cnn"
    # a recipe variant named after its model keeps its own label (its seeds are not pooled)
    assert studies.model_label(f"03.small_cnn_erase@{ep}ep", run) == f"small_cnn_erase@{ep}ep"
    assert studies.model_label("03.small_cnn_erase", run) == "small_cnn_erase"
    same = {"03.small_cnn": arms["01.small_cnn"], "03.small_cnn@40ep": arms["01.small_cnn"]}
    t = studies.versus_base(same, bootstrap=50)  # a variant arm against its plain arm
    assert list(t["comparison"]) == ["small_cnn@40ep vs small_cnn"] and t["diff"].abs().max() == 0


def test_base_arm_of_a_variant_arm():
    names = {"03.vgg_cnn", "03.vgg_cnn@40ep", "03.vgg_cnn_from_fer2013", "03.mobilenet_v2@160",
             "03.small_cnn"}
    assert studies.base_arm("03.vgg_cnn@40ep", names) == "03.vgg_cnn"
    assert studies.base_arm("03.vgg_cnn_from_fer2013", names) == "03.vgg_cnn"
    assert studies.base_arm("03.mobilenet_v2@160", names) is None  # its plain arm is absent
    assert studies.base_arm("03.small_cnn", names) is None
    assert studies.base_arm("03.vgg_cnn_erase@40ep", names) == "03.vgg_cnn@40ep"
    assert studies.base_arm("03.vgg_cnn_erase@40ep", names - {"03.vgg_cnn@40ep"}) == "03.vgg_cnn"


def test_missing_arms_are_listed_not_trained(fake_data_root, monkeypatch):
    splits = data.load_splits("six_emotions", max_per_class=P.max_per_class, seed=0)
    monkeypatch.setenv("FER_STORE_TRAIN", "0")
    assert studies.fits(P, "six_emotions", splits, "01_baseline") == {}
    miss = studies.missing(P, "six_emotions", splits, "01_baseline")
    assert list(miss["arm"]) == ["01.small_cnn", "01.label_shuffle"]
    with pytest.raises(store.MissingFit, match="lib.plan --train"):
        studies.require({}, "01.small_cnn")


def test_section_rows_name_sweeps_cv_and_remedies(fake_data_root):
    splits = data.load_splits("six_emotions", max_per_class=P.max_per_class, seed=0)
    names = ("03.sweep.filters=16", "03.cv.fold1", "03.imbalance.focal")
    arms = studies.fits(P, "six_emotions", splits, "03_capacity", names=names)
    rows = pd.DataFrame(studies.section_rows(arms))
    got = set(zip(rows["experiment"], rows["split"]))
    assert got == {("sweep_filters", "val"), ("kfold_cv", "cv_fold"), ("imbalance", "val"),
                   ("imbalance", "test")}
    assert studies.chosen_setting(rows[rows.experiment == "sweep_filters"].to_dict("records")) == \
        {"filters": "16"}


def test_classical_probabilities_are_fitted_once_and_then_read(fake_data_root):
    from lib.models import classical

    splits = data.load_splits("six_emotions", max_per_class=P.max_per_class, seed=0)
    tensors = tuple(splits.tensors(24, 1))
    fits = []

    def make():
        fits.append(1)
        return classical.HOGLinear()

    first = studies.classical_probs("hog_linear", make, tensors, cache=("smoke", "six_emotions"))
    again = studies.classical_probs("hog_linear", make, tensors, cache=("smoke", "six_emotions"))
    assert len(fits) == 1 and set(first) == {"val", "test"}
    assert (first["test"] == again["test"]).all() and len(first["test"]) == len(tensors[2])
    studies.classical_probs("hog_linear", make, tuple(splits.tensors(32, 1)), cache=("smoke", "six_emotions"))
    assert len(fits) == 2  # another decoded size is another baseline


def test_loaded_takes_the_first_seed_whose_model_is_here(monkeypatch):
    # a fresh clone has no checkpoints, only the release: an arm whose released fit is
    # seed 2 must still get its figures, and an arm with no weights at all is named
    class R:
        def __init__(self, seed, here):
            self.seed, self.here = seed, here

    def model_of(run):
        if not run.here:
            raise FileNotFoundError(f"seed {run.seed}")
        return f"model of seed {run.seed}"

    monkeypatch.setattr(store, "model_of", model_of)
    monkeypatch.setattr(store, "spec_of", lambda run: run.seed)
    monkeypatch.setattr(store, "prepare", lambda spec, splits: (None, None, f"test set {spec}"))
    arms = {"03.mobilenet_v2@160": [R(0, False), R(1, False), R(2, True)],
            "03.small_cnn": [R(0, False), R(1, False)]}
    out = studies.loaded(arms, splits=None)
    assert list(out) == ["mobilenet_v2@160"]
    model, test_ds, run = out["mobilenet_v2@160"]
    assert (model, test_ds, run.seed) == ("model of seed 2", "test set 2", 2)


def test_reachable_keeps_fits_with_probabilities_or_weights(monkeypatch, capsys):
    # a fit stored after the last render whose checkpoint was lost has no cross-dataset
    # probabilities yet: 05 names it with the rebuild command instead of failing the render
    class R:
        def __init__(self, seed, probs, ckpt):
            self.seed, self.record, self.model = seed, f"store/cpu/fer2013/small_cnn-{seed}abc.json", None
            self.probs_, self.ckpt = probs, ckpt

    monkeypatch.setattr(store, "has_probs", lambda r, names: r.probs_)
    monkeypatch.setattr(store, "checkpoint_of", lambda rec: "w.pt" if rec.endswith(("1abc.json",)) else None)
    runs = [R(0, True, False), R(1, False, True), R(2, False, False)]
    assert [r.seed for r in studies.reachable(runs, ["six_emotions_test"])] == [0, 1]
    out = capsys.readouterr().out
    assert "left out 1 of 3 fits (seeds 2)" in out and "--rebuild small_cnn-2abc" in out
    with pytest.raises(FileNotFoundError, match="--rebuild small_cnn-2abc"):
        studies.reachable(runs[2:], ["six_emotions_test"], need_one=True)
    assert studies.reachable(runs[2:], ["six_emotions_test"]) == []


def test_adaptation_keys_name_what_adapted_and_few_shot_keep():
    from lib.analysis import adaptation, shift

    keys = shift.adaptation_keys("fer2013", [1, 5])
    assert keys[:4] == ["fer2013_test", "fer2013_test_tta", "fer2013_test_adabn", "fer2013_test_adabn_tta"]
    assert len(keys) == 4 + 2 * len(adaptation.MODES) and shift.fewshot_key("fer2013", "head", 5) in keys
