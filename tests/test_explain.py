"""lib.evaluation.explain: Grad-CAM target layers and maps, filters and activations on tiny models."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from lib.evaluation import explain  # noqa: E402
from lib import models


def _images(n: int, size: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("name,expected", [
    ("small_cnn", lambda m: m.features[-2]),
    ("conv4net", lambda m: [x for x in m.features if isinstance(x, nn.ReLU)][-1]),
    ("vgg_cnn", lambda m: m.features[-2]),
    ("resnet18", lambda m: m.layer4[-1]),
    ("mobilenet_v2", lambda m: m.features[-1]),
    ("ddamfn", lambda m: m.backbone.conv_6_sep),
    ("convnextv2_atto", lambda m: m.stages[-1]),
])
def test_target_layer_is_the_last_conv_stage(name, expected):
    torch.manual_seed(0)
    m = models.create(name, 3, in_chans=1, img_size=48)
    layer = explain.target_layer(m)
    assert layer is expected(m)
    assert any(layer is x for x in m.modules())
    x = models.preprocess(_images(2, 48), m.fer_cfg, "cpu")
    seen = []
    h = layer.register_forward_hook(lambda mod, i, o: seen.append(o))
    m.eval()(x)
    h.remove()
    assert seen and seen[0].ndim == 4  # a spatial map, as Grad-CAM needs


def test_target_layer_falls_back_to_the_last_conv():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    assert explain.target_layer(net) is net[2]


@pytest.mark.parametrize("name,size", [("small_cnn", 32), ("conv4net", 32),
                                       ("convnextv2_atto", 64)])
def test_gradcam_shape_range_and_mode(name, size):
    torch.manual_seed(0)
    m = models.create(name, 3, in_chans=1, img_size=size)
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    imgs = _images(3, 40)  # resized to the model input by preprocess, as in training
    cams = explain.gradcam(m, imgs, targets=[0, 1, 2])
    assert cams.shape == (3, size, size)
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert m.training  # mode restored
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    with pytest.raises(ValueError, match="targets"):
        explain.gradcam(m, imgs, targets=[0])
    with pytest.raises(TypeError):
        explain.gradcam(m, imgs.float())


def test_gradcam_finds_the_evidence():
    """A model whose class-1 score is the mean response of a brightness detector: for an image
    bright only in its top-left quadrant, the class-1 CAM sits in that quadrant (a transposed,
    flipped or mis-resized map would not)."""
    class Bright(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.relu = nn.ReLU()
            with torch.no_grad():
                self.conv.weight.fill_(1.0)
                self.conv.bias.zero_()

        def forward(self, x):
            s = self.relu(self.conv(x)).mean((1, 2, 3))
            return torch.stack([-s, s], 1)

    m = Bright()
    m.fer_cfg = dict(name="bright", input_size=(1, 16, 16), mean=(0.0,), std=(1.0,))
    img = torch.zeros((1, 1, 32, 32), dtype=torch.uint8)
    img[..., :16, :16] = 255
    cam = explain.gradcam(m, img, targets=[1], layer=m.relu)[0]
    assert cam.shape == (16, 16)
    assert cam[:6, :6].min() > 0.9  # (the resize blurs the quadrant edge a little)
    assert cam[10:, :].max() < 0.05 and cam[:, 10:].max() < 0.05


def test_pick_examples_splits_correct_and_wrong():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 1, 0, 1, 0, 2])
    conf = np.array([0.5, 0.9, 0.8, 0.6, 0.7, 0.4])
    picks = explain.pick_examples(y, pred, n_each=2, confidence=conf)
    assert picks[(0, "correct")] == [2, 0] and picks[(0, "wrong")] == [1]
    assert picks[(1, "correct")] == [3] and picks[(1, "wrong")] == [4]
    assert picks[(2, "wrong")] == []


class _DS:
    def __init__(self, images, labels):
        self.images, self.labels = images, torch.as_tensor(labels)


def test_figures_build():
    torch.manual_seed(0)
    m = models.create("small_cnn", 3, in_chans=1, img_size=32)
    ds = _DS(_images(9, 32), [0, 0, 0, 1, 1, 1, 2, 2, 2])
    probs = np.random.default_rng(0).dirichlet(np.ones(3), 9)
    figs = [explain.cam_grid(m, ds, probs, ["a", "b", "c"], n_each=1),
            explain.filter_grid(m), explain.activation_grid(m, ds.images[0], n_maps=4)]
    assert len(figs[0].axes) == 3 * 2
    assert len(figs[1].axes) == 32  # small_cnn's 32 first-layer kernels
    acts = explain.activations(m, ds.images[0], n_layers=2)
    assert [a.shape[0] for a in acts] == [32, 64] and acts[0].shape[-1] == 32
    assert (acts[0] < 0).any()  # the conv output itself, not overwritten by the in-place ReLU
    for f in figs:
        plt.close(f)
