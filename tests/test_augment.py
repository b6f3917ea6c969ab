"""Augmentation policies on uint8 batches."""
import pytest
import torch

from lib.training import augment
from lib.reporting import previews


def batch(n=16, c=3, h=24, w=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", augment.available())
@pytest.mark.parametrize("c", [1, 3])
def test_shape_dtype_and_determinism(name, c):
    x = batch(c=c)
    a = augment.apply(name, x, gen(1))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, augment.apply(name, x, gen(1)))  # same seed, same output
    if name != "none":
        assert not torch.equal(a, x)
        assert not torch.equal(a, augment.apply(name, x, gen(2)))


def test_none_and_zero_strength_are_identity():
    x = batch()
    assert torch.equal(augment.apply("none", x, gen()), x)
    for name in augment.available():
        assert torch.equal(augment.apply(name, x, gen(), strength=0.0), x), name


def test_flip_flips_some_and_only_flips():
    x = batch(n=32)
    y = augment.apply("flip", x, gen(3))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 0 < int(flipped.sum()) < 32  # p = .5: all-or-none has probability 2**-31


def test_affine_rotation_matches_rot90_and_identity_is_exact():
    x = batch(n=4, h=16, w=16).float() / 255
    n = torch.zeros(4)
    same = augment._affine(x, angle_deg=n)
    assert torch.equal((same * 255).round(), (x * 255).round())
    r = augment._affine(x, angle_deg=n + 90)  # counter-clockwise, as torchvision's rotate
    assert torch.allclose(r, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5)


def test_strength_scales_the_change():
    x = batch(n=64)

    def change(s):
        return (augment.apply("standard", x, gen(5), strength=s).float() - x.float()).abs().mean()

    assert change(0.25) < change(1.0) < change(2.0)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        augment.apply("standard", x, gen(), strength=2.5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown augmentation policy"):
        augment.apply("nope", batch())
    with pytest.raises(TypeError, match="uint8"):
        augment.apply("flip", batch().float())
    with pytest.raises(ValueError, match="unknown augmentation op"):
        augment.policy("targeted", extra=["nope"])


def test_class_specific_extra_only_touches_those_classes():
    x = batch(n=8)
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 1, 0])
    invert = lambda t, g, s: 1 - t  # noqa: E731
    pol = augment.policy("none", extra=[(invert, {1})])
    y = pol(x, gen(), labels)
    m = labels == 1
    assert torch.equal(y[m], 255 - x[m]) and torch.equal(y[~m], x[~m])
    with pytest.raises(ValueError, match="labels"):
        pol(x, gen())
    # named extra ops compose with a base policy
    t = augment.policy("targeted", extra=["erase"])(x, gen())
    assert t.shape == x.shape and not torch.equal(t, augment.apply("targeted", x, gen()))


def test_preview_grid_shape():
    g = previews.preview_grid(batch(n=5, c=1, h=16, w=16), "strong", n=4, rows=2)
    assert g.dtype == torch.uint8 and g.ndim == 3
    assert g.shape[1] == 3 * 16 + 4 * 2 and g.shape[2] == 4 * 16 + 5 * 2  # 3 rows, 4 columns


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = batch()
    for name in augment.available():
        a = augment.apply(name, x, gen(7))
        b = augment.apply(name, x.cuda(), gen(7)).cpu()
        assert (a.int() - b.int()).abs().max() <= 1, name


def test_shift_moves_whole_pixels_only():
    import torch.nn.functional as F

    x = torch.randint(0, 256, (6, 1, 24, 24), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    out = augment.op_shift(x.float(), torch.Generator().manual_seed(1), 1.0)
    m = 2  # 1/12 of 24 px
    pad = F.pad(x.float(), (m, m, m, m), mode="reflect")
    for i in range(len(x)):  # each output is one integer window of the reflect-padded input
        assert any(torch.equal(out[i, 0], pad[i, 0, dy:dy + 24, dx:dx + 24])
                   for dy in range(2 * m + 1) for dx in range(2 * m + 1))
    assert torch.equal(augment.op_shift(x.float(), None, 0.0), x.float())
