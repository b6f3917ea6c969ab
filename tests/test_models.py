"""lib.models / lib.models.ddamfn / lib.models.weights: sizes, forwards, configs, losses, checkpoints."""
from __future__ import annotations

import importlib.util
import urllib.error

import pytest
import torch

from lib.models import ddamfn as D
from lib import models as M
from lib.models import weights as W

torch.set_num_threads(1)  # shared 2-core machine: tests stay polite
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fwd(model, size, c, n=2, train=False):
    model.train(train)
    with torch.set_grad_enabled(train):
        return model(torch.randn(n, c, size, size))


# ---------------------------------------------------------------- sizes

def test_small_cnn_has_exactly_the_study_parameter_count():
    assert M.count_params(M.create("small_cnn", 6, 3)) == 389_958


def test_wider_cnn_within_one_percent_of_764k():
    n = M.count_params(M.create("wider_cnn", 6, 3))
    assert abs(n - 764_000) / 764_000 < 0.01, n


def test_ddamfn_about_4_19m_parameters():
    n = M.count_params(M.create("ddamfn", 7))
    assert abs(n - 4.19e6) / 4.19e6 < 0.05, n


def test_count_params_trainable_only():
    m = M.create("small_cnn", 6)
    for p in m.features.parameters():
        p.requires_grad_(False)
    assert M.count_params(m, trainable_only=True) == 256 * 6 + 6
    assert M.count_params(m) == 389_958


# ---------------------------------------------------------------- forwards

@pytest.mark.parametrize("name", ["small_cnn", "wider_cnn", "conv4net", "vgg_cnn", "ddamfn"])
@pytest.mark.parametrize("c", [1, 3])
def test_small_models_forward_at_48_64_112(name, c):
    m = M.create(name, 5, in_chans=c)
    for size in (48, 64, 112):
        assert fwd(m, size, c).shape == (2, 5)
    assert m.fer_cfg["input_size"][0] == c and len(m.fer_cfg["mean"]) == c


def test_small_cnn_works_at_16px():
    assert fwd(M.create("small_cnn", 6), 16, 3).shape == (2, 6)


def test_conv4net_sweep_kwargs_change_the_network():
    m = M.create("conv4net", 7, 1, filters=16, layers=2, kernel_size=5, dropout=0.5)
    convs = [l for l in m.modules() if isinstance(l, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32]
    assert all(c.kernel_size == (5, 5) for c in convs)
    assert all(d.p == 0.5 for d in m.modules() if isinstance(d, torch.nn.Dropout))
    assert sum(isinstance(l, torch.nn.MaxPool2d) for l in m.modules()) == 1
    assert fwd(m, 48, 1).shape == (2, 7)
    base = M.create("conv4net", 7, 1)
    assert [c.out_channels for c in base.modules() if isinstance(c, torch.nn.Conv2d)] == [
        64, 128, 256, 512]
    assert M.count_params(m) < M.count_params(base)


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("resnet50", 32), ("mobilenet_v2", 64),
                                       ("efficientnet_b0", 64), ("convnextv2_atto", 64),
                                       ("vit_small", 48)])
def test_backbones_forward_and_config(name, size):
    m = M.create(name, 6, img_size=size)
    assert fwd(m, size, 3).shape == (2, 6)
    cfg = m.fer_cfg
    assert cfg["input_size"] == (3, size, size) and cfg["num_classes"] == 6
    assert cfg["pretrained"] is False and len(cfg["mean"]) == len(cfg["std"]) == 3


def test_backbone_default_size_comes_from_library_config():
    assert M.create("resnet18", 3).fer_cfg["input_size"] == (3, 224, 224)
    assert M.create("vit_small", 3).fer_cfg["mean"] == (0.5, 0.5, 0.5)  # timm cfg, not ImageNet


def test_vit_small_accepts_several_sizes():
    m = M.create("vit_small", 4, img_size=112)
    for size in (48, 64, 112):
        assert fwd(m, size, 3, n=1).shape == (1, 4)


