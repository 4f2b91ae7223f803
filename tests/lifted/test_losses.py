"""Properties of the lifted Bregman loss B_Psi(x, z)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bregnn.activations import activation
from bregnn.lifted.losses import bregman_loss, bregman_loss_grad_x, bregman_loss_grad_z

CLOSED = ["relu", "soft_threshold", "tanh", "sigmoid", "identity", "softmax"]
GENERIC = ["atan", "scaled_atan", "isru", "asinh", "softplus"]
ALL = CLOSED + GENERIC

vectors = st.lists(st.floats(-4, 4, allow_nan=False), min_size=4, max_size=4)


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _point(act, u: torch.Tensor) -> torch.Tensor:
    """A point of dom Psi: x = rho(u) (also hits the boundary, e.g. relu zeros)."""
    return act.rho(u)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=30, deadline=None)
@given(u=vectors, z=vectors)
def test_lower_bound_and_zero(name, u, z):
    act = activation(name)
    x, z = _point(act, _t(u)), _t(z)
    b = bregman_loss(x, z, act)
    bound = 0.5 * ((x - act.rho(z)) ** 2).sum(-1)
    assert torch.isfinite(b)
    assert b >= bound - 1e-9 * (1 + bound.abs())
    assert bound >= 0
    assert bregman_loss(act.rho(z), z, act).abs() <= 1e-8


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=25, deadline=None)
@given(u=vectors, z=vectors)
def test_zero_only_at_rho(name, u, z):
    act = activation(name)
    x, z = _point(act, _t(u)), _t(z)
    b = bregman_loss(x, z, act)
    gap = (x - act.rho(z)).norm()
    if gap > 1e-3:
        assert b > 0.5 * gap**2 * 0.999


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=20, deadline=None)
@given(u=vectors, z=vectors)
def test_grad_z_is_rho_minus_x(name, u, z):
    act = activation(name)
    # autograd picks relu'(0) = 0 at the kinks of the piecewise closed forms (0, +-alpha),
    # where B itself is differentiable; compare away from them
    z = [v if all(abs(abs(v) - k) > 1e-6 for k in (0.0, 0.1)) else v + 0.0123 for v in z]
    x = _point(act, _t(u))
    zz = _t(z).requires_grad_(True)
    (g,) = torch.autograd.grad(bregman_loss(x, zz, act), zz)
    torch.testing.assert_close(g, bregman_loss_grad_z(x, zz.detach(), act), atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(g, act.rho(zz.detach()) - x, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "atan", "isru", "asinh", "identity"])
@settings(max_examples=20, deadline=None)
@given(u=st.lists(st.floats(-2, 2), min_size=4, max_size=4), z=vectors)
def test_grad_x_is_dpsi_plus_x_minus_z(name, u, z):
    act = activation(name)
    xx = _point(act, _t(u)).requires_grad_(True)
    (g,) = torch.autograd.grad(bregman_loss(xx, _t(z), act), xx)
    torch.testing.assert_close(
        g, bregman_loss_grad_x(xx.detach(), _t(z), act), atol=1e-7, rtol=1e-6
    )


@pytest.mark.parametrize("name", ["relu", "soft_threshold"])
@settings(max_examples=20, deadline=None)
@given(u=vectors, z=vectors)
def test_grad_x_nonsmooth_interior(name, u, z):
    """Where Psi is differentiable (x != 0) the subgradient is the autograd gradient."""
    act = activation(name)
    x = _point(act, _t(u))
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(bregman_loss(xx, _t(z), act), xx)
    mask = x != 0
    torch.testing.assert_close(g[mask], bregman_loss_grad_x(x, _t(z), act)[mask])


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=25, deadline=None)
@given(u1=vectors, u2=vectors, z1=vectors, z2=vectors)
def test_convex_in_each_argument(name, u1, u2, z1, z2):
    act = activation(name)
    x1, x2 = _point(act, _t(u1)), _point(act, _t(u2))
    z1, z2 = _t(z1), _t(z2)
    tol = 1e-9
    mid_x = bregman_loss(0.5 * (x1 + x2), z1, act)
    assert mid_x <= 0.5 * (bregman_loss(x1, z1, act) + bregman_loss(x2, z1, act)) + tol * (
        1 + mid_x
    )
    mid_z = bregman_loss(x1, 0.5 * (z1 + z2), act)
    assert mid_z <= 0.5 * (bregman_loss(x1, z1, act) + bregman_loss(x1, z2, act)) + tol * (
        1 + mid_z
    )


@pytest.mark.parametrize(
    "name",
    ["relu", "soft_threshold", "tanh", "sigmoid", "softmax", "softplus", "atan", "scaled_atan"],
)
@settings(max_examples=25, deadline=None)
@given(u=vectors, z=vectors)
def test_closed_form_matches_phi_plus_conjugate(name, u, z):
    act = activation(name)
    x, z = _point(act, _t(u)), _t(z)
    phi, conj = act.phi(x), act.phi_conj(z)
    if act.separable:
        phi, conj = phi.sum(-1), conj.sum(-1)
    generic = phi + conj - (x * z).sum(-1)
    torch.testing.assert_close(bregman_loss(x, z, act), generic, atol=1e-9, rtol=1e-9)


def test_paper_closed_forms_by_hand():
    x = _t([0.0, 1.0, 2.0])
    z = _t([-1.0, 1.0, -0.5])
    # ReLU: 1/2|x - max(z,0)|^2 + <x, max(-z, 0)>
    relu = 0.5 * (0 + 0 + 4) + (0 * 1 + 0 + 2 * 0.5)
    assert bregman_loss(x, z, "relu").item() == pytest.approx(relu)
    # soft-thresholding with alpha = 0.5: S(z) = (-0.5, 0.5, 0)
    soft = 0.5 * ((0 + 0.5) ** 2 + 0.5**2 + 2**2) + 0.5 * 3 - (0 * -0.5 + 1 * 0.5 + 2 * -0.5)
    assert bregman_loss(x, z, activation("soft_threshold", alpha=0.5)).item() == pytest.approx(soft)
    # tanh at x = 0: log cosh z
    assert bregman_loss(torch.zeros(3, dtype=torch.float64), z, "tanh").item() == pytest.approx(
        sum(math.log(math.cosh(v)) for v in z.tolist())
    )
    # softmax: KL(x || softmax z) = cross-entropy minus entropy
    p = _t([0.2, 0.3, 0.5])
    ce = -(p * torch.log_softmax(z, -1)).sum()
    assert bregman_loss(p, z, "softmax").item() == pytest.approx((ce + (p * p.log()).sum()).item())
    # identity: 1/2 |x - z|^2
    assert bregman_loss(x, z, "identity").item() == pytest.approx(0.5 * (1 + 0 + 6.25))


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("relu", [-0.1, 1.0]),
        ("tanh", [1.5, 0.0]),
        ("sigmoid", [-0.2, 0.5]),
        ("softmax", [0.7, 0.7]),
    ],
)
def test_outside_domain_is_inf_or_error(name, bad):
    x, z = _t(bad), _t([0.3, -0.2])
    value = bregman_loss(x, z, name)
    assert torch.isinf(value) and value > 0 and not torch.isnan(value)
    with pytest.raises(ValueError, match="domain"):
        bregman_loss(x, z, name, checked=True)


def test_float32_saturation_is_finite():
    x = torch.tensor([1.0, 0.0], dtype=torch.float32)
    z = torch.tensor([40.0, -40.0], dtype=torch.float32)
    value = bregman_loss(x, z, "sigmoid")
    assert torch.isfinite(value) and value >= 0


def test_atan_loss_at_float32_half_pi_is_inf_not_nan():
    # float32(pi/2) = 1.5707964 > pi/2: outside the domain, where cos(x) < 0 in float32
    value = bregman_loss(torch.tensor([[1.5707964]]), torch.zeros(1, 1), "atan")
    assert value.item() == math.inf
    below = torch.nextafter(torch.tensor([[1.5707964]]), torch.zeros(1, 1))
    assert math.isfinite(bregman_loss(below, torch.zeros(1, 1), "atan").item())
    with pytest.raises(ValueError, match="domain"):
        bregman_loss(torch.tensor([[1.5707964]]), torch.zeros(1, 1), "atan", checked=True)
    one = torch.ones(1, 1, dtype=torch.float64)  # scaled_atan: phi(1) = +inf
    assert bregman_loss(one, torch.zeros_like(one), "scaled_atan").item() == math.inf


# -- autograd returns the closed-form gradients ------------------------------------------------
def _autograd(x, z, act):
    xx, zz = x.clone().requires_grad_(True), z.clone().requires_grad_(True)
    return torch.autograd.grad(bregman_loss(xx, zz, act).sum(), (xx, zz))


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "isru", "sin", "scaled_tanh", "softmax"])
def test_autograd_at_a_saturated_float32_output_is_the_closed_form(name):
    act = activation(name)
    u = torch.tensor([[30.0, -30.0, 0.0]]) if name != "isru" else torch.tensor([[1e4, -1e4, 0.0]])
    x = act.rho(u)  # float32: sigmoid(30.) == 1.0 exactly, tanh(30.) == 1.0, ...
    assert x.max().item() == act.closed_domain(torch.float32)[1] or name == "softmax"
    z = torch.tensor([[0.5, -1.0, 2.0]])
    gx, gz = _autograd(x, z, act)
    assert torch.isfinite(gx).all() and torch.isfinite(gz).all()
    assert torch.equal(gx, bregman_loss_grad_x(x, z, act))
    assert torch.equal(gz, bregman_loss_grad_z(x, z, act))


def _edge_and_inside(act, dtype):
    """Per feature: each finite edge of the closed domain and one float step inside it."""
    values = []
    for bound, inward in zip(act.closed_domain(dtype), (math.inf, -math.inf)):
        if math.isfinite(bound):
            b = torch.tensor(bound, dtype=dtype)
            values += [b, torch.nextafter(b, torch.tensor(inward, dtype=dtype))]
    return torch.stack(values or [torch.zeros((), dtype=dtype)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [n for n in ALL if n != "softmax"])
def test_autograd_equals_the_closed_form_at_and_next_to_every_edge(name, dtype):
    act = activation(name)
    edge = _edge_and_inside(act, dtype)
    z = torch.linspace(-40, 40, 9, dtype=dtype)
    x = edge.repeat_interleave(len(z)).reshape(-1, 1)
    z = z.repeat(len(edge)).reshape(-1, 1)
    gx, gz = _autograd(x, z, act)
    assert torch.isfinite(gx).all() and torch.isfinite(gz).all()
    assert torch.equal(gx, bregman_loss_grad_x(x, z, act))
    assert torch.equal(gz, bregman_loss_grad_z(x, z, act))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_autograd_equals_the_closed_form_at_the_vertices(dtype):
    x = torch.eye(3, dtype=dtype)  # the vertices of the simplex: saturated softmax outputs
    z = torch.tensor([[2.0, -1.0, 0.5]], dtype=dtype).expand(3, 3)
    gx, gz = _autograd(x, z, "softmax")
    assert torch.isfinite(gx).all() and torch.isfinite(gz).all()
    assert torch.equal(gx, bregman_loss_grad_x(x, z, "softmax"))
    assert torch.equal(gz, bregman_loss_grad_z(x, z, "softmax"))


@pytest.mark.parametrize("name", ALL)
def test_gradcheck_in_the_interior(name):
    act = activation(name)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    x = act.rho(u)
    if name in ("relu", "soft_threshold"):  # away from x = 0, where Psi has its kink
        x = x.abs() + 0.2
    z = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    z = torch.where((z.abs() - 0.1).abs() < 0.05, z + 0.2, z)  # away from z = +-alpha, 0
    z = torch.where(z.abs() < 0.05, z + 0.2, z)
    torch.autograd.gradcheck(
        lambda a, b: bregman_loss(a, b, act), (x.requires_grad_(), z.requires_grad_())
    )


@pytest.mark.parametrize("name", [n for n in ALL if n != "softmax"])
def test_float32_loss_at_huge_preactivations_is_never_nan(name):
    # |z| up to the float32 maximum: z * z overflows, which the closed forms must not meet
    act = activation(name)
    z = torch.tensor([1e30, -1e30, 3e38, -3e38, 1e20, -1e20, 1e10]).reshape(-1, 1)
    if name == "asinh":  # cosh(asinh(z)) itself overflows float32 from |z| = 1.7e38 on
        z = z[z.abs() < 1e38].reshape(-1, 1)
    for x in (act.rho(z), act.clamp_to_closed_domain(torch.full_like(z, 0.5))):
        xx, zz = x.clone().requires_grad_(True), z.clone().requires_grad_(True)
        loss = bregman_loss(xx, zz, act)
        gx, gz = torch.autograd.grad(loss.sum(), (xx, zz))
        assert not loss.isnan().any() and (loss >= 0).all(), (name, x, loss)
        assert not gx.isnan().any() and not gz.isnan().any()
    if name != "scaled_atan":  # rho(1e30) rounds to 1.0, where its phi is infinite
        assert torch.isfinite(bregman_loss(act.rho(z), z, act)).all()
