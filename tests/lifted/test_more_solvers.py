"""Constrained formulation (projected dual ascent), LinBreg and residual lifted networks."""

from __future__ import annotations

import pytest
import torch

from bregnn.lifted import LiftedNetwork, Params, one_hot
from bregnn.lifted.penalties import get_penalty
from bregnn.lifted.solvers._step import initial_vectors, joint_step, warm_vectors
from bregnn.lifted.solvers.constrained import (
    ConstrainedConfig,
    ConstrainedLifted,
    constraint_values,
)
from bregnn.lifted.solvers.linbreg import LinBreg, LinBregConfig, shrink, weight_sparsity
from bregnn.lifted.solvers.residual import ResidualLiftedNetwork, ResidualMLP

D = torch.float64


def _data(sizes=(6, 5, 4, 3), m=40, seed=0, dtype=torch.float32, net_cls=LiftedNetwork, act="relu"):
    gen = torch.Generator().manual_seed(seed)
    net = net_cls(sizes, act)
    params = net.init_params(gen, dtype=dtype)
    x0 = torch.randn(m, sizes[0], generator=gen, dtype=dtype)
    y = one_hot(torch.randint(0, sizes[-1], (m,), generator=gen), sizes[-1], dtype)
    return net, params, x0, y, gen


# -- constrained ---------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 1e-3, 100.0])
def test_dual_ascent_keeps_lambda_nonnegative(eps):
    net, params, x0, y, gen = _data()
    solver = ConstrainedLifted(net, ConstrainedConfig(eps=eps, dual_step=5.0, init_lambda=0.5))
    state = solver.init_state(params, x0, y)
    for _ in range(10):
        new = solver.update(state, x0, y)
        c = constraint_values(net, solver.params(new), x0, new.aux)
        assert (c >= 0).all()  # Bregman distances
        assert (new.lambdas >= 0).all()
        expected = torch.clamp(state.lambdas + 5.0 * (c - eps), min=0.0)
        torch.testing.assert_close(new.lambdas, expected)
        state = new
    if eps == 100.0:  # every constraint is slack: the multipliers are projected to exactly 0
        assert torch.equal(state.lambdas, torch.zeros_like(state.lambdas))
    if eps == 0.0:  # violated constraints push the multipliers up
        assert (state.lambdas > 0.5).all()


def test_constrained_metrics_report_the_multipliers():
    net, params, x0, y, _ = _data()
    solver = ConstrainedLifted(net)
    state = solver.update(solver.init_state(params, x0, y), x0, y)
    names = solver.metric_names()
    assert names[-2:] == ["lambda_1", "lambda_2"]
    torch.testing.assert_close(state.metrics[-2:], state.lambdas)


