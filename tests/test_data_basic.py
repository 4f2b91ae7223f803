"""Two-spiral generator, splits and range scaling."""

from __future__ import annotations

import math

import pytest
import torch

from bregnn.activations import activation
from bregnn.data import RangeScaler, split, target_interval, two_spirals


def test_two_spirals_is_deterministic_balanced_and_intertwined() -> None:
    x1, y1 = two_spirals(400, seed=3)
    x2, y2 = two_spirals(400, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(two_spirals(400, seed=4)[0], x1)
    assert y1.sum().item() == 200
    # noiseless points lie on the curves r (cos t, sin t), t = 2 pi turns r + c pi
    x, y = two_spirals(1000, noise=0.0, turns=1.75, seed=0)
    radius = x.norm(dim=1).double()
    assert radius.max() <= 1 + 1e-6
    angle = torch.atan2(x[:, 1], x[:, 0]).double()
    residual = torch.remainder(angle - 2 * math.pi * 1.75 * radius - math.pi * y, 2 * math.pi)
    assert torch.minimum(residual, 2 * math.pi - residual).max() < 1e-4


def test_split_partitions_the_data() -> None:
    x, y = two_spirals(100)
    (a, _), (b, _), (c, _) = split(x, y, (0.5, 0.3, 0.2))
    assert (len(a), len(b), len(c)) == (50, 30, 20)
    merged = torch.cat([a, b, c])
    assert torch.equal(torch.sort(merged[:, 0]).values, torch.sort(x[:, 0]).values)
    with pytest.raises(ValueError, match="summing to 1"):
        split(x, y, (0.5, 0.5, 0.5))


@pytest.mark.parametrize("name", ["atan", "sigmoid", "softplus", "asinh", "scaled_tanh"])
def test_range_scaler_lands_inside_the_domain(name: str) -> None:
    x, _ = two_spirals(200)
    lo, hi = target_interval(name)
    scaled = RangeScaler(name).fit_transform(x)
    assert scaled.min() >= lo - 1e-6 and scaled.max() <= hi + 1e-6
    dlo, dhi = activation(name).domain
    assert dlo < scaled.min() and scaled.max() < dhi


def test_range_scaler_errors() -> None:
    with pytest.raises(ValueError, match="before fit"):
        RangeScaler("atan").transform(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="fill"):
        target_interval("atan", fill=1.5)
    with pytest.raises(ValueError, match="n=1"):
        two_spirals(1)
