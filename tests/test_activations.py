"""Every face of every registered activation: identities, autograd, prox optimality, edges."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bregnn.activations import (
    ACTIVATIONS,
    ISRU,
    Activation,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    activation,
    available_activations,
    dilogarithm,
    domain_margin,
)
from bregnn.checks import check_activation, domain_samples

ALL = sorted(ACTIVATIONS)
INVERTIBLE = available_activations(invertible=True)
SEPARABLE = [n for n in ALL if ACTIVATIONS[n].separable]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ALL)
def test_check_activation_passes(name: str, dtype: torch.dtype) -> None:
    check_activation(name, dtype=dtype)


def test_check_activation_catches_a_wrong_activation() -> None:
    class Broken(Activation):
        name = "broken"
        lo, hi = -1.0, 1.0

        def rho(self, z):
            return torch.tanh(z)

        def _rho_inv(self, y):
            return torch.atanh(y)

        def _phi(self, x):  # the derivative of this is 2 artanh: wrong
            return (1 + x) * torch.log1p(x) + (1 - x) * torch.log1p(-x)

    with pytest.raises(AssertionError, match="grad\\(phi\\)"):
        check_activation(Broken())


@settings(max_examples=60, deadline=None)
@given(u=st.floats(0.001, 0.999), name=st.sampled_from(INVERTIBLE))
def test_rho_inverts_rho_inv_anywhere_in_domain(u: float, name: str) -> None:
    act = activation(name)
    lo, hi = act.domain
    lo_s = lo if math.isfinite(lo) else -30.0
    hi_s = hi if math.isfinite(hi) else 30.0
    y = torch.tensor([lo_s + u * (hi_s - lo_s)], dtype=torch.float64)
    assert torch.allclose(act.rho(act.rho_inv(y)), y, rtol=1e-10, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(z=st.floats(-50, 50), t=st.floats(0.05, 3.0), name=st.sampled_from(INVERTIBLE))
def test_prox_solves_its_optimality_condition(z: float, t: float, name: str) -> None:
    act = activation(name)
    if act.lipschitz > 1 and t >= act.lipschitz / (act.lipschitz - 1):
        with pytest.raises(ValueError, match="Lipschitz"):
            act.prox(torch.tensor([z], dtype=torch.float64), t)
        return
    zt = torch.tensor([z], dtype=torch.float64)
    x = act.prox(zt, t)
    # (1 - t) x + t rho_inv(x) = z, written without rho_inv so saturated x is fine
    u = (zt - (1 - t) * x) / t
    assert torch.allclose(act.rho(u), x, atol=1e-9)


@pytest.mark.parametrize("name", INVERTIBLE)
def test_gradcheck_rho_rho_inv_phi(name: str) -> None:
    act = activation(name)
    z = torch.linspace(-3, 3, 9, dtype=torch.float64)
    if name == "sin":  # the clip has a kink at +-pi/2; stay inside
        z = torch.linspace(-1.4, 1.4, 9, dtype=torch.float64)
    y = domain_samples(act, 9).clamp(-3, 3)
    torch.autograd.gradcheck(act.rho, (z.requires_grad_(),))
    torch.autograd.gradcheck(act.rho_inv, (y.clone().requires_grad_(),))
    torch.autograd.gradcheck(act.phi, (y.clone().requires_grad_(),))
    torch.autograd.gradcheck(act.phi_conj, (z.clone().requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ALL)
def test_no_nan_or_inf_forward_backward_on_large_inputs(name: str, dtype: torch.dtype) -> None:
    act = activation(name)
    z = torch.linspace(-1e4, 1e4, 2001, dtype=dtype).reshape(-1, 1).repeat(1, 3)
    z.requires_grad_(True)
    out = act.rho(z)
    (grad,) = torch.autograd.grad(out.sum(), z)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [n for n in INVERTIBLE if n != "asinh" and n != "identity"])
def test_rho_inv_is_finite_at_and_beyond_the_domain_edges(name: str, dtype: torch.dtype) -> None:
    act = activation(name)
    lo, hi = act.domain
    edges = [e for e in (lo, hi) if math.isfinite(e)]
    y = torch.tensor([e + s for e in edges for s in (-1.0, 0.0, 1.0)], dtype=dtype)
    y.requires_grad_(True)
    with pytest.warns(UserWarning, match="outside the range"):  # edge +- 1: deliberately
        inv = act.rho_inv(y)
    (grad,) = torch.autograd.grad(inv.sum(), y)
    assert torch.isfinite(inv).all() and torch.isfinite(grad).all()
    # clamping is to the documented margin: values at/outside an edge equal the clamped value
    for e in edges:
        inside = e + domain_margin(e, dtype) if e == lo else e - domain_margin(e, dtype)
        at = act.rho_inv(torch.tensor([e], dtype=dtype))
        assert torch.equal(at, act.rho_inv(torch.tensor([inside], dtype=dtype)))


def test_saturated_float32_outputs_map_back_finitely() -> None:
    sig = activation("sigmoid")
    y = sig.rho(torch.tensor([20.0, -120.0]))
    assert y[0].item() == 1.0  # float32 saturates
    inv = sig.rho_inv(y)
    assert torch.isfinite(inv).all()
    assert inv[0] > 15 and inv[1] < -80


@pytest.mark.parametrize("beta", [1.0, 10.0, 100.0, 1000.0])
def test_softplus_rho_inv_accurate_in_float32_for_large_beta(beta: float) -> None:
    act = activation("softplus", beta=beta)
    z64 = torch.linspace(-5 / beta, 50 / beta, 201, dtype=torch.float64)
    y64 = act.rho(z64)
    inv32 = act.rho_inv(y64.float()).double()
    # the float32 rounding of y bounds the attainable accuracy: |d rho_inv/dy| * |dy|
    slope = 1 / torch.sigmoid(beta * z64)
    bound = 4 * slope * y64.abs() * torch.finfo(torch.float32).eps + 1e-7
    assert ((inv32 - z64).abs() <= bound).all()


def test_identity_layer_formula_tables_agree_with_design() -> None:
    # spot values of each rho / rho_inv row of the design table
    t = torch.tensor([0.3], dtype=torch.float64)
    A, B = 1.7159, 0.6666
    rows = {
        "sigmoid": (torch.log(t / (1 - t)),),
        "tanh": (torch.atanh(t),),
        "scaled_tanh": (torch.atanh(t / A) / B,),
        "atan": (torch.tan(t),),
        "scaled_atan": (torch.tan(math.pi * t / 2),),
        "isru": (t / torch.sqrt(1 - t**2),),
        "asinh": (torch.sinh(t),),
        "softplus": (torch.log(torch.expm1(t)),),
        "sin": (torch.asin(t),),
    }
    for name, (want,) in rows.items():
        assert torch.allclose(activation(name).rho_inv(t), want), name


def test_dilogarithm_known_values() -> None:
    x = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0], dtype=torch.float64)
    series = torch.tensor(
        [sum(v**k / k**2 for k in range(1, 4000)) for v in (0.0, 0.25, 0.5, 0.9)]
        + [math.pi**2 / 6],
        dtype=torch.float64,
    )
    assert torch.allclose(dilogarithm(x), series, atol=1e-10)
    assert math.isclose(dilogarithm(x)[2].item(), math.pi**2 / 12 - math.log(2) ** 2 / 2)


@pytest.mark.parametrize("name", ["relu", "identity"])
def test_generic_prox_solver_matches_closed_forms(name: str) -> None:
    act = activation(name)
    z = torch.linspace(-4, 4, 41, dtype=torch.float64)
    for t in (0.2, 1.7):
        assert torch.allclose(act._generic_prox(z, t), act.prox(z, t), atol=1e-12)


def test_soft_threshold_prox_is_shrinkage_at_t_alpha() -> None:
    act = activation("soft_threshold", alpha=0.3)
    z = torch.tensor([-1.0, -0.2, 0.0, 0.5, 2.0], dtype=torch.float64)
    want = torch.tensor([-0.4, 0.0, 0.0, 0.0, 1.4], dtype=torch.float64)
    assert torch.allclose(act.prox(z, 2.0), want)


def test_softmax_prox_kkt_for_small_t() -> None:
    act = Softmax()
    z = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for t in (0.25, 0.7):
        x = act.prox(z, t)
        assert torch.allclose(x.sum(-1), torch.ones(5, dtype=torch.float64))
        residual = (1 - t) * x + t * torch.log(x) - (z - t)  # = -nu, constant per row
        assert (residual.max(-1).values - residual.min(-1).values).max() < 1e-9
    with pytest.raises(ValueError, match="0 < t <= 1"):
        act.prox(z, 1.5)


def test_phi_and_psi_are_inf_outside_the_domain_never_nan() -> None:
    for name in SEPARABLE:
        act = activation(name)
        lo, hi = act.domain
        outside = [v for v in (lo - 1, hi + 1) if math.isfinite(v)]
        if not outside:
            continue
        val = act.psi(torch.tensor(outside, dtype=torch.float64))
        assert torch.isinf(val).all() and (val > 0).all(), name
    assert torch.isinf(Softmax().phi(torch.tensor([[0.5, 0.6]]))).all()


def test_registry_passes_objects_through_and_builds_by_name() -> None:
    act = activation("softplus", beta=10)
    assert activation(act) is act
    assert act.beta == 10.0 and act.key == activation("Softplus", beta=10.0).key
    assert isinstance(activation("relu"), ReLU)


def test_registry_errors_name_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish'.*'sigmoid'"):
        activation("swish")
    with pytest.raises(ValueError, match="parameters"):
        activation(activation("tanh"), beta=2)
    with pytest.raises(ValueError, match="bad parameters"):
        activation("tanh", beta=2)
    with pytest.raises(ValueError, match="beta > 0"):
        activation("softplus", beta=0)
    with pytest.raises(TypeError):
        activation(3)


def test_non_invertible_rho_inv_raises_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="not invertible.*atan"):
        activation("relu").rho_inv(torch.zeros(2))


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_prox_rejects_non_positive_steps(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        activation("tanh").prox(torch.zeros(3), bad)


def test_activations_pickle_and_compare_by_key() -> None:
    import io

    for name in ALL:
        buf = io.BytesIO()
        torch.save(activation(name), buf)
        buf.seek(0)
        assert torch.load(buf, weights_only=False).key == activation(name).key


def test_activation_modules_have_identity_semantics() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), Sigmoid(), torch.nn.Linear(2, 2), Sigmoid())
    # named_modules() de-duplicates by hash/equality: both Sigmoids must be listed
    assert [name for name, _ in model.named_modules() if name] == ["0", "1", "2", "3"]
    assert model[1] != model[3] and hash(model[1]) != hash(model[3])
    assert model[1].key == model[3].key == ("sigmoid", ())
    assert len({activation("softplus", beta=2.0).key, Softplus(beta=2.0).key}) == 1
    assert activation("softplus", beta=2.0).key != Softplus(beta=3.0).key


@pytest.mark.parametrize("name", INVERTIBLE)
def test_rho_inv_rho_is_the_round_trip(name: str) -> None:
    act = activation(name)
    u = torch.linspace(-3, 3, 61, dtype=torch.float64)
    assert torch.allclose(act.rho_inv_rho(u), act.rho_inv(act.rho(u)), atol=1e-9)


# -- the edges of the domain, in every dtype ----------------------------------------------------
def _edge_points(act: Activation, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed-domain bounds in ``dtype`` with one float step inside, and one step outside."""
    inside, outside = [], []
    for bound, inward in zip(act.closed_domain(dtype), (math.inf, -math.inf)):
        if math.isfinite(bound):
            b = torch.tensor(bound, dtype=dtype)
            inside += [b, torch.nextafter(b, torch.tensor(inward, dtype=dtype))]
            outside.append(torch.nextafter(b, torch.tensor(-inward, dtype=dtype)))
    return torch.stack(inside), torch.stack(outside)