def test_one_channel_backbone_adapts_stem_and_config():
    m = M.create("resnet18", 6, in_chans=1, img_size=48)
    assert m.conv1.in_channels == 1
    assert fwd(m, 48, 1).shape == (2, 6)
    assert m.fer_cfg["mean"] == pytest.approx((sum(IMAGENET_MEAN) / 3,))
    assert m.fer_cfg["std"] == pytest.approx((sum(IMAGENET_STD) / 3,))


def test_inception_returns_aux_in_training_only():
    m = M.create("inception_v3", 6)
    assert m.fer_cfg["input_size"] == (3, 299, 299)  # aux head needs the native size
    out = fwd(m, 299, 3, train=True)
    assert isinstance(out, tuple) and out[0].shape == out[1].shape == (2, 6)
    assert fwd(m, 299, 3, n=1).shape == (1, 6)
    small = M.create("inception_v3", 6, aux_logits=False, img_size=48)
    assert small.fer_cfg["input_size"] == (3, 75, 75)


def test_registry_errors_and_listing():
    names = M.available()
    for n in ["small_cnn", "wider_cnn", "conv4net", "vgg_cnn", "ddamfn", "resnet18", "mobilenet_v2",
              "inception_v3", "efficientnet_b0", "convnextv2_tiny", "vit_small"]:
        assert n in names
    with pytest.raises(ValueError, match="unknown model"):
        M.create("nope", 3)
    with pytest.raises(ValueError, match="twice"):
        M.register("small_cnn")(lambda **kw: None)
    with pytest.raises(ValueError, match="pretrained"):
        M.create("small_cnn", 3, pretrained=True)


# ---------------------------------------------------------------- preprocess

def test_preprocess_normalises_resizes_and_adapts_channels():
    cfg = M.create("small_cnn", 2, 3, img_size=32).fer_cfg
    x = torch.full((2, 1, 16, 16), 255, dtype=torch.uint8)
    y = M.preprocess(x, cfg, "cpu")
    assert y.shape == (2, 3, 32, 32) and y.dtype == torch.float32
    assert torch.allclose(y, torch.ones_like(y))  # (1 - .5) / .5
    grey_cfg = M.create("small_cnn", 2, 1, img_size=8).fer_cfg
    rgb = torch.zeros((1, 3, 8, 8), dtype=torch.uint8)
    rgb[:, 1] = 255  # pure green -> luma 0.587
    g = M.preprocess(rgb, grey_cfg, "cpu")
    assert g.shape == (1, 1, 8, 8)
    assert torch.allclose(g, torch.full_like(g, (0.587 - 0.5) / 0.5), atol=1e-5)
    assert M.preprocess(rgb, grey_cfg, "cpu", channels_last=True).is_contiguous(
        memory_format=torch.channels_last)
    with pytest.raises(TypeError):
        M.preprocess(rgb.float(), grey_cfg, "cpu")


# ---------------------------------------------------------------- losses

def test_compute_loss_adds_inception_aux_and_ddamfn_diversity():
    ce = torch.nn.CrossEntropyLoss()
    y = torch.tensor([0, 1])
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    plain = torch.nn.Linear(1, 1)
    assert torch.isclose(M.compute_loss(plain, (a, b), y, ce), ce(a, y) + 0.4 * ce(b, y))
    assert torch.isclose(M.compute_loss(plain, a, y, ce), ce(a, y))
    assert torch.equal(M.logits_of((a, b)), a) and torch.equal(M.logits_of(a), a)
    m = M.create("ddamfn", 3, img_size=48)
    out = fwd(m, 48, 3, train=True)
    extra = m.extra_loss()
    assert float(extra.detach()) > 0
    assert torch.isclose(M.compute_loss(m, out, y, ce), ce(out, y) + extra)
    m.eval()
    assert torch.isclose(M.compute_loss(m, out, y, ce), ce(out, y))  # no diversity in eval


