"""Batched augmentation: crops are slices of the padded image, flips are exact flips,
identity parameters give the identity, rotations by 90 degrees match ``torch.rot90``, pixel
ranges, shapes and dtypes are kept, and a seeded generator makes everything reproducible."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bregnn.data import (
    CropFlip,
    RandomAffine,
    affine_transform,
    crop_flip,
    random_affine,
    random_crop_flip,
)
from bregnn.train import TrainConfig, fit


def images(n: int = 8, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_crop_is_slice_of_padded_image_and_flip_is_exact():
    x = images(n=6, h=32, w=30)
    top = torch.tensor([0, 8, 3, 4, 7, 1])
    left = torch.tensor([8, 0, 5, 4, 2, 6])
    no_flip = torch.zeros(6, dtype=torch.bool)
    flip = torch.tensor([True, False, True, True, False, True])
    padded = F.pad(x, (4, 4, 4, 4))
    cropped = crop_flip(x, top, left, no_flip, padding=4)
    flipped = crop_flip(x, top, left, flip, padding=4)
    for i in range(6):  # reference: an explicit slice per image
        window = padded[i, :, top[i] : top[i] + 32, left[i] : left[i] + 30]
        assert torch.equal(cropped[i], window)
        assert torch.equal(flipped[i], window.flip(-1) if flip[i] else window)


def test_crop_identity_parameters():
    x = images()
    centre = torch.full((8,), 4)
    assert torch.equal(crop_flip(x, centre, centre, torch.zeros(8, dtype=torch.bool)), x)
    assert torch.equal(random_crop_flip(x, gen(), padding=0, flip=False), x)
    assert torch.equal(crop_flip(x, centre, centre, torch.ones(8, dtype=torch.bool)), x.flip(-1))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_random_crop_flip_keeps_shape_dtype_values(dtype):
    x = (images(n=64) * 255).to(dtype) if dtype == torch.uint8 else images(n=64).to(dtype)
    out = random_crop_flip(x, gen(3))
    assert out.shape == x.shape and out.dtype == dtype
    # every output pixel is a padding zero or a pixel of the same image and channel
    for n in (0, 17, 63):
        source = set(x[n].flatten().tolist()) | {0}
        assert set(out[n].flatten().tolist()) <= source
    assert out.min() >= min(x.min(), 0) and out.max() <= x.max()
    # all offsets and both flip states occur over a large batch
    big = random_crop_flip(torch.ones(2000, 1, 8, 8), gen(1), padding=4)
    zero_rows = (big[:, 0].sum(2) == 0).sum(1)
    assert set(zero_rows.tolist()) == set(range(5))


def test_random_crop_flip_is_seeded():
    x = images()
    a, b = random_crop_flip(x, gen(7)), random_crop_flip(x, gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, random_crop_flip(x, gen(8)))
    g = gen(7)
    first, second = random_crop_flip(x, g), random_crop_flip(x, g)
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_affine_identity():
    x = images(n=4, c=1, h=28, w=28)
    identity = affine_transform(x, torch.zeros(4), torch.ones(4))
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)  # float32 grid rounding
    u8 = (x * 255).round().to(torch.uint8)
    assert torch.equal(affine_transform(u8, torch.zeros(4), torch.ones(4)), u8)
    assert torch.equal(random_affine(u8, gen(), degrees=0, scale=(1, 1)), u8)


@pytest.mark.parametrize("size", [28, 5])
def test_affine_quarter_turn_is_rot90(size):
    x = images(n=3, c=2, h=size, w=size, seed=1)
    quarter = affine_transform(x, torch.full((3,), math.pi / 2), torch.ones(3))
    torch.testing.assert_close(quarter, torch.rot90(x, -1, (2, 3)), atol=1e-5, rtol=0)
    back = affine_transform(x, torch.full((3,), -math.pi / 2), torch.ones(3))
    torch.testing.assert_close(back, torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0)


def test_affine_agrees_with_torch_affine_grid():
    g = gen(5)
    x = torch.rand(16, 2, 12, 9, generator=g, dtype=torch.float64)
    angle = 3 * torch.rand(16, generator=g, dtype=torch.float64) - 1.5
    scale = 0.7 + 0.6 * torch.rand(16, generator=g, dtype=torch.float64)
    shift = 0.4 * torch.rand(16, 2, generator=g, dtype=torch.float64) - 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    linear = torch.stack((torch.stack((cos, sin), 1), torch.stack((-sin, cos), 1)), 1)
    theta = torch.cat((linear, -(linear @ shift.unsqueeze(2))), 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    expected = F.grid_sample(x, grid, align_corners=False)
    torch.testing.assert_close(affine_transform(x, angle, scale, shift), expected)


def test_affine_zoom_and_shift():
    # zoom by 2 about the centre: the central half of the image fills the output
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(1, 1, 1, 1)
    constant = torch.full((1, 1, 8, 8), 0.7)
    zoomed = affine_transform(constant, torch.zeros(1), torch.full((1,), 2.0))
    torch.testing.assert_close(zoomed, constant)  # zooming in never reaches the border
    shrunk = affine_transform(constant, torch.zeros(1), torch.full((1,), 0.5))
    assert shrunk[0, 0, 0, 0] == 0 and shrunk[0, 0, 4, 4] == pytest.approx(0.7)
    # a shift of one pixel (2/W in normalised units) to the right
    shifted = affine_transform(x, torch.zeros(1), torch.ones(1), torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(shifted[..., 1:], x[..., :-1])
    assert torch.all(shifted[..., 0] == 0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_affine_range_shape_dtype_seed(dtype):
    x = images(n=16, c=1, h=28, w=28)
    x = (x * 255).round().to(dtype) if dtype == torch.uint8 else x
    out = random_affine(x, gen(2), translate=0.1)
    assert out.shape == x.shape and out.dtype == dtype
    # bilinear weights are a convex combination of pixels and zero padding
    assert out.min() >= min(x.min(), 0) and out.max() <= x.max()
    assert torch.equal(out, random_affine(x, gen(2), translate=0.1))
    assert not torch.equal(out, random_affine(x, gen(3), translate=0.1))


def test_callables_flat_inputs_and_pickling():
    x = images(n=5, c=1, h=28, w=28)
    flat = x.reshape(5, -1)
    for transform, ref in (
        (RandomAffine(image_shape=(1, 28, 28)), random_affine),
        (CropFlip(padding=2, image_shape=(1, 28, 28)), random_crop_flip),
    ):
        out = transform(flat, gen(4))
        assert out.shape == flat.shape
        kwargs = {"padding": 2} if ref is random_crop_flip else {}
        assert torch.equal(out.reshape(x.shape), ref(x, gen(4), **kwargs))
        again = pickle.loads(pickle.dumps(transform))
        assert torch.equal(again(flat, gen(4)), out)


def test_transform_plugs_into_fit():
    """The ``(x, generator)`` signature is what :func:`bregnn.train.fit` calls."""
    torch.manual_seed(0)
    x = images(n=32, c=3, h=8, w=8)
    y = torch.arange(32) % 2
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    config = TrainConfig(lr=0.1, epochs=2, batch_size=16, progress=False)
    history = fit(model, (x, y), config, train_transform=CropFlip(padding=1))
    assert len(history.rows) == 2 and math.isfinite(history.rows[-1]["train_loss"])


def test_bad_arguments():
    x = images(n=2)
    with pytest.raises(ValueError, match=r"expected a batch of images \(N, C, H, W\)"):
        random_crop_flip(x[0], gen())
    with pytest.raises(ValueError, match=r"top offsets must lie in 0\.\.8"):
        crop_flip(x, torch.tensor([0, 9]), torch.tensor([0, 0]), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"left must have shape \(2,\)"):
        crop_flip(x, torch.tensor([0, 1]), torch.tensor([0]), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        crop_flip(x, torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.bool), -1)
    with pytest.raises(ValueError, match="0 < lo <= hi"):
        random_affine(x, gen(), scale=(1.1, 0.9))
    with pytest.raises(ValueError, match="degrees and translate must be >= 0"):
        random_affine(x, gen(), degrees=-1)
    with pytest.raises(ValueError, match=r"angle and scale must have shape \(2,\)"):
        affine_transform(x, torch.zeros(3), torch.ones(2))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    padding=st.integers(0, 4),
    data=st.data(),
)
def test_crop_flip_matches_slices_property(n, c, h, w, padding, data):
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)
    offsets = st.lists(st.integers(0, 2 * padding), min_size=n, max_size=n)
    top = torch.tensor(data.draw(offsets))
    left = torch.tensor(data.draw(offsets))
    flip = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    out = crop_flip(x, top, left, flip, padding)
    padded = F.pad(x, (padding,) * 4)
    for i in range(n):
        window = padded[i, :, top[i] : top[i] + h, left[i] : left[i] + w]
        assert torch.equal(out[i], window.flip(-1) if flip[i] else window)


@settings(max_examples=25, deadline=None)
@given(angle=st.floats(-math.pi, math.pi), zoom=st.floats(0.8, 1.25))
def test_affine_inverse_parameters_undo_on_the_centre(angle, zoom):
    """Rotating/zooming and then applying the inverse parameters returns the image wherever
    no pixel left the frame: an off-centre, elongated bump comes back to interpolation error."""
    grid = torch.linspace(-1, 1, 33)
    rows, cols = grid[:, None], grid[None, :]
    bump = torch.exp(-((cols - 0.3) ** 2) / 0.1 - rows**2 / 0.05).reshape(1, 1, 33, 33)
    there = affine_transform(bump, torch.tensor([angle]), torch.tensor([zoom]))
    back = affine_transform(there, torch.tensor([0.0]), torch.tensor([1 / zoom]))
    back = affine_transform(back, torch.tensor([-angle]), torch.tensor([1.0]))
    torch.testing.assert_close(back, bump, atol=0.1, rtol=0)  # wrong sign: up to 0.97
