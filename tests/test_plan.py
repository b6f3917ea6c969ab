"""The compute plan: arms, native inputs, recipes, status and training what is missing."""
import pytest
import torch

from lib import config
from lib.training import plan, runner, store

CPU, SMOKE = config.get_profile("cpu"), config.get_profile("smoke")


def test_native_inputs():
    assert plan.input_for(CPU, "fer2013", "conv4net") == (48, 1)
    assert plan.input_for(CPU, "facial_expressions", "small_cnn") == (48, 1)
    assert plan.input_for(CPU, "six_emotions", "small_cnn") == (CPU.img_size, 3)
    assert plan.input_for(CPU, "fer2013", "mobilenet_v2") == (CPU.backbone_size, 3)
    assert CPU.backbone_size >= 112


def test_arms_cover_01_and_03_with_valid_recipes():
    arms = {a.name: a for a in plan.arms(CPU, "fer2013")}
    assert {"01.small_cnn", "01.label_shuffle", "03.conv4net", "03.mobilenet_v2"} <= set(arms)
    assert len(arms["01.small_cnn"].specs) == len(CPU.seeds)
    assert arms["01.label_shuffle"].specs[0].subset == "label_shuffle"
    assert arms["03.mobilenet_v2"].specs[0].pretrained
    r = arms["03.conv4net"].specs[0].recipe
    assert r["epochs"] == CPU.large_epochs and r["patience"] == CPU.patience
    assert r["augment"] == "shift"  # integer shifts at 48 px, not a bilinear crop
    assert plan.recipe(CPU, "six_emotions", "small_cnn")["epochs"] == CPU.max_epochs
    assert plan.recipe(CPU, "six_emotions", "small_cnn", "study000")["augment"] == "none"
    with pytest.raises(KeyError, match="no arm"):
        plan.arm(CPU, "fer2013", "03.nope")


def test_resolution_arm_only_on_the_small_photo_set():
    six = {a.name: a for a in plan.arms(CPU, "six_emotions")}
    hi = six[f"03.mobilenet_v2@{plan.HIRES}"]
    assert [s.img_size for s in hi.specs] == [plan.HIRES] * len(CPU.seeds)
    assert hi.specs[0].pretrained and hi.specs[0].recipe == six["03.mobilenet_v2"].specs[0].recipe
    assert not [a for a in plan.arms(CPU, "fer2013") if a.name.startswith("03.mobilenet_v2@")]  # 2x the hours
    assert not [a for a in plan.arms(SMOKE, "six_emotions") if a.name.startswith("03.mobilenet_v2@")]


def test_epoch_cap_arm_only_where_the_large_cap_binds():
    fer = {a.name: a for a in plan.arms(CPU, "fer2013")}
    long = fer[f"03.{plan.LONG_MODEL}@{CPU.max_epochs}ep"]
    assert [s.recipe["epochs"] for s in long.specs] == [CPU.max_epochs] * len(CPU.seeds)
    short = fer[f"03.{plan.LONG_MODEL}"].specs[0]
    assert short.recipe["epochs"] == CPU.large_epochs < CPU.max_epochs
    assert {**long.specs[0].recipe, "epochs": short.recipe["epochs"]} == short.recipe  # one change
    assert not [a for a in plan.arms(CPU, "facial_expressions") if a.name.endswith("ep")]
    assert not [a for a in plan.arms(SMOKE, "fer2013") if a.name.endswith("ep")]
    erase = fer[f"03.{plan.LONG_MODEL}_erase@{CPU.max_epochs}ep"]  # one change against the long arm
    assert [s.seed for s in erase.specs] == list(CPU.seeds)
    assert {**erase.specs[0].recipe, "augment": long.specs[0].recipe["augment"]} == long.specs[0].recipe
    assert erase.specs[0].recipe["augment"] == plan.LONG_AUGMENT != long.specs[0].recipe["augment"]