def test_attention_diversity_loss_penalises_similar_heads():
    a = torch.rand(2, 8, 7, 7)
    same = D.attention_diversity_loss([a, a.clone()])
    apart = D.attention_diversity_loss([a, 1 - a])
    assert same > 1e6 * apart
    assert D.attention_diversity_loss([a]) == 0.0
    three = D.attention_diversity_loss([a, 1 - a, torch.zeros_like(a)])
    assert torch.isfinite(three) and three > 0


def test_ddamfn_attention_maps_and_gradients_reach_every_head():
    m = M.create("ddamfn", 4, num_head=2, img_size=64)
    out = fwd(m, 64, 3, train=True)
    assert len(m.attention_maps) == 2 and m.attention_maps[0].shape == (2, 512, 7, 7)
    att = m.attention_maps[0].detach()
    assert 0 <= float(att.min()) and float(att.max()) <= 1
    D.ddamfn_loss(m, out, torch.tensor([0, 3]), torch.nn.CrossEntropyLoss()).backward()
    for head in m.heads:
        assert head.conv2.weight.grad is not None and head.conv2.weight.grad.abs().sum() > 0


def test_load_backbone_reads_reference_key_layouts(tmp_path):
    src = D.DDAMFN(7)
    mfn = {k.removeprefix("backbone."): v for k, v in src.state_dict().items()
           if k.startswith("backbone.")}
    mfn["linear.weight"] = torch.randn(256, 512)  # reference MFN embedding: unexpected here
    torch.save(mfn, tmp_path / "mfn.pth")
    dst = M.create("ddamfn", 5)
    rep = D.load_backbone(dst, tmp_path / "mfn.pth", verbose=False)
    assert torch.equal(dst.backbone.conv_5.model[0].project.conv.weight,
                       src.backbone.conv_5.model[0].project.conv.weight)
    assert "linear.weight" in rep["unexpected"] and "fc.weight" in rep["missing"]
    # full reference DDAMNet layout: features.<i>, cat_head<i>.CoordAtt, module. prefix
    names = D._FEATURES
    ref = {("module.features." + str(names.index(k.split(".")[0])) + "."
            + k.split(".", 1)[1]): v for k, v in mfn.items() if k.split(".")[0] in names}
    ref.update({"module.cat_head1.CoordAtt." + k.split(".", 2)[2]: v
                for k, v in src.state_dict().items() if k.startswith("heads.1.")})
    torch.save({"state_dict": ref}, tmp_path / "ddam.pth")
    grey = D.DDAMFN(7, in_chans=1)
    rep = D.load_backbone(grey, tmp_path / "ddam.pth", verbose=False)
    assert torch.allclose(grey.backbone.conv1.conv.weight,
                          src.backbone.conv1.conv.weight.sum(1, keepdim=True))
    assert torch.equal(grey.heads[1].conv3.weight, src.heads[1].conv3.weight)
    assert not rep["shape_mismatch"]
    torch.save({"x": torch.zeros(1)}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="no tensor matched"):
        D.load_backbone(D.DDAMFN(7), tmp_path / "junk.pth", verbose=False)


# ---------------------------------------------------------------- pretrained weights

@pytest.mark.skipif(importlib.util.find_spec(W.OFFLINE_PACKAGE) is None,
                    reason="offline MobileNetV2 weights package not installed")
