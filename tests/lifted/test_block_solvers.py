"""Block coordinate descent and ADMM: parallel blocks equal one-by-one updates, closed forms
solve their problems, ADMM steps satisfy their optimality conditions and converge to the
exact block minimisers, sweeps never increase the energy."""

from __future__ import annotations

import pytest
import torch

from bregnn.activations import activation
from bregnn.lifted import LiftedNetwork, make_solver
from bregnn.lifted.penalties import L1, get_penalty
from bregnn.lifted.solvers.admm import (
    ADMMConfig,
    LiftedADMM,
    admm_theta,
    admm_w_step,
    admm_x,
    prox_conj,
)
from bregnn.lifted.solvers.bcd import (
    BCDConfig,
    BlockCoordinateDescent,
    augmented,
    theta_block_least_squares,
    x_block_closed_form,
    x_block_prox_steps,
)
from bregnn.lifted.solvers.residual import ResidualLiftedNetwork

D = torch.float64


def _problem(acts, width=5, m=30, seed=0, regularisers=None):
    sizes = (6, *([width] * len(acts)), 4)
    net = LiftedNetwork(sizes, acts, regularisers=regularisers)
    gen = torch.Generator().manual_seed(seed)
    params = net.init_params(gen, dtype=D)
    x0 = torch.randn(m, 6, generator=gen, dtype=D)
    y = torch.randn(m, 4, generator=gen, dtype=D)
    aux = tuple(
        net.activations[l].rho(torch.randn(m, width, generator=gen, dtype=D))
        for l in range(len(acts))
    )
    return net, params, x0, y, aux


ACTS = [
    ["relu", "relu", "relu", "relu"],
    ["relu", "soft_threshold", "identity", "tanh"],
    ["tanh", "identity", "relu", "identity"],
]