# -- LinBreg ---------------------------------------------------------------------------------------
def test_linbreg_without_sparsity_is_the_joint_proximal_gradient_step():
    net, params, x0, y, _ = _data(dtype=D)
    solver = LinBreg(net, LinBregConfig(mu=0.0, delta=1.0, inner_iters=4, step_scale=0.9))
    state = solver.update(solver.init_state(params, x0, y), x0, y)
    aux, _ = net.forward(params, x0)
    # the power iterations start as LinBreg's: warm on the initial weights and first inputs
    w_vecs, x_vecs = initial_vectors(net, D, params)
    _, x_vecs = warm_vectors(w_vecs, x_vecs, inputs=(x0, *aux))
    p = params
    for _ in range(4):
        p, aux, w_vecs, x_vecs = joint_step(
            net, get_penalty("bregman"), p, aux, x0, y, w_vecs, x_vecs, step_scale=0.9
        )
    for a, b in zip(
        (*state.params.weights, *state.params.biases), (*p.weights, *p.biases), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_linbreg_weights_are_the_shrunk_subgradient_and_start_exactly():
    net, params, x0, y, gen = _data()
    cfg = LinBregConfig(mu=0.05, delta=2.0, batch_size=10, inner_iters=3)
    solver = LinBreg(net, cfg)
    state = solver.init_state(params, x0, y)
    for w, w0, v in zip(state.params.weights, params.weights, state.v, strict=True):
        torch.testing.assert_close(cfg.delta * shrink(v, cfg.mu), w0)
        assert torch.equal(w, w0)
    state, _ = solver.epoch(state, x0, y, gen)
    for w, v in zip(state.params.weights, state.v, strict=True):
        torch.testing.assert_close(w, cfg.delta * shrink(v, cfg.mu))


def test_linbreg_sparsity_increases_with_mu():
    sparsity = []
    for mu in (0.0, 0.05, 0.5):
        net, params, x0, y, gen = _data()
        solver = LinBreg(net, LinBregConfig(mu=mu, batch_size=10, inner_iters=5))
        state = solver.run(solver.init_state(params, x0, y), x0, y, epochs=4, generator=gen)
        sparsity.append(weight_sparsity(state.params.weights))
    assert sparsity[0] == 0.0 and sparsity[0] < sparsity[1] < sparsity[2]


def test_shrink_is_the_l1_prox():
    v = torch.linspace(-2, 2, 81, dtype=D)
    out = shrink(v, 0.5)
    # optimality: v - out in 0.5 * subdifferential of |.| at out
    inside = out == 0
    assert (v[inside].abs() <= 0.5 + 1e-12).all()
    torch.testing.assert_close((v - out)[~inside], 0.5 * torch.sign(out[~inside]))


# -- residual --------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["relu", "tanh", "soft_threshold"])
def test_residual_gradients_match_autograd(act):
    net, params, x0, _, gen = _data(
        sizes=(6, 5, 5, 5, 3), dtype=D, net_cls=ResidualLiftedNetwork, act=act
    )
    y = torch.randn(40, 3, generator=gen, dtype=D)
    aux = [net.activations[l].rho(torch.randn(40, 5, generator=gen, dtype=D)) for l in range(3)]
    pen = get_penalty("bregman")
    grads, g_aux, _ = net.smooth_grads(params, x0, aux, y, pen)
    leaves = [t.clone().requires_grad_(True) for t in (*params.weights, *params.biases, *aux)]
    p = Params(tuple(leaves[:4]), tuple(leaves[4:8]))
    d = leaves[8:]
    parts = net.energy(p, x0, d, y, pen)
    smooth = parts.total - sum(a.psi(x).sum() for a, x in zip(net.activations, d, strict=True))
    auto = torch.autograd.grad(smooth, leaves)
    mine = (*grads.weights, *grads.biases, *g_aux)
    for a, b in zip(auto, mine, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_residual_forward_is_consistent_and_matches_its_module():
    net, params, x0, y, _ = _data(sizes=(6, 5, 5, 3), dtype=D, net_cls=ResidualLiftedNetwork)
    assert net.skips == (False, True)
    incs, z_out = net.forward(params, x0)
    zs = net.pre_activations(params, x0, incs)
    for c in net.consistency(zs, incs):
        assert float(c) == 0.0
    x1 = torch.relu(x0 @ params.weights[0].T + params.biases[0])
    x2 = x1 + torch.relu(x1 @ params.weights[1].T + params.biases[1])
    torch.testing.assert_close(z_out, x2 @ params.weights[2].T + params.biases[2])
    model = net.to_module(params)
    assert isinstance(model, ResidualMLP)
    torch.testing.assert_close(model(x0), z_out)
    # at the forward pass every Bregman coupling vanishes
    parts = net.energy(params, x0, incs, y, get_penalty("bregman"))
    assert all(float(c) == 0.0 for c in parts.coupling)
    labels = y.argmax(-1)
    acc = net.evaluate(params, x0, labels)["accuracy"]
    assert acc == float((z_out.argmax(-1) == labels).double().mean())


def test_residual_network_needs_a_skip():
    with pytest.raises(ValueError, match="no hidden layer of \\[6, 5, 4, 3\\] keeps its width"):
        ResidualLiftedNetwork((6, 5, 4, 3), "relu")
    with pytest.raises(ValueError, match="one more linear layer"):
        ResidualMLP([torch.nn.Linear(2, 2)], [torch.nn.ReLU()], [True])