def test_every_stored_ensemble_member_is_a_planned_arm():
    # a renamed arm would drop out of 06 silently: each name must be a 03 arm somewhere
    planned = {a.name for d in ("fer2013", "six_emotions", "facial_expressions")
               for a in plan.arms_of(CPU, d, "03_capacity")}
    assert set(plan.ENSEMBLE_STORED) <= planned
    assert f"03.{plan.LONG_MODEL}@{CPU.max_epochs}ep" in plan.ENSEMBLE_STORED
    assert f"03.{plan.LONG_MODEL}_erase@{CPU.max_epochs}ep" in plan.ENSEMBLE_STORED


def test_estimate_scales_a_measured_rate_by_pixels():
    ips = {("mobilenet_v2", 112, "{}"): 32.0}
    assert runner._rate(ips, "mobilenet_v2", 112) == 32.0
    assert runner._rate(ips, "mobilenet_v2", 224) == pytest.approx(8.0)
    assert runner._rate({}, "conv4net", 48) == plan.DEFAULT_IPS["conv4net"]


def test_estimate_of_a_sweep_point_scales_by_its_compute():
    ips = {("conv4net", 48, "{}"): 100.0}
    # a quarter of the width: about a sixteenth of the multiply-adds, so ten times as fast or more
    narrow = runner._rate(ips, "conv4net", 48, {"filters": 16}, chans=1)
    assert narrow > 10 * 100.0
    # 5x5 kernels: 25/9 of the conv work; dropout changes no work
    assert runner._rate(ips, "conv4net", 48, {"kernel_size": 5}, 1) == pytest.approx(100 * 9 / 25, rel=0.05)
    assert runner._rate(ips, "conv4net", 48, {"dropout": 0.5}, 1) == pytest.approx(100.0)
    # a point's own measured rate wins over the scaled default
    own = {**ips, ("conv4net", 48, runner._args({"filters": 16})): 300.0}
    assert runner._rate(own, "conv4net", 48, {"filters": 16}, 1) == 300.0


def test_count_macs_counts_conv_and_linear_work():
    from torch import nn

    from lib import models

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    assert models.count_macs(net, 8, 1) == 4 * 8 * 8 * 9 + 2 * 256


def test_status_then_train_missing_then_nothing_left(fake_data_root):
    st = runner.status(SMOKE, "six_emotions")
    assert len(st) and not st["stored"].any() and (st["estimate_s"] > 0).all()
    assert runner.train_missing(SMOKE, ["six_emotions"], ["01"]) == 2
    st = runner.status(SMOKE, "six_emotions")
    assert st.query("notebook == '01_baseline'")["stored"].all()
    assert not st.query("notebook == '03_capacity'")["stored"].any()
    assert runner.train_missing(SMOKE, ["six_emotions"], ["01"]) == 0


def test_status_shows_a_part_trained_fit_and_what_is_left(fake_data_root):
    # an interrupted fit resumes from its saved epoch: the listing says how far it got
    from lib import data
    from lib.training import store, train

    st = runner.status(SMOKE, "six_emotions").query("notebook == '01_baseline'")
    row = st.iloc[0]
    spec = next(s for a in plan.arms_of(SMOKE, "six_emotions", "01_baseline") for s in a.specs
                if s.seed == row["seed"] and a.name == row["arm"])
    cap = spec.recipe["epochs"]
    splits = data.load_splits("six_emotions", max_per_class=SMOKE.max_per_class, seed=SMOKE.seeds[0])
    state = train.resume_path(store._files(SMOKE.name, "six_emotions", spec, row["key"])[2])
    state.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1}, state)
    after = runner.status(SMOKE, "six_emotions").query("key == @row.key").iloc[0]  # any arm naming this fit
    assert after["done"] == f"1/{cap}" and not after["stored"]
    assert after["estimate_s"] == pytest.approx(row["estimate_s"] * (1 - 1 / cap))
    assert store.epochs_done(spec, splits.dataset, row["key"], SMOKE.name) == 1


def test_within_leaves_fits_that_would_end_too_late(fake_data_root, capsys):
    st = runner.status(SMOKE, "six_emotions").query("notebook == '01_baseline'")
    assert runner.train_missing(SMOKE, ["six_emotions"], ["01"], within=0.0) == 0
    out = capsys.readouterr().out
    assert out.count("left for a later run") == len(st)
    assert not runner.status(SMOKE, "six_emotions").query("notebook == '01_baseline'")["stored"].any()
    assert runner.train_missing(SMOKE, ["six_emotions"], ["01"], within=1e9) == len(st)