BOUNDED = [n for n in SEPARABLE if any(map(math.isfinite, activation(n).domain))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", BOUNDED)
def test_phi_is_finite_inside_and_inf_outside_never_nan(name: str, dtype: torch.dtype) -> None:
    act = activation(name)
    inside, outside = _edge_points(act, dtype)
    for x, must_be_inf in ((inside, None), (outside, True)):
        x = x.clone().requires_grad_(True)
        phi = act.phi(x)
        (grad,) = torch.autograd.grad(phi.sum(), x)
        assert not phi.isnan().any() and not grad.isnan().any(), (name, x, phi, grad)
        assert not act.psi(x.detach()).isnan().any()
        if must_be_inf:
            assert (phi == math.inf).all(), (name, x, phi)
    phi_in = act.phi(inside)
    # phi is infinite on the edge only where the maths says so: the atan family
    infinite_at_edge = name in ("atan", "scaled_atan")
    assert torch.isfinite(phi_in).all() or infinite_at_edge
    assert torch.isfinite(phi_in[1::2]).all(), (name, inside, phi_in)  # one step inside


def test_atan_phi_at_float32_half_pi() -> None:
    act = activation("atan")
    edge = torch.tensor([1.5707964], dtype=torch.float32)  # float32(pi/2) > pi/2
    assert edge.item() > math.pi / 2 and act.phi(edge).item() == math.inf
    below = torch.nextafter(edge, torch.zeros(1))  # the largest float32 below pi/2
    want = -math.log(math.cos(below.item()))
    assert act.phi(below).item() == pytest.approx(want, rel=1e-6)
    assert act.closed_domain(torch.float32) == (-below.item(), below.item())
    assert act.outside_domain(edge).all() and not act.outside_domain(below).any()
    # in float64 the largest value below pi/2 is math.pi / 2 itself: finite
    half_pi = torch.tensor([math.pi / 2], dtype=torch.float64)
    assert act.phi(half_pi).item() == pytest.approx(-math.log(math.cos(math.pi / 2)))


def test_scaled_atan_phi_is_inf_at_plus_minus_one() -> None:
    act = activation("scaled_atan")
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([-1.0, 1.0], dtype=dtype)
        assert (act.phi(x) == math.inf).all()
        near = torch.tensor([1 - 2**-20], dtype=dtype)
        want = -math.log(math.cos(math.pi / 2 * near.item())) / (math.pi / 2)
        assert act.phi(near).item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", [n for n in INVERTIBLE if n not in ("asinh", "identity")])
def test_phi_gradient_is_rho_inv_up_to_the_clamp_of_rho_inv(name: str) -> None:
    act = activation(name)
    inside, _ = _edge_points(act, torch.float64)
    x = act.clamp_to_domain(inside[::2]).requires_grad_(True)  # as close as rho_inv goes
    (grad,) = torch.autograd.grad(act.phi(x).sum(), x)
    torch.testing.assert_close(grad, act.rho_inv(x.detach()), rtol=1e-6, atol=0)


# -- the prox is differentiable for every step t ------------------------------------------------
def _steps(act: Activation) -> list[float]:
    if not act.separable:
        return [0.3, 0.7, 0.95]  # t <= 1 only: gradcheck steps t by 1e-6
    steps = [0.3, 0.999, 1.0, 1.5, 2.5]
    return [t for t in steps if act.lipschitz <= 1 or t < act.lipschitz / (act.lipschitz - 1)]


def test_prox_reproducer_has_a_gradient() -> None:
    z = torch.linspace(-2, 2, 5, requires_grad=True)
    activation("tanh").prox(z, 0.999).sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad > 0).all()


