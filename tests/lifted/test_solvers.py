"""One contract suite over every registered solver, plus agreement and optimality checks."""

from __future__ import annotations

import dataclasses
import io
import itertools
import math

import pytest
import torch

from bregnn.lifted import SOLVERS, LiftedNetwork, Params, get_solver, make_solver, one_hot
from bregnn.lifted.penalties import get_penalty
from bregnn.lifted.solvers import state_from_dict, state_to_dict
from bregnn.lifted.solvers._step import initial_vectors, joint_step, literal_sweep

FAST = {"batch_size": 10, "inner_iters": 5, "tau": 10.0, "lr": 0.1}


def _teacher(seed=0, m=40, sizes=(6, 5, 4, 3), act="relu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    net = LiftedNetwork(sizes, act)
    teacher = net.init_params(gen, dtype=dtype)
    teacher = teacher._replace(
        biases=tuple(0.2 * torch.randn(b.shape, generator=gen, dtype=dtype) for b in teacher.biases)
    )
    x0 = torch.randn(m, sizes[0], generator=gen, dtype=dtype)
    _, z_out = net.forward(teacher, x0)
    y = one_hot(z_out.argmax(-1), sizes[-1], dtype)
    return net, teacher, net.init_params(gen, dtype=dtype), x0, y


def _settings(name, values=FAST):
    """The entries of ``values`` that are settings of method ``name``."""
    fields = {f.name for f in dataclasses.fields(get_solver(name).Config)}
    return {k: v for k, v in values.items() if k in fields}


def _leaves(state):
    for value in state:
        if isinstance(value, tuple):
            yield from _leaves(value)
        else:
            yield value


def _train(name, epochs=3, seed=0):
    net, _, params, x0, y = _teacher()
    solver = make_solver(name, net, **_settings(name))
    state = solver.init_state(params, x0, y)
    gen = torch.Generator().manual_seed(seed)
    start = solver.objective(state, x0, y)
    for _ in range(epochs):
        state, metrics = solver.epoch(state, x0, y, gen)
    return solver, state, start, solver.objective(state, x0, y), metrics


@pytest.mark.parametrize("name", list(SOLVERS))
def test_objective_decreases(name):
    _, _, start, end, metrics = _train(name)
    assert torch.isfinite(end) and end < start
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


@pytest.mark.parametrize("name", list(SOLVERS))
def test_state_keeps_types_and_roundtrips(name):
    net, _, params, x0, y = _teacher()
    solver = make_solver(name, net, **_settings(name))
    state = solver.init_state(params, x0, y)
    m = x0.shape[0] if solver.full_batch else 10
    new = solver.update(state, x0[:m], y[:m])
    assert type(new) is solver.State is type(state)
    assert all(isinstance(t, torch.Tensor) for t in _leaves(new))
    for a, b in zip(_leaves(state), _leaves(new), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert int(new.step) == 1
    buffer = io.BytesIO()
    torch.save(state_to_dict(new), buffer)
    buffer.seek(0)
    back = state_from_dict(solver.State, torch.load(buffer, weights_only=True))
    for a, b in zip(_leaves(new), _leaves(back), strict=True):
        assert torch.equal(a, b)
    assert isinstance(solver.params(new), Params)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_fixed_seed_is_deterministic(name):
    _, s1, _, _, _ = _train(name, epochs=2, seed=3)
    _, s2, _, _, _ = _train(name, epochs=2, seed=3)
    for a, b in zip(_leaves(s1), _leaves(s2), strict=True):
        assert torch.equal(a, b)


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown method 'lbn-x'.*lbn-s.*sgd-bp.*mac-qp"):
        get_solver("lbn-x")


@pytest.mark.parametrize(
    ("name", "setting", "value"),
    [
        ("lbn-s", "tau", 0.0),
        ("lbn-s", "tau", -1.0),
        ("lbn-s", "inner_iters", 0),
        ("lbn-s", "step_scale", 2.5),
        ("lbn-d", "step_scale", 0.0),
        ("lbn-d", "acceleration", "adam"),
        ("lbn-d", "max_backtracks", -1),
        ("sgd-bp", "lr", 0.0),
        ("isgd-bp", "tau", -3.0),
        ("gd-bp", "inner_iters", -1),
        ("lifted-quadratic", "batch_size", 0),
    ],
)
def test_bad_settings_name_the_value(name, setting, value):
    net, *_ = _teacher()
    with pytest.raises(ValueError, match=setting):
        make_solver(name, net, **{setting: value})


def test_epochs_must_be_positive():
    net, _, params, x0, y = _teacher()
    solver = make_solver("lbn-s", net)
    with pytest.raises(ValueError, match="epochs"):
        solver.run(solver.init_state(params, x0, y), x0, y, 0, torch.Generator())


def test_wrong_layer_sizes_in_data():
    net, _, params, x0, y = _teacher()
    solver = make_solver("lbn-s", net)
    state = solver.init_state(params, x0, y)
    with pytest.raises(ValueError, match="first layer size is 6"):
        solver.epoch(state, x0[:, :4], y, torch.Generator())


def test_proximal_gradient_and_implicit_stochastic_agree():
    """A convex problem (one layer, MSE): LBN-D, and LBN-S on one full batch with many inner
    iterations, reach the same (least-squares) minimiser and the same energy. (LBN-S is then
    the proximal point method; any tau gives the same limit, tau = 1 gets there in a few
    outer steps.)"""
    gen = torch.Generator().manual_seed(1)
    net = LiftedNetwork([5, 3], "relu")
    x0 = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    params = net.init_params(gen, dtype=torch.float64)
    lbn_d = make_solver("lbn-d", net, inner_iters=200, acceleration="nesterov")
    sd = lbn_d.run(lbn_d.init_state(params, x0, y), x0, y, 2, gen)
    lbn_s = make_solver("lbn-s", net, batch_size=30, inner_iters=200, tau=30.0)
    ss = lbn_s.run(lbn_s.init_state(params, x0, y), x0, y, 12, gen)
    design = torch.cat([x0, torch.ones(30, 1, dtype=torch.float64)], 1)
    theta = torch.linalg.lstsq(design, y).solution
    for state in (sd, ss):
        torch.testing.assert_close(state.params.weights[0], theta[:5].T, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(state.params.biases[0], theta[5], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lbn_d.objective(sd, x0, y), lbn_s.objective(ss, x0, y))


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "soft_threshold", "isru"])
def test_consistent_network_is_a_fixed_point_of_lifted_bregman(act):
    """At x_l = rho(W x_{l-1} + b) with a zero output loss every block gradient of the Bregman
    energy vanishes and prox_{t Psi}((1-t) rho(z) + t z) = rho(z): the joint step stays put."""
    net, teacher, _, x0, _ = _teacher(act=act, dtype=torch.float64)
    hidden, z_out = net.forward(teacher, x0)
    w_vecs, x_vecs = initial_vectors(net, torch.float64)
    params, aux, _, _ = joint_step(
        net, get_penalty("bregman"), teacher, hidden, x0, z_out, w_vecs, x_vecs, step_scale=1.0
    )
    for a, b in zip(
        (*params.weights, *params.biases, *aux),
        (*teacher.weights, *teacher.biases, *hidden),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    zs = net.pre_activations(params, x0, aux)
    assert max(c.item() for c in net.consistency(zs, aux)) < 1e-9
    # the classical lifted network moves away from the consistent ReLU network
    if act == "relu":
        params_q, _, _, _ = joint_step(
            net,
            get_penalty("quadratic"),
            teacher,
            hidden,
            x0,
            z_out,
            w_vecs,
            x_vecs,
            step_scale=1.0,
        )
        moved = max(
            (a - b).abs().max().item()
            for a, b in zip(params_q.weights, teacher.weights, strict=True)
        )
        assert moved > 1e-3


def _fit_one_layer(pen_name, x0, x1, iters=3000):
    """Minimise sum_i h(x1_i, W x0_i + b) over (W, b) by gradient descent, with the penalty's
    closed-form gradient (x1 fixed)."""
    pen, act = (
        get_penalty(pen_name),
        LiftedNetwork([x0.shape[1], x1.shape[1], 1], "relu").activations[0],
    )
    design = torch.cat([x0, torch.ones(x0.shape[0], 1, dtype=x0.dtype)], 1)
    step = 1.0 / torch.linalg.matrix_norm(design, 2) ** 2
    theta = torch.zeros(design.shape[1], x1.shape[1], dtype=x0.dtype)
    for _ in range(iters):
        _, g_z = pen.grads(x1, design @ theta, act)
        theta = theta - step * design.T @ g_z
    return theta, design


def test_classical_lifted_optimum_is_affine_bregman_is_not():
    """Fit one layer to ReLU targets x1 = relu(W* x0 + b*) (with many zeros). The classical
    penalty |x1 - W x0 - b|^2 is minimised by the affine least-squares fit (the paper's eq. 8:
    the layer acts linearly, z = x1 on active units up to the fit), while the Bregman penalty
    recovers a consistent ReLU layer (relu(z) = x1, energy 0)."""
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(200, 4, generator=gen, dtype=torch.float64)
    w_star = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    x1 = torch.relu(x0 @ w_star + 0.1)
    assert (x1 == 0).double().mean() > 0.3
    theta_q, design = _fit_one_layer("quadratic", x0, x1)
    torch.testing.assert_close(
        theta_q, torch.linalg.lstsq(design, x1).solution, atol=1e-6, rtol=1e-6
    )
    assert (torch.relu(design @ theta_q) - x1).abs().max() > 0.1
    theta_b, _ = _fit_one_layer("bregman", x0, x1)
    assert (torch.relu(design @ theta_b) - x1).abs().max() < 1e-3


@pytest.mark.parametrize("acceleration", ["none", "nesterov", "heavy-ball"])
def test_lbn_d_energy_is_monotone(acceleration):
    """Restart + backtracking: every LBN-D update leaves the energy non-increasing, also
    with unequal lambdas and a tanh layer (where the plain joint step at step_scale 1 can
    increase it), and the energy decreases substantially."""
    gen = torch.Generator().manual_seed(2)
    net = LiftedNetwork([4, 5, 4, 2], ["relu", "tanh"], lambdas=[1.0, 2.0, 1.0])
    x0 = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 2, generator=gen, dtype=torch.float64)
    solver = make_solver("lbn-d", net, acceleration=acceleration, momentum=0.5)
    state = solver.init_state(net.init_params(gen, dtype=torch.float64), x0, y)
    energies = [float(state.metrics[0])]
    for _ in range(300):
        state = solver.update(state, x0, y)
        energies.append(float(state.metrics[0]))
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(energies))
    assert energies[-1] < 0.2 * energies[0]