def test_seeds_trains_only_those_seeds(fake_data_root):
    st = runner.status(SMOKE, "six_emotions").query("notebook == '01_baseline'")
    assert runner.train_missing(SMOKE, ["six_emotions"], ["01"], seeds=[12345]) == 0
    first = int(st["seed"].min())
    assert runner.train_missing(SMOKE, ["six_emotions"], ["01"], seeds=[first]) == \
        int((st["seed"] == first).sum())
    st = runner.status(SMOKE, "six_emotions").query("notebook == '01_baseline'")
    assert st.loc[st["seed"] == first, "stored"].all()
    assert not st.loc[st["seed"] != first, "stored"].any()


def test_workers_never_outnumber_the_missing_fits():
    assert runner.worker_threads(2, 10, 2) == (2, 1)  # many fits: one thread each, side by side
    assert runner.worker_threads(2, 1, 2) == (1, 2)   # one fit left: it gets both cores
    assert runner.worker_threads(4, 2, 8) == (2, 4)
    assert runner.worker_threads(2, 0, 2)[0] == 1     # never zero workers
    assert runner.worker_threads(1, 5, 2) == (1, 1)


def test_jobs_start_no_worker_beyond_the_fits(fake_data_root, capsys):
    argv = ["--profile", "smoke", "--dataset", "six_emotions", "--only", "01", "--train",
            "--jobs", "2", "--seeds", "12345", "--quiet"]  # no fit has that seed
    assert runner.main(argv) == 0
    assert "plan: no fit to train" in capsys.readouterr().out  # and no worker started


def test_missing_lists_what_status_calls_missing(fake_data_root):
    st = runner.status(SMOKE, "six_emotions").query("notebook == '01_baseline'")
    todo = list(runner.missing(SMOKE, ["six_emotions"], ["01"]))
    assert len(todo) == int((~st["stored"]).sum()) > 0
    first = int(st["seed"].min())
    assert first in {t[2].seed for t in todo}
    assert all(t[2].seed == first for t in runner.missing(SMOKE, ["six_emotions"], ["01"], seeds=[first]))


def test_a_fit_held_by_a_live_process_is_skipped(fake_data_root, tmp_path):
    import os

    lock = tmp_path / "x.lock"
    lock.write_text(str(os.getppid()))  # a live process that is not us
    assert not runner._claim(lock)
    lock.write_text("999999999")  # dead owner: taken over
    assert runner._claim(lock) and lock.read_text() == str(os.getpid())


def test_cli_prints_the_plan(fake_data_root, capsys):
    assert runner.main(["--profile", "smoke", "--dataset", "six_emotions"]) == 0
    out = capsys.readouterr().out
    assert "01.small_cnn" in out and "0 of" in out and "missing about" in out
    assert store.records("smoke").empty


def test_cli_rebuilds_a_lost_checkpoint(fake_data_root, capsys):
    assert runner.main(["--profile", "smoke", "--dataset", "six_emotions", "--rebuild", "small_cnn-nope"]) == 1
    assert "small_cnn-nope.json is not a stored fit" in capsys.readouterr().err
    assert runner.train_missing(SMOKE, ["six_emotions"], ["01"], ["01.small_cnn"], seeds=[0]) == 1
    rec = next(store.root().glob("smoke/six_emotions/small_cnn-*.json"))
    ckpt = store.checkpoint_dir("smoke", "six_emotions") / f"{rec.stem}.pt"
    ckpt.unlink()
    assert runner.main(["--profile", "smoke", "--dataset", "six_emotions", "--rebuild", rec.stem]) == 0
    assert "checkpoint rebuilt" in capsys.readouterr().out and ckpt.exists()