def test_mobilenet_v2_imagenet_weights_load_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache: exercises the copy
    monkeypatch.setattr(W, "online", lambda *a, **k: False)
    m = M.create("mobilenet_v2", 7, pretrained=True)
    assert (tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").is_file()
    assert m.fer_cfg["mean"] == IMAGENET_MEAN and m.fer_cfg["std"] == IMAGENET_STD
    assert m.fer_cfg["pretrained"] is True
    rand = M.create("mobilenet_v2", 7)
    w, r = m.features[0][0].weight, rand.features[0][0].weight
    assert not torch.allclose(w, r)
    # the ImageNet stem's first BN has learnt running stats; a fresh one has 0 / 1
    assert not torch.allclose(m.features[0][1].running_mean, torch.zeros(32))
    grey = M.create("mobilenet_v2", 7, in_chans=1, pretrained=True)
    assert torch.allclose(grey.features[0][0].weight, w.sum(1, keepdim=True))


def test_missing_weights_raise_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(W, "online", lambda *a, **k: False)
    with pytest.raises(W.WeightsUnavailable, match="resnet18-f37072fd.pth") as e:
        M.create("resnet18", 6, pretrained=True)
    assert str(tmp_path / "hub" / "checkpoints") in str(e.value) and "Colab" in str(e.value)
    monkeypatch.setattr(W, "timm_cached", lambda name: False)
    with pytest.raises(W.WeightsUnavailable, match="huggingface-cli download timm/"):
        M.create("convnextv2_atto", 6, pretrained=True)


def test_failed_download_becomes_weights_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(W, "online", lambda *a, **k: True)  # looks online, download fails

    def refuse(*a, **k):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.raises(W.WeightsUnavailable, match="URLError"):
        M.create("efficientnet_b0", 6, pretrained=True)


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(tmp_path):
    m = M.create("conv4net", 3, 1, img_size=32, filters=8, layers=2)
    path = M.save_checkpoint(tmp_path / "sub" / "c.pt", m, ["anger", "fear", "sadness"],
                             face_crop=True, img_size=40, extra={"epoch": 3, "f1": 0.5})
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    m2, meta = M.load_checkpoint(path)
    assert not m2.training
    assert meta["classes"] == ["anger", "fear", "sadness"] and meta["face_crop"] is True
    assert meta["img_size"] == 40 and meta["channels"] == 1 and meta["extra"]["epoch"] == 3
    assert meta["model_kwargs"] == {"img_size": 32, "filters": 8, "layers": 2}
    assert m2.fer_cfg == m.fer_cfg
    x = torch.randn(2, 1, 32, 32)
    m.eval()
    with torch.no_grad():
        assert torch.allclose(m(x), m2(x))
    with pytest.raises(TypeError, match="cannot be stored"):
        M.save_checkpoint(tmp_path / "d.pt", m, ["a", "b", "c"], extra={"bad": object()})
    with pytest.raises(ValueError, match="3-class"):
        M.save_checkpoint(tmp_path / "e.pt", m, ["a", "b"])
    torch.save({"state_dict": {}}, tmp_path / "f.pt")
    with pytest.raises(ValueError, match="not a lib.models checkpoint"):
        M.load_checkpoint(tmp_path / "f.pt")


def test_transfer_copies_matching_tensors_and_the_shared_head_rows():
    import torch

    from lib import models
    from lib.models import weights

    src = models.create("small_cnn", 3, in_chans=1, img_size=48)
    dst = models.create("small_cnn", 4, in_chans=1, img_size=48)
    head = [n for n, m in dst.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    fresh = dst.state_dict()[f"{head}.weight"].clone()
    out = weights.transfer(dst, src.state_dict(), ["anger", "happiness", "sadness"],
                           ["contempt", "happiness", "anger", "fear"])
    assert out["shared_classes"] == 2 and out["copied"] > 0
    w_src, w_dst = src.state_dict()[f"{head}.weight"], dst.state_dict()[f"{head}.weight"]
    assert torch.equal(w_dst[1], w_src[1]) and torch.equal(w_dst[2], w_src[0])
    assert torch.equal(w_dst[0], fresh[0]) and torch.equal(w_dst[3], fresh[3])  # not in the source
    conv = next(n for n, t in src.state_dict().items() if t.ndim == 4)
    assert torch.equal(dst.state_dict()[conv], src.state_dict()[conv])
    with pytest.raises(ValueError, match="same architecture"):
        weights.transfer(models.create("conv4net", 4, in_chans=1, img_size=48), src.state_dict(),
                         ["anger"], ["anger"])
