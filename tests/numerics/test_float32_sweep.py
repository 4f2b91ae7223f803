"""A float32 sweep of every registered activation: no NaN anywhere, +inf only where the maths
is infinite.

For each activation: 10^6 inputs spread over [-1e4, 1e4] plus the exact edges of the domain
and one float step inside and outside each (``torch.nextafter``), and 10^5 saturated outputs
of ``rho`` (``rho`` of every 10th input), through ``rho``, ``rho_inv``, ``phi``,
``phi_conj``, ``prox`` (t = 0.5, 1, 2 where defined), the lifted Bregman loss, its
closed-form gradients and its autograd gradients, forward and backward. ``+inf`` is allowed
only for ``phi`` (and the loss) outside the domain or on an edge where ``phi`` is infinite
(the atan family), for the slope of ``phi`` on an edge where ``rho_inv`` is infinite, and
where ``asinh``'s ``sinh``/``cosh`` overflow float32 (``|x| > 88``). The prox for ``t != 1``
is a 64-step bisection in float64; it runs on every 10th point of the sweep (plus all the
edge points) to keep this file at a few seconds.
"""

from __future__ import annotations

import math

import pytest
import torch

from bregnn.activations import ACTIVATIONS, Activation, activation
from bregnn.lifted.losses import bregman_loss, bregman_loss_grad_x, bregman_loss_grad_z

# the sweep feeds rho_inv points far outside its domain on purpose
pytestmark = pytest.mark.filterwarnings("ignore:rho_inv:UserWarning")

N = 10**6
F32 = torch.float32
OVERFLOW = 88.0  # float32 sinh and cosh overflow from |x| = 88.7 on (they go through exp)


def _edges(act: Activation) -> torch.Tensor:
    """Each finite edge of the closed domain in float32, one step inside and one outside."""
    points = []
    for bound in act.closed_domain(F32):
        if math.isfinite(bound):
            b = torch.tensor(bound, dtype=F32)
            points += [b, torch.nextafter(b, torch.tensor(math.inf)),
                       torch.nextafter(b, torch.tensor(-math.inf))]  # fmt: skip
    for bound in act.domain:  # the mathematical bound rounded to nearest, maybe outside
        if math.isfinite(bound):
            points.append(torch.tensor(bound, dtype=F32))
    return torch.stack(points) if points else torch.zeros(0, dtype=F32)


def _sweep(act: Activation) -> torch.Tensor:
    return torch.cat([torch.linspace(-1e4, 1e4, N, dtype=F32), _edges(act)])


def _nan_free(name: str, value: torch.Tensor, may_be_inf: torch.Tensor | bool = False) -> None:
    assert not value.isnan().any(), f"{name}: {int(value.isnan().sum())} NaN"
    bad = value.isinf() & ~torch.as_tensor(may_be_inf)
    assert not bad.any(), f"{name}: unexpected inf at {bad.nonzero()[:5].flatten().tolist()}"


def _value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.clone().requires_grad_(True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), grad


SEPARABLE = [n for n in ACTIVATIONS if ACTIVATIONS[n].separable]


def _steps(act: Activation) -> list[float]:
    max_step = math.inf if act.lipschitz <= 1 else act.lipschitz / (act.lipschitz - 1)
    return [t for t in (0.5, 1.0, 2.0) if t < max_step]