def test_04s_after_arms_are_planned_once_02s_policy_arms_are_stored(fake_data_root, capsys):
    from lib import plan as cli
    from lib.analysis import targeted

    assert cli.main(["--profile", "smoke", "--dataset", "six_emotions", "--only", "04"]) == 0
    out = capsys.readouterr().out
    assert "six_emotions: 04's after arms are derived from 02's choice once its policy arms are stored" in out
    policy = [a.name for a in plan.arms_of(SMOKE, "six_emotions", "02_augmentation") if a.section == "policy"]
    assert runner.train_missing(SMOKE, ["six_emotions"], arm_names=policy) >= 1
    splits = runner._splits(SMOKE, "six_emotions")
    arms, why = targeted.plan_arms(SMOKE, "six_emotions", splits)
    assert not why and arms[0].name == "04.after"
    d = targeted.derive(SMOKE, "six_emotions", splits)  # what the notebook derives: the same fits
    assert list(arms[0].specs) == d.specs() and len(d.specs()) == len(d.before) == len(SMOKE.seeds)
    assert all(s.recipe["augment"] == "targeted" for s in arms[0].specs)
    # the stacked policy learns more slowly: its fits get AFTER_SCHEDULE x the epochs and patience
    for s, b in zip(arms[0].specs, d.before):
        was = store.spec_of(b).recipe
        assert s.recipe["epochs"] == targeted.AFTER_SCHEDULE * was["epochs"] > was["epochs"]
        assert s.recipe["patience"] == targeted.AFTER_SCHEDULE * was["patience"]
    assert [a.name for a in arms[1:]] == (["04.after_class_only"] if d.extra else [])
    st = runner.status(SMOKE, "six_emotions", targeted.plan_arms).query("notebook == '04_targeted_augmentation'")
    assert len(st) == sum(len(a.specs) for a in arms) and not st["stored"].any()
    assert runner.train_missing(SMOKE, ["six_emotions"], ["04"], derived=targeted.plan_arms) == len(st)
    assert all(store.has(s, splits, "smoke") for a in arms for s in a.specs)
    assert runner.train_missing(SMOKE, ["six_emotions"], ["04"], derived=targeted.plan_arms) == 0


class _Splits(dict):
    """Only what main_contributor reads: the train and test manifests."""


def test_the_contributor_arm_is_declared_from_the_data():
    import pandas as pd

    two = _Splits(train=pd.DataFrame({"source": ["a", "a", "b"]}), test=pd.DataFrame({"source": ["a", "b"]}))
    assert plan.main_contributor(two) == "a"
    (arm,) = plan.contributor_arms(CPU, "facial_expressions", two)
    base = plan.arm(CPU, "facial_expressions", "01.small_cnn")
    assert [s.subset for s in arm.specs] == ["contributor:a"] * len(base.specs)
    assert [s.seed for s in arm.specs] == [s.seed for s in base.specs]
    assert arm.name in {a.name for a in plan.arms(CPU, "facial_expressions", two)}
    assert arm.name not in {a.name for a in plan.arms(CPU, "facial_expressions")}  # no data, no arm
    alone = _Splits(train=pd.DataFrame({"source": ["a", "a"]}), test=pd.DataFrame({"source": ["a"]}))
    only_own = _Splits(train=two["train"], test=pd.DataFrame({"source": ["a"]}))
    assert plan.contributor_arms(CPU, "facial_expressions", alone) == []
    assert plan.main_contributor(only_own) is None  # nobody else in test: no shift to measure


def test_measured_rates_prefer_one_thread_fits():
    import pandas as pd

    recs = pd.DataFrame({"model": ["conv4net", "conv4net", "resnet18", "conv4net"],
                         "img_size": [48, 48, 112, 48], "threads": [1, 2, 2, 1],
                         "model_kw": [{}, {}, {}, {"filters": 16}],
                         "images_per_s": [64.0, 93.0, 40.0, 700.0]})
    # a sweep point's rate is its own, and does not move its model's default rate
    assert runner.rates(recs) == {("conv4net", 48, "{}"): 64.0, ("resnet18", 112, "{}"): 40.0,
                                  ("conv4net", 48, '{"filters": 16}'): 700.0}
    assert runner.rates(recs.iloc[:0]) == {}
