"""Training loop, its options (SAM, EMA, MixUp/CutMix), inference helpers and losses, on a tiny
synthetic task (seconds on CPU)."""
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.metrics import f1_score

from lib.evaluation import inference
from lib.training import losses, subsets, train

K, SIZE = 3, 16


def make_ds(n, seed, k=K, size=SIZE, c=1, weights=None):
    """Class i = a bright horizontal band in the i-th third of a noisy image."""
    g = torch.Generator().manual_seed(seed)
    p = torch.ones(k) if weights is None else torch.tensor(weights, dtype=torch.float)
    y = torch.multinomial(p, n, replacement=True, generator=g)
    x = torch.randint(0, 90, (n, c, size, size), generator=g)
    for i in range(k):
        x[y == i, :, i * size // k:(i + 1) * size // k, :] += 140
    return types.SimpleNamespace(images=x.clamp(0, 255).to(torch.uint8), labels=y,
                                 classes=[f"c{i}" for i in range(k)])


class Tiny(nn.Module):
    def __init__(self, k=K, c=1, aux=False, size=SIZE):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(0.2))
        self.head = nn.Linear(128, k)
        self.aux = nn.Linear(128, k) if aux else None
        self.fer_cfg = dict(input_size=(c, size, size), mean=(0.5,) * c, std=(0.5,) * c,
                            num_classes=k, in_chans=c)

    def forward(self, x):
        h = self.body(x)
        if self.aux is not None and self.training:
            return self.head(h), self.aux(h)  # like Inception-v3 in training mode
        return self.head(h)


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return Tiny(**kw)


def cfg(**kw):
    base = dict(epochs=3, batch_size=32, progress=False, device="cpu")
    return train.Config(**{**base, **kw})


TRAIN, VAL = make_ds(240, 0), make_ds(90, 1)
COLS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "seconds"]


def test_fit_history_and_best_restored(tmp_path):
    model = tiny()
    h = train.fit(model, TRAIN, VAL, cfg(checkpoint=tmp_path / "best.pt"))
    assert list(h.columns) == COLS and list(h.epoch) == [1, 2, 3]
    a = h.attrs
    for key in ("best_epoch", "best_val_macro_f1", "train_seconds", "stopped_early", "n_train",
                "epochs_run"):
        assert key in a
    assert a["n_train"] == 240 and a["epochs_run"] == 3 and not a["stopped_early"]
    assert a["best_val_macro_f1"] == h.val_macro_f1.max()
    assert a["best_val_macro_f1"] > 0.8  # the synthetic pattern is learnable
    # the restored weights are the best epoch's: their val macro-F1 is the recorded best
    pred = train.predict_proba(model, VAL).argmax(1)
    restored = train.macro_f1(VAL.labels, torch.from_numpy(pred))
    assert restored == pytest.approx(a["best_val_macro_f1"])
    ck = torch.load(tmp_path / "best.pt", weights_only=True)
    assert set(ck["state_dict"]) == set(model.state_dict())
    assert train.resume_path(tmp_path / "best.pt").exists()


def test_best_epoch_is_restored_not_the_last():
    # noisy labels: validation macro-F1 peaks early and then falls, so best != last epoch
    model = tiny()
    h = train.fit(model, subsets.label_shuffle(TRAIN, 0), VAL, cfg(epochs=5, lr=3e-3))
    best = h.attrs["best_epoch"]
    assert best < 5 and h.val_macro_f1.iloc[-1] < h.attrs["best_val_macro_f1"]
    assert h.attrs["best_val_macro_f1"] == h.val_macro_f1.iloc[best - 1]
    pred = torch.from_numpy(train.predict_proba(model, VAL).argmax(1))
    assert train.macro_f1(VAL.labels, pred) == pytest.approx(h.attrs["best_val_macro_f1"])


def test_same_seed_same_history_different_seed_differs():
    kw = dict(augment="standard", sampler="balanced", epochs=2)
    h1 = train.fit(tiny(), TRAIN, VAL, cfg(seed=3, **kw))
    m2 = tiny()
    torch.manual_seed(1234)  # fit must not depend on the caller's global RNG state (dropout)
    h2 = train.fit(m2, TRAIN, VAL, cfg(seed=3, **kw))
    h3 = train.fit(tiny(), TRAIN, VAL, cfg(seed=4, **kw))
    assert np.array_equal(h1.train_loss.values, h2.train_loss.values)
    assert np.array_equal(h1.val_loss.values, h2.val_loss.values)
    assert not np.array_equal(h1.train_loss.values, h3.train_loss.values)