@pytest.mark.parametrize("name", ALL)
def test_prox_gradcheck_in_z_and_t(name: str) -> None:
    act = activation(name)
    gen = torch.Generator().manual_seed(0)
    if name == "sin":  # stay off the clip's kink at u = +-pi/2
        z = torch.linspace(-1, 1, 7, dtype=torch.float64)
    else:
        z = 2 * torch.randn(7, dtype=torch.float64, generator=gen)
    if not act.separable:
        z = z.reshape(1, 7)
    fast = not act.separable  # the softmax prox is a nested bisection: slow to repeat
    for step in _steps(act):
        t = torch.tensor(step, dtype=torch.float64, requires_grad=True)
        args = (z.clone().requires_grad_(), t)
        assert torch.autograd.gradcheck(act.prox, args, fast_mode=fast), step


def test_prox_vjp_is_the_implicit_derivative_of_the_optimality_condition() -> None:
    # dx/dz = 1 / (1 + t psi''(x)), dx/dt = -psi'(x) / (1 + t psi''(x)), here for tanh:
    # psi'(x) = artanh(x) - x, psi''(x) = 1 / (1 - x^2) - 1
    act = activation("tanh")
    z = torch.linspace(-3, 3, 7, dtype=torch.float64, requires_grad=True)
    t = torch.full((7,), 0.6, dtype=torch.float64, requires_grad=True)
    x = act.prox(z, t)
    gz, gt = torch.autograd.grad(x.sum(), (z, t))
    x = x.detach()
    denominator = 1 + 0.6 * (1 / (1 - x * x) - 1)
    torch.testing.assert_close(gz, 1 / denominator)
    torch.testing.assert_close(gt, -(torch.atanh(x) - x) / denominator)


