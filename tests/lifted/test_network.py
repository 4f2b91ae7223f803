"""The lifted energy: closed-form gradients, prox of G, diagnostics, to_module, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bregnn.activations import activation
from bregnn.lifted import L1, LiftedNetwork, one_hot
from bregnn.lifted.penalties import PENALTIES, get_penalty


def _problem(acts, output="identity", seed=0, m=7, sizes=(5, 4, 3, 3), regs=None):
    gen = torch.Generator().manual_seed(seed)
    net = LiftedNetwork(sizes, acts, output=output, lambdas=[0.7, 1.3, 0.9], regularisers=regs)
    params = net.init_params(gen, dtype=torch.float64)
    params = params._replace(
        biases=tuple(
            torch.randn(b.shape, generator=gen, dtype=torch.float64) * 0.3 for b in params.biases
        )
    )
    x0 = torch.randn(m, sizes[0], generator=gen, dtype=torch.float64)
    hidden, _ = net.forward(params, x0)
    # perturb the auxiliaries inside the domains so the coupling terms are not at rest
    aux = tuple(
        act.rho(act_in + 0.3 * torch.randn(h.shape, generator=gen, dtype=torch.float64))
        for h, act, act_in in zip(
            hidden, net.activations, net.pre_activations(params, x0, hidden), strict=False
        )
    )
    labels = torch.randint(0, sizes[-1], (m,), generator=gen)
    return net, params, x0, aux, one_hot(labels, sizes[-1], torch.float64)


@pytest.mark.parametrize("pen", sorted(PENALTIES))
@pytest.mark.parametrize(
    ("acts", "output"),
    [
        ("relu", "identity"),
        (["tanh", "sigmoid"], "softmax"),
        (["soft_threshold", "atan"], "identity"),
    ],
)
def test_closed_form_gradients_match_autograd(pen, acts, output):
    net, params, x0, aux, y = _problem(acts, output)
    pen = get_penalty(pen)
    grad, grad_aux, _ = net.smooth_grads(params, x0, aux, y, pen)
    leaves = [t.clone().requires_grad_(True) for t in (*params.weights, *params.biases, *aux)]
    n = len(params.weights)
    p = params._replace(weights=tuple(leaves[:n]), biases=tuple(leaves[n : 2 * n]))
    a = leaves[2 * n :]
    # H = E - G: drop the Psi and regulariser parts from the energy
    zs = net.pre_activations(p, x0, a)
    h = sum(
        lam * pen.value(x, z, act).sum()
        for lam, x, z, act in zip(net.lambdas, a, zs, net.activations, strict=False)
    )
    h = h + net.energy_from(zs, a, y, pen).loss
    auto = torch.autograd.grad(h, leaves)
    for got, want in zip((*grad.weights, *grad.biases, *grad_aux), auto, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


def test_energy_is_sum_of_bregman_losses_at_consistency():
    net, params, x0, _, y = _problem("relu")
    hidden, z_out = net.forward(params, x0)
    parts = net.energy(params, x0, hidden, y, get_penalty("bregman"))
    assert all(abs(c.item()) < 1e-12 for c in parts.coupling)
    torch.testing.assert_close(parts.total, 0.9 * 0.5 * ((z_out - y) ** 2).sum())


@pytest.mark.parametrize("acts", ["relu", "tanh", "soft_threshold"])
def test_prox_g_optimality_with_l1(acts):
    """x = prox_{t(lam Psi + alpha|.|)}(v) minimises 1/2|x - v|^2 + t lam Psi(x) + t alpha|x|
    (checked against a fine grid, elementwise)."""
    net, _, _, aux, _ = _problem(acts, regs={1: L1(0.2)})
    act, lam, t = net.activations[0], net.lambdas[0], 0.8
    v = torch.tensor([[-1.7, -0.1, 0.3, 1.9]], dtype=torch.float64)
    out = net.prox_g([v, aux[1]], [t, t], get_penalty("bregman"))[0][0]
    grid = torch.linspace(-3, 3, 60001, dtype=torch.float64)
    for vi, xi in zip(v[0].tolist(), out.tolist(), strict=True):
        f = 0.5 * (grid - vi) ** 2 + t * lam * act.psi(grid) + t * 0.2 * grid.abs()
        best = grid[torch.nan_to_num(f, posinf=1e9).argmin()]
        assert abs(best.item() - xi) < 2e-4


def test_l1_needs_sign_preserving_activation():
    with pytest.raises(ValueError, match="sign-preserving"):
        LiftedNetwork([4, 3, 2], "sigmoid", regularisers={1: L1(0.1)})
    with pytest.raises(ValueError, match=r"hidden layers are 1\.\.1"):
        LiftedNetwork([4, 3, 2], "relu", regularisers={2: L1(0.1)})


def test_to_module_is_the_forward_pass():
    net, params, x0, _, _ = _problem(["tanh", "relu"], output="softmax")
    module = net.to_module(params)
    assert isinstance(module, nn.Sequential)
    assert [type(m).__name__ for m in module] == [
        "Linear",
        "Tanh",
        "Linear",
        "ReLU",
        "Linear",
        "Softmax",
    ]
    _, z_out = net.forward(params, x0)
    torch.testing.assert_close(module(x0), torch.softmax(z_out, -1))
    torch.save(module, __import__("io").BytesIO())  # no lambdas: pickles


def test_linear_fraction_relu_counts_positive_preactivations():
    net, params, x0, _, _ = _problem("relu")
    zs = net.pre_activations(params, x0, net.forward(params, x0)[0])
    fractions = net.linear_fraction(zs)
    for frac, z in zip(fractions, zs, strict=False):
        assert frac.item() == pytest.approx((z >= 0).double().mean().item())


def test_consistency_zero_on_forward_pass():
    net, params, x0, aux, _ = _problem("relu")
    hidden, _ = net.forward(params, x0)
    zs = net.pre_activations(params, x0, hidden)
    assert all(c.item() < 1e-12 for c in net.consistency(zs, hidden))
    zs = net.pre_activations(params, x0, aux)
    assert any(c.item() > 1e-3 for c in net.consistency(zs, aux))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (nn.GELU(), "not a proximal activation"),
        ("scaled_tanh", "no usable prox"),
        ("softmax", "only supported as the output"),
        ("nope", "unknown activation"),
    ],
)
def test_activation_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        LiftedNetwork([4, 3, 2], spec)


def test_size_errors():
    net = LiftedNetwork([4, 3, 2], "relu")
    with pytest.raises(ValueError, match="first layer size is 4"):
        net.check_data(torch.zeros(5, 6), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="last layer size 2"):
        net.check_data(torch.zeros(5, 4), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="layer sizes"):
        LiftedNetwork([4], "relu")
    with pytest.raises(ValueError, match="2 activations given for 1 hidden"):
        LiftedNetwork([4, 3, 2], ["relu", "relu"])
    with pytest.raises(ValueError, match="lambdas"):
        LiftedNetwork([4, 3, 2], "relu", lambdas=[1.0, 0.0])
    with pytest.raises(ValueError, match="unknown output"):
        LiftedNetwork([4, 3, 2], "relu", output="tanh")
    with pytest.raises(ValueError, match="unknown penalty"):
        get_penalty("cubic")
    assert activation("relu").key == net.activations[0].key