def test_l1_regulariser_sparsifies_the_auxiliary_layer():
    from bregnn.lifted import L1

    _, _, params, x0, y = _teacher()
    zeros = []
    for regs in (None, {1: L1(0.05)}):
        net = LiftedNetwork([6, 5, 4, 3], "relu", regularisers=regs)
        solver = make_solver("lbn-d", net, inner_iters=50)
        state = solver.run(solver.init_state(params, x0, y), x0, y, 2, torch.Generator())
        zeros.append((state.aux[0] == 0).double().mean().item())
        parts = net.energy(solver.params(state), x0, state.aux, y, solver.penalty)
        assert (parts.regulariser > 0) == (regs is not None)
    assert zeros[1] > zeros[0]


def test_divergence_is_reported_clearly():
    net, teacher, _, x0, y = _teacher()
    broken = teacher._replace(
        weights=(teacher.weights[0], teacher.weights[1] * math.inf, teacher.weights[2])
    )
    hidden, _ = net.forward(teacher, x0)
    w_vecs, x_vecs = initial_vectors(net, torch.float32)
    with pytest.raises(FloatingPointError, match=r"diverged.*lower step_scale"):
        joint_step(
            net, get_penalty("bregman"), broken, hidden, x0, y, w_vecs, x_vecs, step_scale=1.0
        )


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_alternating_step_is_the_theta_step_then_the_x_step_at_the_new_theta(act):
    net, _, params, x0, y = _teacher(act=act, dtype=torch.float64)
    aux, _ = net.forward(params, x0)
    aux = tuple(a + 0.1 for a in aux)  # off the forward pass, so every block moves
    vecs = initial_vectors(net, torch.float64)
    kw = {"step_scale": 1.99, "tau": 2.0, "anchor": params}
    pen = get_penalty("bregman")
    p_jac, a_jac, _, _ = joint_step(net, pen, params, aux, x0, y, *vecs, **kw)
    p_alt, a_alt, _, _ = joint_step(net, pen, params, aux, x0, y, *vecs, alternating=True, **kw)
    for a, b in zip((*p_alt.weights, *p_alt.biases), (*p_jac.weights, *p_jac.biases)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    _, a_ref, _, _ = joint_step(net, pen, p_alt, aux, x0, y, *vecs, **kw)
    for a, b in zip(a_alt, a_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert max((a - b).abs().max().item() for a, b in zip(a_alt, a_jac)) > 1e-6


def test_alternating_lbn_s_lowers_the_batch_energy_at_the_papers_step():
    net, _, params, x0, y = _teacher(m=60)
    solver = make_solver(
        "lbn-s",
        net,
        batch_size=60,
        inner_iters=15,
        tau=60.0,
        step_scale=1.99,
        step_rule="alternating",
    )
    state = solver.init_state(params, x0, y)
    start = solver.objective(state, x0, y)
    for _ in range(5):
        state = solver.update(state, x0, y)
    assert solver.objective(state, x0, y) < 0.8 * start


def _ridge(x0, y, w0, b0, tau):
    """argmin_Theta (1/m) sum_i 1/2 |W x_i + b - y_i|^2 + |Theta - Theta_0|^2 / (2 tau)."""
    m = x0.shape[0]
    design = torch.cat([x0, torch.ones(m, 1, dtype=x0.dtype)], 1)
    theta0 = torch.cat([w0, b0[:, None]], 1).T
    eye = torch.eye(design.shape[1], dtype=x0.dtype)
    theta = torch.linalg.solve(design.T @ design / m + eye / tau, design.T @ y / m + theta0 / tau)
    return theta[:-1].T, theta[-1]


@pytest.mark.parametrize(("method", "extra"), [("lbn-s", {}), ("isgd-bp", {"lr": 0.05})])
@pytest.mark.parametrize("tau", [0.5, 4.0])
def test_tau_is_the_papers_tau_k(method, extra, tau):
    """One batch of a convex one-layer MSE problem: LBN-S (eq. 24) and ISGD-BP (eq. 22) reach
    the minimiser of the batch MEAN plus |Theta - Theta_0|^2 / (2 tau)."""
    gen = torch.Generator().manual_seed(3)
    net = LiftedNetwork([4, 2], "relu")
    x0 = torch.randn(25, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(25, 2, generator=gen, dtype=torch.float64)
    params = net.init_params(gen, dtype=torch.float64)
    solver = make_solver(method, net, batch_size=25, inner_iters=3000, tau=tau, **extra)
    state = solver.update(solver.init_state(params, x0, y), x0, y)
    w, b = _ridge(x0, y, params.weights[0], params.biases[0], tau)
    torch.testing.assert_close(state.params.weights[0], w, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(state.params.biases[0], b, atol=1e-7, rtol=1e-7)


def test_literal_sweep_on_one_layer_is_plain_gradient_steps_and_descends():
    """With one layer (no auxiliary variables) Algorithm 1 read literally is N gradient steps
    on Theta_1: N simultaneous steps. On a deeper network each pair step lowers the energy."""
    net, teacher, _, x0, y = _teacher(dtype=torch.float64)
    one = LiftedNetwork([6, 3], "relu")
    params = one.init_params(torch.Generator().manual_seed(0), dtype=torch.float64)
    vecs = initial_vectors(one, torch.float64, params)
    pen = get_penalty("bregman")
    lit = literal_sweep(one, pen, params, (), x0, y, *vecs, step_scale=1.0, inner_iters=4)
    p, a, w, v = params, (), *vecs
    for _ in range(4):
        p, a, w, v = joint_step(one, pen, p, a, x0, y, w, v, step_scale=1.0)
    torch.testing.assert_close(lit[0].weights[0], p.weights[0])
    solver = make_solver("lbn-s", net, batch_size=40, inner_iters=5, tau=1e6, step_rule="literal")
    start = net.init_params(torch.Generator().manual_seed(1), dtype=torch.float64)
    state = solver.init_state(start, x0, y)
    aux, _ = net.forward(start, x0)
    before = net.energy(start, x0, aux, y, pen).total
    state = solver.update(state, x0, y)
    assert solver.metrics(state)["energy"] * x0.shape[0] < float(before)


def test_lbn_d_starts_every_epoch_from_the_forward_pass():
    net, _, _, x0, y = _teacher(dtype=torch.float64)
    params = net.init_params(torch.Generator().manual_seed(0), dtype=torch.float64)
    for reinit in (True, False):
        solver = make_solver("lbn-d", net, inner_iters=3, reinit_aux=reinit)
        state = solver.run(solver.init_state(params, x0, y), x0, y, 1, torch.Generator())
        started = solver.start_epoch(state, x0, y)
        forward, _ = net.forward(state.params, x0)
        for a, f, kept in zip(started.aux, forward, state.aux, strict=True):
            torch.testing.assert_close(a, f if reinit else kept)


def test_blockwise_step_descends_in_every_block_at_the_papers_step():
    """The blockwise rule moves Theta, then the odd hidden layers, then the even ones; each
    block's variables are decoupled, so each block step at 1.99 / L lowers the energy (in
    float64, on one batch, every inner iteration)."""
    net, _, params, x0, y = _teacher(m=60, sizes=(6, 5, 4, 4, 3), dtype=torch.float64)
    pen = get_penalty("bregman")
    aux, _ = net.forward(params, x0)
    aux = tuple(a + 0.3 * torch.randn_like(a).abs() for a in aux)
    vecs = initial_vectors(net, torch.float64, params, (x0, *aux))
    energy = net.energy(params, x0, aux, y, pen).total
    for _ in range(10):
        params, aux, *vecs = joint_step(
            net, pen, params, aux, x0, y, *vecs, step_scale=1.99, alternating=True, x_blocks=True
        )
        new = net.energy(params, x0, aux, y, pen).total
        assert new <= energy * (1 + 1e-12)
        energy = new