def test_prox_gradient_with_a_batched_step() -> None:
    act = activation("softplus", beta=3.0)
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.5], [1.0], [1.5], [2.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(act.prox, (z, t))
    softmax = activation("softmax")
    t_rows = torch.tensor([[0.2], [0.9], [0.5], [0.95]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(softmax.prox, (z, t_rows), fast_mode=True)


@pytest.mark.parametrize("name", available_activations(invertible=False))
def test_rho_inv_rho_refuses_non_invertible_activations(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name!r} is not invertible.*'sigmoid'"):
        activation(name).rho_inv_rho(torch.tensor([-1.0]))


# -- inputs outside the range of rho ------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in INVERTIBLE if n not in ("asinh", "identity")])
def test_rho_inv_warns_once_for_inputs_outside_the_range(name: str) -> None:
    act = activation(name)
    lo, hi = act.domain
    far = torch.tensor([hi + 1.0 if math.isfinite(hi) else lo - 1.0])
    with pytest.warns(UserWarning, match=rf"{name!r}.*range \[.*RangeScaler") as record:
        act.rho_inv(far)
        act.rho_inv(far)
    assert len(record) == 1  # once per activation object
    with pytest.warns(UserWarning):
        activation(name).rho_inv(far)  # a new object warns again


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [n for n in INVERTIBLE if n not in ("asinh", "identity")])
def test_rho_inv_is_silent_on_the_edge_and_for_rounding(name: str, dtype: torch.dtype) -> None:
    act = activation(name, strict=True)
    lo, hi = act.domain
    edges = [e for e in (lo, hi) if math.isfinite(e)]
    saturated = act.rho(torch.tensor([-1e30, -1e4, -40.0, 40.0, 1e4, 1e30], dtype=dtype))
    y = torch.tensor(edges, dtype=dtype)
    # a couple of float steps past the edge (rounding, e.g. of a convex combination)
    eps = torch.finfo(dtype).eps
    past = torch.tensor([e + 4 * eps * (e or -1) for e in edges], dtype=dtype)
    act.rho_inv(torch.cat([saturated, y, past]))  # strict: would raise


def test_strict_activations_raise_and_say_so() -> None:
    act = activation("sigmoid", strict=True)
    assert act.strict and repr(act) == "Sigmoid(strict=True)"
    assert act.key == activation("sigmoid").key  # strictness does not change the maths
    pixels = torch.tensor([[0.0, 128.0, 255.0]])
    for _ in range(2):  # every time, not once
        with pytest.raises(ValueError, match=r"'sigmoid'.*\[0, 1\].*max 255.*RangeScaler"):
            act.rho_inv(pixels)
    assert activation("softplus", beta=2.0, strict=True).strict
    assert not activation("softplus", beta=2.0).strict


def test_bregman_mlp_on_unscaled_data_warns_and_scaled_data_does_not() -> None:
    import warnings

    from bregnn.data import RangeScaler
    from bregnn.models import MLP

    torch.manual_seed(0)
    pixels = 255 * torch.rand(8, 6)
    model = MLP(6, [4, 4], 2, activation="sigmoid")
    with pytest.warns(UserWarning, match="RangeScaler"):
        model(pixels)
    fresh = MLP(6, [4, 4], 2, activation="sigmoid")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh(RangeScaler("sigmoid").fit_transform(pixels))


def test_check_activation_catches_nan_at_the_domain_edge() -> None:
    class NaiveISRU(ISRU):
        name = "naive_isru"

        def _phi(self, x):  # right values, but the slope at +-1 is inf * 0 = NaN
            return -torch.sqrt((1 - x) * (1 + x))

    check_activation(ISRU(), dtype=torch.float32)
    with pytest.raises(AssertionError, match="NaN at the domain edge"):
        check_activation(NaiveISRU(), dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saturated_rho_stays_in_its_range(dtype: torch.dtype) -> None:
    # float32 atan(1e30) = float32(pi/2) = 1.5707964 > pi/2, outside atan's range
    for name in SEPARABLE:
        act = activation(name)
        y = act.rho(torch.tensor([-1e30, -1e8, 1e8, 1e30], dtype=dtype))
        assert not act.outside_domain(y).any(), (name, y)
    atan = activation("atan")
    assert atan.rho(torch.tensor([1e30])).item() == atan.closed_domain(torch.float32)[1]