def test_label_shuffle_sanity_check():
    shuffled = subsets.label_shuffle(TRAIN, seed=0)
    assert torch.equal(torch.sort(shuffled.labels).values, torch.sort(TRAIN.labels).values)
    assert not torch.equal(shuffled.labels, TRAIN.labels) and shuffled.images is TRAIN.images
    # 6 classes: with 3, a model trained on noise still clusters the bands and a lucky
    # cluster -> class mapping scores far above chance too often to make a stable check
    tr, va = make_ds(300, 0, k=6, size=18), make_ds(240, 9, k=6, size=18)
    c = cfg(epochs=5, lr=3e-3)
    true = train.fit(tiny(k=6, size=18), tr, va, c)
    noise = train.fit(tiny(k=6, size=18), subsets.label_shuffle(tr, seed=0), va, c)
    # the last epoch, not the val-selected best one (selection on val biases it upwards)
    assert true.val_macro_f1.iloc[-1] > 0.9 and noise.val_macro_f1.iloc[-1] < 0.4  # chance 1/6


def test_resume_continues_exactly(tmp_path):
    full = train.fit(tiny(), TRAIN, VAL, cfg(epochs=3))
    ck = tmp_path / "m.pt"
    part = train.fit(tiny(), TRAIN, VAL, cfg(epochs=3, checkpoint=ck,
                                             callback=lambda row: row["epoch"] == 2))
    assert part.attrs["epochs_run"] == 2 and part.attrs["stop_reason"] == "callback"
    model = tiny(seed=99)  # different init: everything must come from the saved state
    resumed = train.fit(model, TRAIN, VAL, cfg(epochs=3, checkpoint=ck, resume=True))
    assert list(resumed.epoch) == [1, 2, 3]
    assert np.allclose(resumed.train_loss.values, full.train_loss.values, rtol=0, atol=1e-6)
    assert np.allclose(resumed.val_loss.values, full.val_loss.values, rtol=0, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        train.fit(tiny(), TRAIN, VAL, cfg(resume=tmp_path / "missing.pt"))


def test_early_stopping_on_flat_validation():
    h = train.fit(tiny(), TRAIN, VAL, cfg(epochs=6, lr=0.0, patience=2, schedule="none"))
    assert h.attrs["stopped_early"] and h.attrs["epochs_run"] == 3 and h.attrs["best_epoch"] == 1


def test_tuple_outputs_aux_and_extra_losses():
    model = tiny(aux=True)
    aux_before = model.aux.weight.detach().clone()
    calls = []

    def extra(outputs, targets):
        calls.append(len(outputs))
        return outputs[0].sum() * 0.0

    model.extra_loss = lambda: torch.zeros(())  # DDAMFN-style no-argument hook
    h = train.fit(model, TRAIN, VAL, cfg(epochs=1, extra_loss=extra))
    assert calls and set(calls) == {2}
    assert not torch.equal(model.aux.weight, aux_before)  # aux logits got a loss (weight .4)
    assert np.isfinite(h.val_loss).all()
    no_aux = tiny(aux=True)
    train.fit(no_aux, TRAIN, VAL, cfg(epochs=1, aux_weight=0.0, weight_decay=0.0))
    assert torch.equal(no_aux.aux.weight, aux_before)


@pytest.mark.parametrize("kw", [
    dict(optimizer="sgd", lr=0.05, schedule="onecycle", sam=True),
    dict(loss="focal", class_weights="balanced", schedule="plateau", patience=3),
    dict(loss="balanced_softmax", augment="targeted", label_smoothing=0.1, channels_last=True),
    dict(loss="soft_f1", augment="strong", amp=True, clip_grad=None),
])
def test_option_combinations_learn(kw):
    imb = make_ds(240, 5, weights=[6, 2, 1])
    h = train.fit(tiny(), imb, VAL, cfg(epochs=3, **kw))
    assert np.isfinite(h.train_loss).all() and h.attrs["best_val_macro_f1"] > 0.5


def test_config_and_data_errors():
    with pytest.raises(ValueError, match="optimizer"):
        train.Config(optimizer="adam")
    with pytest.raises(ValueError, match="augmentation policy"):
        train.Config(augment="wild")
    bad = types.SimpleNamespace(images=TRAIN.images, labels=TRAIN.labels + 5, classes=TRAIN.classes)
    with pytest.raises(ValueError, match="labels outside"):
        train.fit(tiny(), bad, VAL, cfg())
    with pytest.raises(TypeError, match="uint8"):
        train.fit(tiny(), types.SimpleNamespace(images=TRAIN.images.float(), labels=TRAIN.labels),
                  VAL, cfg())


def test_balanced_sampler_and_weights():
    y = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    order = train._order(y, "balanced", torch.Generator().manual_seed(0))
    freq = torch.bincount(y[order], minlength=3).float() / len(order)
    assert (freq - 1 / 3).abs().max() < 0.12  # roughly balanced despite 90:9:1
    w = losses.balanced_weights(losses.class_counts(y, 4))
    assert torch.allclose(w[:3], torch.tensor([100 / 270, 100 / 27, 100 / 3])) and w[3] == 0
    counts = losses.class_counts(y, 3)
    capped = train._class_weights("balanced", counts, cap=10.0)
    assert torch.allclose(capped, torch.tensor([100 / 270, 100 / 27, 10.0]))  # only the rare one
    assert torch.allclose(train._class_weights(True, counts, cap=None), w[:3])
    explicit = torch.tensor([1.0, 50.0, 2.0])  # explicit weights are used as given, uncapped
    assert torch.equal(train._class_weights(explicit, counts, cap=10.0), explicit)


def test_predict_proba_and_tta():
    model = tiny()
    train.fit(model, TRAIN, VAL, cfg(epochs=1))
    p = train.predict_proba(model, VAL)
    assert p.shape == (90, K) and np.allclose(p.sum(1), 1, atol=1e-5)
    mirror = types.SimpleNamespace(images=VAL.images.flip(-1), labels=VAL.labels)
    pt = train.predict_proba(model, VAL, tta=True, batch_size=7)  # odd batch: order kept
    assert np.allclose(pt, (p + train.predict_proba(model, mirror)) / 2, atol=1e-5)
    assert train.evaluate_loss(model, VAL) == pytest.approx(
        float(nn.functional.cross_entropy(torch.from_numpy(train.predict_logits(model, VAL)),
                                          VAL.labels)), rel=1e-5)


def test_macro_f1_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    y, p = torch.randint(0, 5, (200,), generator=g), torch.randint(0, 4, (200,), generator=g)
    assert train.macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    # labels present in only one of y and pred (5, 6), and absent from both (0)
    y, p = y + 1, torch.where(torch.rand(200, generator=g) < 0.5, y + 1, p + 3)
    assert train.macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro", zero_division=0))


# ---------------------------------------------------------------- SAM, EMA, MixUp ----
def test_sam_counts_a_batch_once_in_batchnorm_statistics():
    # one step on one batch: SAM's second, perturbed forward must not move the running stats
    one = dict(epochs=1, batch_size=len(TRAIN.labels), schedule="none")
    plain, sam = tiny(), tiny()
    train.fit(plain, TRAIN, None, cfg(**one))
    train.fit(sam, TRAIN, None, cfg(**one, sam=True))
    bn, ref = sam.body[1], plain.body[1]
    assert torch.equal(bn.running_mean, ref.running_mean)
    assert torch.equal(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 1
    assert not torch.equal(sam.head.weight, plain.head.weight)  # SAM did take its own step


def test_ema_weights_are_validated_saved_and_kept(tmp_path):
    plain = train.fit(tiny(), TRAIN, VAL, cfg())
    model = tiny()
    h = train.fit(model, TRAIN, VAL, cfg(ema=0.99, checkpoint=tmp_path / "best.pt"))
    assert np.array_equal(h.train_loss.values, plain.train_loss.values)  # training is untouched
    assert np.isfinite(h.val_loss).all() and not np.array_equal(h.val_loss.values,
                                                                plain.val_loss.values)
    pred = torch.from_numpy(train.predict_proba(model, VAL).argmax(1))
    assert train.macro_f1(VAL.labels, pred) == pytest.approx(h.attrs["best_val_macro_f1"])
    saved = torch.load(tmp_path / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    # an average of (almost) only the last step is the plain model, BatchNorm buffers included
    near = train.fit(tiny(), TRAIN, VAL, cfg(ema=1e-9))
    assert np.allclose(near.val_loss.values, plain.val_loss.values, rtol=1e-4, atol=0)


def test_resume_with_ema_continues_exactly(tmp_path):
    full = train.fit(tiny(), TRAIN, VAL, cfg(ema=0.9))
    ck = tmp_path / "m.pt"
    train.fit(tiny(), TRAIN, VAL, cfg(ema=0.9, checkpoint=ck, callback=lambda r: r["epoch"] == 2))
    resumed = train.fit(tiny(seed=99), TRAIN, VAL, cfg(ema=0.9, checkpoint=ck, resume=True))
    assert np.allclose(resumed.val_loss.values, full.val_loss.values, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kw", [
    dict(mixup=0.4),
    dict(cutmix=1.0, loss="logit_adjusted", class_weights="balanced"),
    dict(mixup=0.4, cutmix=1.0, loss="balanced_softmax", label_smoothing=0.1),
])
def test_mixup_and_cutmix_train_on_soft_targets(kw):
    h = train.fit(tiny(), TRAIN, VAL, cfg(**kw))
    again = train.fit(tiny(), TRAIN, VAL, cfg(**kw))
    plain = train.fit(tiny(), TRAIN, VAL, cfg(**{k: v for k, v in kw.items()
                                                 if k not in ("mixup", "cutmix")}))
    assert np.array_equal(h.train_loss.values, again.train_loss.values)  # seeded by the fit
    assert not np.array_equal(h.train_loss.values, plain.train_loss.values)
    assert np.isfinite(h.train_loss).all() and h.train_acc.between(0, 1).all()
    assert h.attrs["best_val_macro_f1"] > 0.5


def test_new_options_are_checked():
    for bad in (dict(ema=0.0), dict(ema=1.0), dict(mixup=0.0), dict(cutmix=-1.0)):
        with pytest.raises(ValueError, match="ema|mixup|cutmix"):
            train.Config(**bad)
    for loss in ("focal", "soft_f1"):
        with pytest.raises(ValueError, match="soft targets"):
            train.Config(mixup=0.2, loss=loss)
    g = torch.Generator().manual_seed(2)
    z, y = torch.randn(6, 3, generator=g), torch.tensor([0, 2, 1, 0, 1, 2])
    for name in ("focal", "soft_f1"):
        with pytest.raises(ValueError, match="class indices"):
            losses.make_loss(name)(z, nn.functional.one_hot(y, 3).float())
    for name in losses.SOFT_TARGETS:  # one-hot soft targets are the class indices
        loss = losses.make_loss(name, torch.tensor([5.0, 3.0, 1.0]))
        soft = nn.functional.one_hot(y, 3).float()
        assert loss(z, soft).item() == pytest.approx(loss(z, y).item())


# ---------------------------------------------------------------- losses -------------
@pytest.mark.parametrize("name", losses.NAMES)
def test_each_loss_decreases_on_a_learnable_batch(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    lin = nn.Linear(5, 3)
    loss_fn = losses.make_loss(name, losses.class_counts(y, 3), torch.tensor([1.0, 2.0, 1.0]))
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    first = None
    for _ in range(40):
        loss = loss_fn(lin(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_loss_identities():
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(20, 4, generator=g), torch.randint(0, 4, (20,), generator=g)
    ce = nn.functional.cross_entropy(z, y)
    uniform = torch.full((4,), 7.0)
    la = losses.make_loss("logit_adjusted", uniform, tau=1.5)
    assert la(z, y).item() == pytest.approx(ce.item())
    assert losses.make_loss("balanced_softmax", uniform)(z, y).item() == pytest.approx(ce.item())
    skewed = torch.tensor([50.0, 5.0, 5.0, 1.0])
    assert losses.make_loss("balanced_softmax", skewed)(z, y).item() != pytest.approx(ce.item())
    assert losses.make_loss("focal", gamma=0.0)(z, y).item() == pytest.approx(ce.item())
    assert losses.make_loss("focal", gamma=2.0)(z, y).item() < ce.item()
    sure = nn.functional.one_hot(y, 4).float() * 30
    assert losses.make_loss("soft_f1")(sure, y).item() < 1e-6
    assert losses.make_loss("soft_f1")(-sure, y).item() > 0.9
    with pytest.raises(ValueError, match="class_counts"):
        losses.make_loss("logit_adjusted")
    with pytest.raises(ValueError, match="unknown loss"):
        losses.make_loss("hinge")


def test_epoch_images_caps_each_epoch(monkeypatch):
    seen, real = [], inference.batches

    def counting(images, labels, order, *a, **kw):
        seen.append(len(order))
        return real(images, labels, order, *a, **kw)

    monkeypatch.setattr(inference, "batches", counting)
    train.fit(tiny(), TRAIN, VAL, cfg(epochs=2, epoch_images=100))
    assert seen == [100, 90, 100, 90]  # per epoch: 100 of the 240 train images, then all of val
    with pytest.raises(ValueError):
        train.Config(epoch_images=0)