@pytest.mark.parametrize("name", SEPARABLE)
def test_float32_sweep(name: str) -> None:
    act = activation(name)
    z = _sweep(act)
    every_tenth = torch.cat([z[:N:10], z[N:]])
    x = torch.cat([z, act.rho(every_tenth)])  # inputs and (mostly saturated) outputs of rho

    # rho, forward and backward: finite everywhere
    value, grad = _value_and_grad(act.rho, z)
    _nan_free("rho", value)
    _nan_free("rho backward", grad)

    # phi_conj (whose slope is rho): finite everywhere
    value, grad = _value_and_grad(act.phi_conj, z)
    _nan_free("phi_conj", value)
    _nan_free("phi_conj backward", grad)

    # rho_inv: clamped into the domain, finite except sinh's overflow
    if act.invertible:
        big = (x.abs() > OVERFLOW) if name == "asinh" else False
        value, grad = _value_and_grad(act.rho_inv, x)
        _nan_free("rho_inv", value, big)
        _nan_free("rho_inv backward", grad, big)

    # phi: +inf outside the domain (and on the edge for the atan family), slope never NaN
    outside = act.outside_domain(x)
    infinite_edge = x.abs() == 1 if name in ("scaled_atan", "isru") else torch.zeros_like(outside)
    big = (x.abs() > OVERFLOW) if name == "asinh" else torch.zeros_like(outside)
    value, grad = _value_and_grad(act.phi, x)
    phi_inf = outside | big | (infinite_edge if name == "scaled_atan" else False)
    _nan_free("phi", value, phi_inf)
    assert (value[outside] == math.inf).all(), "phi must be +inf outside the domain"
    _nan_free("phi backward", grad, infinite_edge | big)

    # prox for several steps: finite, forward and backward
    for t in _steps(act):
        inputs = z if t == 1.0 else every_tenth
        value, grad = _value_and_grad(lambda v, t=t: act.prox(v, t), inputs)
        _nan_free(f"prox(t={t})", value)
        _nan_free(f"prox(t={t}) backward", grad)

    # the loss at (x, z): x in the domain (rho's outputs, edges included) and outside it
    xs = torch.cat([act.rho(z.flip(0)), z])[: len(z)].reshape(-1, 1)
    xs[: len(_edges(act))] = _edges(act).reshape(-1, 1)
    zs = z.reshape(-1, 1)
    out_x = act.outside_domain(xs)
    big_x = (xs.abs() > OVERFLOW) if name == "asinh" else torch.zeros_like(out_x)
    edge_inf = (xs.abs() == 1) if name == "scaled_atan" else torch.zeros_like(out_x)
    leaf_x, leaf_z = xs.clone().requires_grad_(True), zs.clone().requires_grad_(True)
    loss = bregman_loss(leaf_x, leaf_z, act)
    gx, gz = torch.autograd.grad(loss.sum(), (leaf_x, leaf_z))
    _nan_free("loss", loss, (out_x | big_x | edge_inf).flatten())
    assert (loss >= 0).all()
    closed_x, closed_z = bregman_loss_grad_x(xs, zs, act), bregman_loss_grad_z(xs, zs, act)
    _nan_free("bregman_loss_grad_x", closed_x, big_x)
    _nan_free("bregman_loss_grad_z", closed_z)
    _nan_free("loss autograd x", gx, big_x)
    _nan_free("loss autograd z", gz)
    inside = ~out_x
    assert torch.equal(gx[inside], closed_x[inside]) and torch.equal(gz[inside], closed_z[inside])


def test_float32_sweep_softmax() -> None:
    act = activation("softmax")
    z = torch.linspace(-1e4, 1e4, N, dtype=F32).reshape(-1, 4)
    z = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(0))]
    value, grad = _value_and_grad(act.rho, z)
    _nan_free("rho", value)
    _nan_free("rho backward", grad)
    x = act.rho(z)  # mostly vertices of the simplex: saturated
    x[:3] = torch.eye(3, 4)
    off = torch.cat([z[:1000], -x[:1000], x[:1000] + 1e-3])
    value = act.phi(torch.cat([x, off]))
    _nan_free("phi", value, torch.arange(len(value)) >= len(x))
    assert (value[len(x) :] == math.inf).all()
    for t, rows in ((1.0, z), (0.5, z[:1000])):
        value, grad = _value_and_grad(lambda v, t=t: act.prox(v, t), rows)
        _nan_free(f"prox(t={t})", value)
        _nan_free(f"prox(t={t}) backward", grad)
    xs = torch.cat([x, off])
    zs = torch.cat([z.flip(0), z[:3000]])
    leaf_x, leaf_z = xs.clone().requires_grad_(True), zs.clone().requires_grad_(True)
    loss = bregman_loss(leaf_x, leaf_z, act)
    gx, gz = torch.autograd.grad(loss.sum(), (leaf_x, leaf_z))
    _nan_free("loss", loss, torch.arange(len(loss)) >= len(x))
    for label, g in (("autograd x", gx), ("autograd z", gz)):
        _nan_free(f"loss {label}", g)
    _nan_free("bregman_loss_grad_x", bregman_loss_grad_x(xs, zs, act))
    _nan_free("bregman_loss_grad_z", bregman_loss_grad_z(xs, zs, act))
