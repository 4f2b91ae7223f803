"""Pure functions of bregnn.functional: the Bregman divergence of phi."""

from __future__ import annotations

import math

import pytest
import torch

from bregnn import functional as F
from bregnn.activations import activation, available_activations
from bregnn.checks import domain_samples

INVERTIBLE = available_activations(invertible=True)


@pytest.mark.parametrize("name", INVERTIBLE)
def test_bregman_divergence_is_the_textbook_formula_inside_the_domain(name: str) -> None:
    act = activation(name)
    pts = domain_samples(act, 64).clamp(-3, 3)
    gen = torch.Generator().manual_seed(0)
    x = pts[torch.randperm(64, generator=gen)].reshape(16, 4)
    y = pts[torch.randperm(64, generator=gen)].reshape(16, 4)
    want = (act.phi(x) - act.phi(y) - act.rho_inv(y) * (x - y)).sum(-1)
    torch.testing.assert_close(F.bregman_divergence(x, y, act), want, rtol=1e-9, atol=1e-9)
    assert torch.equal(F.bregman_divergence(y, y, act) <= 1e-9, torch.ones(16, dtype=torch.bool))


def test_bregman_divergence_at_a_saturated_atan_is_inf_not_nan() -> None:
    edge = torch.tensor([[1.5707964]])  # float32(pi/2), just outside atan's domain
    below = torch.nextafter(edge, torch.zeros(1, 1))
    mid = torch.tensor([[0.5]])
    assert F.bregman_divergence(edge, mid, "atan").item() == math.inf
    assert F.bregman_divergence(mid, edge, "atan").item() == math.inf
    assert math.isfinite(F.bregman_divergence(below, mid, "atan").item())
    assert math.isfinite(F.bregman_divergence(mid, below, "atan").item())
    one = torch.ones(1, 1, dtype=torch.float64)  # scaled_atan: phi(1) = +inf
    assert F.bregman_divergence(one, 0.5 * one, "scaled_atan").item() == math.inf


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "isru", "sin", "scaled_tanh", "softplus"])
def test_bregman_divergence_at_saturated_outputs_is_finite(name: str) -> None:
    act = activation(name)
    y = act.rho(torch.tensor([[30.0, -30.0, 0.5]]))  # float32: the first two hit the edges
    x = act.rho(torch.tensor([[1.0, -2.0, 0.0]]))
    for a, b in ((x, y), (y, x), (y, y)):
        value = F.bregman_divergence(a, b, act)
        assert torch.isfinite(value).all() and (value >= 0).all(), (name, a, b, value)