@pytest.mark.parametrize("acts", ACTS)
@pytest.mark.parametrize("cls", [BlockCoordinateDescent, LiftedADMM])
def test_parallel_blocks_equal_one_by_one(cls, acts):
    net, params, x0, y, aux = _problem(acts)
    solver = cls(net)
    for layers in ([1, 3], [2, 4]):
        parallel = solver.x_block(params, layers, x0, aux, y)
        sequential = list(aux)
        for l in layers:  # Gauss-Seidel: each layer sees the latest values
            sequential[l - 1] = solver.x_layer(params, l, x0, tuple(sequential), y)
        for a, b in zip(parallel, sequential, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        untouched = [l for l in range(1, 5) if l not in layers]
        for l in untouched:
            assert parallel[l - 1] is aux[l - 1]


@pytest.mark.parametrize("acts", ACTS)
@pytest.mark.parametrize(
    ("name", "config"), [("bcd", BCDConfig(tau=0.1)), ("admm", ADMMConfig(tau=0.1, admm_iters=60))]
)
def test_sweeps_never_increase_the_energy(name, config, acts):
    net, params, x0, y, _ = _problem(acts)
    solver = make_solver(name, net)
    solver.config = config
    state = solver.init_state(params, x0, y)
    values = [float(solver.objective(state, x0, y))]
    for _ in range(6):
        state = solver.update(state, x0, y)
        values.append(float(solver.objective(state, x0, y)))
    assert all(b <= a + 1e-9 for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.5 * values[0]


def test_theta_least_squares_is_optimal():
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(20, 4, generator=gen, dtype=D)
    target = torch.randn(20, 3, generator=gen, dtype=D)
    w, b = torch.randn(3, 4, generator=gen, dtype=D), torch.randn(3, generator=gen, dtype=D)
    lam, tau = 2.0, 0.3
    w_new, b_new = theta_block_least_squares(inputs, target, lam, tau, w, b)
    residual = torch.addmm(b_new, inputs, w_new.T) - target
    grad_w = lam * residual.T @ inputs + tau * (w_new - w)
    grad_b = lam * residual.sum(0) + tau * (b_new - b)
    assert grad_w.abs().max() < 1e-10 and grad_b.abs().max() < 1e-10
    # tau = 0: the least-squares solution of [X, 1] W^T = T
    w0, b0 = theta_block_least_squares(inputs, target, lam, 0.0, w, b)
    ref = torch.linalg.lstsq(augmented(inputs), target).solution.T
    torch.testing.assert_close(torch.cat([w0, b0[:, None]], 1), ref)


def test_admm_w_step_solves_its_least_squares_problem():
    gen = torch.Generator().manual_seed(2)
    xt = augmented(torch.randn(25, 5, generator=gen, dtype=D))
    zu = torch.randn(25, 3, generator=gen, dtype=D)
    anchor = torch.randn(3, 6, generator=gen, dtype=D)
    tau, beta = 0.7, 1.9
    chol = torch.linalg.cholesky(tau * torch.eye(6, dtype=D) + beta * xt.T @ xt)
    got = admm_w_step(xt, zu, anchor, tau, beta, chol)
    stacked = torch.cat([beta**0.5 * xt, tau**0.5 * torch.eye(6, dtype=D)])
    rhs = torch.cat([beta**0.5 * zu, tau**0.5 * anchor.T])
    ref = torch.linalg.lstsq(stacked, rhs).solution.T
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize(
    "name", ["relu", "soft_threshold", "identity", "tanh", "sigmoid", "softplus"]
)
@pytest.mark.parametrize("s", [0.3, 2.0])
def test_prox_of_the_conjugate_satisfies_its_optimality_condition(name, s):
    act = activation(name)
    w = torch.linspace(-3, 3, 41, dtype=D)
    z = prox_conj(act, w, s)
    # argmin_z s phi*(z) + 1/2 |z - w|^2  <=>  w - z = s rho(z)
    torch.testing.assert_close(w - z, s * act.rho(z), atol=1e-9, rtol=0)


def test_admm_theta_converges_to_the_exact_minimiser():
    gen = torch.Generator().manual_seed(3)
    inputs = torch.randn(30, 4, generator=gen, dtype=D)
    target = torch.randn(30, 3, generator=gen, dtype=D)
    w, b = torch.randn(3, 4, generator=gen, dtype=D), torch.zeros(3, dtype=D)
    identity = activation("identity")
    w_admm, b_admm = admm_theta(identity, 1.5, inputs, target, w, b, 0.5, 5.0, 400)
    w_ls, b_ls = theta_block_least_squares(inputs, target, 1.5, 0.5, w, b)
    torch.testing.assert_close(w_admm, w_ls, atol=1e-7, rtol=0)
    torch.testing.assert_close(b_admm, b_ls, atol=1e-7, rtol=0)
    # ReLU: compare with many gradient steps on the same (strongly convex) problem
    net = LiftedNetwork((4, 3, 2), "relu")
    relu_target = torch.relu(torch.randn(30, 3, generator=gen, dtype=D))
    w_admm, b_admm = admm_theta(net.activations[0], 1.0, inputs, relu_target, w, b, 0.5, 5.0, 600)
    from bregnn.lifted.solvers.bcd import theta_block_gradient_steps

    w_gd, b_gd = theta_block_gradient_steps(
        net, get_penalty("bregman"), 1, inputs, relu_target, w, b, 0.5, 3000, 1.0
    )
    torch.testing.assert_close(w_admm, w_gd, atol=1e-6, rtol=0)


@pytest.mark.parametrize("reg", [None, L1(0.05)])
def test_x_subproblem_solvers_agree(reg):
    # identity layer followed by the MSE output: closed form vs ADMM vs prox steps
    net, params, x0, y, aux = _problem(["relu", "identity"], regularisers=None)
    prev = net.activations[0].rho(torch.randn(30, 5, dtype=D))
    exact = x_block_closed_form(net, params, 2, prev, y)
    by_admm = admm_x(net, get_penalty("bregman"), params, 2, prev, aux[1], y, 2.0, 400)
    by_prox = x_block_prox_steps(net, get_penalty("bregman"), params, 2, prev, aux[1], y, 3000, 1.0)
    torch.testing.assert_close(by_admm, exact, atol=1e-7, rtol=0)
    torch.testing.assert_close(by_prox, exact, atol=1e-7, rtol=0)
    # a ReLU layer (with or without an l1 term): ADMM and prox steps reach the same minimiser
    regs = {1: reg} if reg is not None else None
    net, params, x0, y, aux = _problem(["relu", "relu"], regularisers=regs)
    by_admm = admm_x(net, get_penalty("bregman"), params, 1, x0, aux[0], aux[1], 2.0, 500)
    by_prox = x_block_prox_steps(
        net, get_penalty("bregman"), params, 1, x0, aux[0], aux[1], 4000, 1.0
    )
    torch.testing.assert_close(by_admm, by_prox, atol=1e-6, rtol=0)
    assert (by_admm >= 0).all()


def test_block_solvers_refuse_residual_networks():
    net = ResidualLiftedNetwork((4, 3, 3, 2), "relu")
    for cls in (BlockCoordinateDescent, LiftedADMM):
        with pytest.raises(ValueError, match="plain feed-forward LiftedNetwork"):
            cls(net)
