"""Cross-dataset scoring and adaptation on tiny synthetic tensors (seconds on CPU)."""
import types

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from lib.analysis import adaptation, domain
from lib.training import train

SIZE = 12
SRC = ["anger", "happiness", "sadness", "pain"]  # a six_emotions-like source
TGT = ["anger", "fear", "happiness", "sadness"]  # a fer2013-like target


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_ds(n, classes, seed=0, size=SIZE, shift=0):
    """Class i = a bright band in row block i; `shift` adds a brightness offset (a domain)."""
    g = torch.Generator().manual_seed(seed)
    k = len(classes)
    y = torch.arange(n) % k
    x = torch.randint(0, 80, (n, 1, size, size), generator=g) + shift
    for i in range(k):
        x[y == i, :, i * size // k:(i + 1) * size // k, :] += 120
    return types.SimpleNamespace(images=x.clamp(0, 255).to(torch.uint8), labels=y,
                                 classes=list(classes))


class Net(nn.Module):
    def __init__(self, k, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(1, 4, 3, padding=1),
                                  nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                                  nn.Flatten())
        self.head = nn.Linear(64, k)
        self.fer_cfg = dict(name="net", input_size=(1, SIZE, SIZE), mean=(0.5,), std=(0.5,),
                            num_classes=k, in_chans=1)

    def forward(self, x):
        return self.head(self.body(x))


# ---------------------------------------------------------------- mapping -------------
def test_shared_classes_canonical_order_and_aliases():
    assert domain.shared_classes(["sad", "angry", "pain"], ["anger", "sadness", "fear"]) == \
        ["anger", "sadness"]
    assert domain.shared_classes(["pain"], ["fear"]) == []


def test_mapping_table_statuses_and_counts():
    t = domain.mapping_table(SRC, {"fer": TGT, "ck": ["anger", "contempt"]},
                             counts={"fer": {"fear": 7, "anger": 3}}, source="six")
    t = t.set_index("class")
    assert list(t.index) == ["anger", "contempt", "fear", "happiness", "sadness", "pain"]
    assert t.loc["anger", "fer"] == "scored (3)" and t.loc["fear", "fer"] == "excluded (7)"
    assert t.loc["pain", "fer"] == "logit dropped" and t.loc["contempt", "six"] == "-"
    assert t.loc["contempt", "ck"] == "excluded (0)" and t.loc["happiness", "ck"] == "logit dropped"


def test_class_counts():
    assert domain.class_counts(make_ds(7, ["a", "b", "c"])) == {"a": 3, "b": 2, "c": 2}


def test_restrict_probs_is_softmax_of_restricted_logits():
    z = torch.randn(5, 4)
    p = torch.softmax(z, 1).numpy()
    shared = ["happiness", "anger"]  # any order: columns follow it
    got = domain.restrict_probs(p, SRC, shared)
    want = torch.softmax(z[:, [1, 0]], 1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError):
        domain.restrict_probs(p, SRC, ["fear"])
    with pytest.raises(ValueError):
        domain.restrict_probs(p[:, :3], SRC, ["anger"])


def test_restrict_relabels_and_counts_exclusions():
    ds = make_ds(8, TGT)  # labels 0..3 twice
    sub = domain.restrict(ds, ["happiness", "anger"])
    assert sub.classes == ["happiness", "anger"] and len(sub) == 4
    assert sub.excluded == {"fear": 2, "sadness": 2}
    orig = [TGT[i] for i in ds.labels[sub.index]]
    assert [sub.classes[i] for i in sub.labels] == orig
    assert torch.equal(sub.images, ds.images[sub.index])


def test_per_class_caps_and_reports_shortfall():
    ds = make_ds(10, ["anger", "fear"])  # 5 each
    s = domain.per_class(ds, 3, seed=1)
    assert torch.bincount(s.labels).tolist() == [3, 3] and s.excluded == {"anger": 2, "fear": 2}
    np.testing.assert_array_equal(s.index, domain.per_class(ds, 3, seed=1).index)  # seeded
    assert torch.equal(s.images, ds.images[s.index])
    assert len(domain.per_class(ds, 9)) == 10


# ---------------------------------------------------------------- scoring -------------
def test_score_probs_drops_source_only_logit_and_excludes_target_only_images():
    ds = make_ds(12, TGT)  # 3 of each target class
    y_names = [TGT[i] for i in ds.labels]
    p = np.zeros((12, len(SRC)))
    for i, c in enumerate(y_names):
        p[i, SRC.index("pain")] = 0.7  # the source-only class always wins before restriction
        if c in SRC:
            p[i, SRC.index(c)] = 0.2
        p[i] += 0.025
    ev = domain.score_probs(p, SRC, ds)
    assert ev.shared == ["anger", "happiness", "sadness"]
    assert ev.excluded == {"fear": 3} and ev.n_excluded == 3 and ev.report["n"] == 9
    assert ev.report["macro_f1"] == pytest.approx(1.0)
    ev2 = domain.score_probs(p, SRC, ds, classes=["anger", "sadness"])
    assert ev2.shared == ["anger", "sadness"] and ev2.report["n"] == 6


def test_evaluate_on_matches_predict_proba_and_class_drop():
    torch.manual_seed(0)
    m = Net(len(SRC))
    ds = make_ds(16, TGT)
    ev = domain.evaluate_on(m, ds, SRC)
    sub = domain.restrict(ds, ev.shared)
    want = domain.restrict_probs(train.predict_proba(m, sub), SRC, ev.shared)
    np.testing.assert_allclose(ev.probs, want, rtol=1e-5)
    with pytest.raises(ValueError, match="no class in common"):
        domain.evaluate_on(m, make_ds(4, ["fear", "surprise"]), SRC)


def _ev(f1s, macro, labels=(0, 1, 2)):
    pc = pd.DataFrame({"class": ["anger", "happiness", "sadness"], "f1": f1s})
    y = np.array(labels)
    return domain.CrossEval(["anger", "happiness", "sadness"], {"per_class": pc,
                            "macro_f1": macro}, np.eye(3)[y], y, {"fear": 2})


def test_shift_table_class_drops_and_compare():
    ins = {"fer": [_ev([0.5, 0.6, 0.7], 0.6), _ev([0.7, 0.6, 0.5], 0.7)]}
    outs = {"fer": [_ev([0.1, 0.6, 0.9], 0.3), _ev([0.3, 0.6, 0.7], 0.5)]}
    t = domain.shift_table(ins, outs).iloc[0]
    assert t["drop"] == pytest.approx(0.25) and t["n_excluded"] == 2 and t["n_scored"] == 3
    assert t["in_domain"] == pytest.approx(0.65) and t["seeds"] == 2
    d = domain.class_drops(ins, outs).set_index("class")["drop"]
    assert d.round(6).tolist() == [0.4, 0.0, -0.2]
    assert domain.class_drops({}, {}).empty
    c = domain.compare(ins["fer"], outs["fer"])
    assert c["a_mean"] == pytest.approx(0.65) and c["mcnemar_b"] == 0 == c["mcnemar_c"]
    with pytest.raises(ValueError, match="different images"):
        domain.compare(ins["fer"][:1], [_ev([0, 0, 0], 0, labels=(2, 1, 0))])


def test_matrix_diagonal_in_domain_off_diagonal_zero_shot():
    r = pd.DataFrame({"experiment": "cross_dataset", "split": "test", "dataset": "six_emotions",
                      "variant": ["in_domain", "zero_shot", "zero_shot", "zero_shot",
                                  "in_domain_shared"],
                      "eval_dataset": ["six_emotions", "fer2013", "fer2013", "ckplus48",
                                       "six_emotions"],
                      "macro_f1": [0.5, 0.2, 0.3, 0.1, 0.9]})
    m = domain.matrix(r)
    assert list(m.columns) == ["fer2013", "six_emotions", "ckplus48"]
    assert m.loc["six_emotions", "fer2013"] == pytest.approx(0.25)
    assert m.loc["six_emotions", "six_emotions"] == 0.5  # the shared-class row is not used


def test_head_for_equals_restricted_probabilities():
    torch.manual_seed(0)
    m = Net(len(SRC)).eval()
    ds = make_ds(10, SRC)
    shared = ["anger", "sadness"]
    cut = adaptation.head_for(m, SRC, shared)
    assert cut.fer_cfg["num_classes"] == 2 and m.fer_cfg["num_classes"] == 4
    np.testing.assert_allclose(train.predict_proba(cut, ds),
                               domain.restrict_probs(train.predict_proba(m, ds), SRC, shared),
                               rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- AdaBN ---------------
def test_adabn_recomputes_statistics_on_target_only_in_a_copy():
    torch.manual_seed(0)
    m = Net(3, dropout=0.5)
    target = make_ds(64, ["a", "b", "c"], shift=100)
    before = m.body[2].running_mean.clone()
    out = adaptation.adabn(m, target, batch_size=16, max_images=None)
    assert torch.equal(m.body[2].running_mean, before)  # original untouched
    # the first BN sees conv(preprocessed x) (dropout is off in eval): exact full-data stats
    from lib import models
    with torch.no_grad():
        h = out.body[1](models.preprocess(target.images, out.fer_cfg, "cpu"))
    torch.testing.assert_close(out.body[2].running_mean, h.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.body[2].running_var, h.var((0, 2, 3)), rtol=1e-3, atol=1e-5)
    assert not out.training and out.body[2].momentum == m.body[2].momentum
    with pytest.raises(ValueError, match="no BatchNorm"):
        adaptation.adabn(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), target)


# ---------------------------------------------------------------- few-shot ------------
def test_prepare_finetune_head_freezes_trunk_and_batchnorm():
    m = adaptation.prepare_finetune(Net(3), "head")
    assert isinstance(m.body[2], adaptation.FrozenBN)
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    x = torch.randn(4, 4, 5, 5)
    bn = Net(3).body[2].eval()
    m.train()
    torch.testing.assert_close(adaptation.FrozenBN(bn)(x), bn(x))  # training mode: running stats
    with pytest.raises(ValueError):
        adaptation.prepare_finetune(Net(3), "all")


@pytest.mark.parametrize("mode", ["head", "whole"])
def test_few_shot_uses_k_per_shared_class_and_trains_what_it_should(mode):
    torch.manual_seed(0)
    m = Net(len(SRC))
    tr, va = make_ds(40, TGT, seed=1), make_ds(20, TGT, seed=2)
    conv_before = m.body[1].weight.detach().clone()
    cfg = train.Config(epochs=3, lr=1e-2, patience=2, progress=False)
    net, hist, info = adaptation.few_shot(m, SRC, tr, va, k=2, mode=mode, cfg=cfg, seed=0)
    assert info["shared"] == ["anger", "happiness", "sadness"]
    assert info["n_train"] == 6 and info["n_val"] == 6 and info["short"] == {}
    assert net.fer_cfg["num_classes"] == 3 and len(hist) >= 1
    assert torch.equal(m.body[1].weight, conv_before)  # the source model is not modified
    moved = not torch.equal(net.body[1].weight.detach(), conv_before)
    assert moved == (mode == "whole")
    ev = domain.evaluate_on(net, make_ds(12, TGT, seed=3), info["shared"])
    assert ev.excluded == {"fear": 3}


def test_few_shot_sweep_grid():
    torch.manual_seed(0)
    models = {0: Net(len(SRC)), 1: Net(len(SRC))}
    tr, va, te = make_ds(40, TGT, seed=1), make_ds(20, TGT, seed=2), make_ds(12, TGT, seed=3)
    out = adaptation.few_shot_sweep(models, SRC, tr, va, te, [1, 2],
                                lambda k, mode: train.Config(epochs=1, progress=False))
    assert [(o["seed"], o["k"], o["mode"]) for o in out][:3] == [(0, 1, "head"), (0, 1, "whole"),
                                                                  (0, 2, "head")]
    assert len(out) == 8 and all(o["eval"].report["n"] == 9 for o in out)


# ---------------------------------------------------------------- datasets ------------
def test_present_datasets_and_load_target(fake_data_root, monkeypatch):
    present, missing = domain.present_datasets(exclude="six_emotions")
    assert present == ["fer2013", "facial_expressions", "ckplus48"] and missing == {}
    t = domain.load_target("fer2013", 16, 1, splits=("train", "test"), caps={"train": 2})
    assert set(t) == {"train", "test"}
    assert torch.bincount(t["train"].labels).max() <= 2 and t["test"].images.shape[-1] == 16
    monkeypatch.setenv("FER_DATA_ROOT", str(fake_data_root / "nowhere"))
    present, missing = domain.present_datasets()
    assert present == [] and set(missing) == set(domain.NAMED)


def test_row_carries_classes_exclusions_and_per_class():
    ev = domain.score_probs(np.eye(4)[np.arange(8) % 4], TGT, make_ds(8, TGT), classes=SRC)
    r = domain.row(ev, experiment="cross_dataset", eval_dataset="fer2013", seed=0)
    assert r["eval_classes"] == "anger|happiness|sadness" and r["n_classes"] == 3
    assert r["n_excluded"] == 2 and r["n"] == 6 and r["macro_f1"] == pytest.approx(1.0)
    assert r["f1_anger"] == pytest.approx(1.0) and "f1_fear" not in r
