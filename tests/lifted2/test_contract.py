"""The solver contract over the solvers added here (and the residual network under the
core's solvers): objective decreases, state keeps its types and round-trips through
``torch.save``/``weights_only`` loading, a fixed seed is deterministic, bad settings name
the bad value."""

from __future__ import annotations

import io

import pytest
import torch

from bregnn.lifted import SOLVERS, LiftedNetwork, Params, make_solver, one_hot
from bregnn.lifted.solvers import get_solver, state_from_dict, state_to_dict
from bregnn.lifted.solvers.residual import ResidualLiftedNetwork

NEW = ["bcd", "admm", "constrained", "linbreg"]
FAST = {"batch_size": 10, "inner_iters": 5, "tau": 10.0}


def _teacher(seed=0, m=40, sizes=(6, 5, 4, 3), act="relu", network_cls=LiftedNetwork):
    gen = torch.Generator().manual_seed(seed)
    net = network_cls(sizes, act)
    teacher = net.init_params(gen)
    x0 = torch.randn(m, sizes[0], generator=gen)
    _, z_out = net.forward(teacher, x0)
    y = one_hot(z_out.argmax(-1), sizes[-1])
    return net, net.init_params(gen), x0, y


def _leaves(state):
    for value in state:
        yield from value if isinstance(value, tuple) else (value,)


def _train(name, epochs=3, seed=0, network_cls=LiftedNetwork, sizes=(6, 5, 4, 3), **extra):
    net, params, x0, y = _teacher(sizes=sizes, network_cls=network_cls)
    solver = make_solver(name, net, **FAST, **extra)
    state = solver.init_state(params, x0, y)
    gen = torch.Generator().manual_seed(seed)
    start = solver.objective(state, x0, y)
    metrics = {}
    for _ in range(epochs):
        state, metrics = solver.epoch(state, x0, y, gen)
    return solver, state, start, solver.objective(state, x0, y), metrics


def test_new_solvers_are_registered():
    assert set(NEW) <= set(SOLVERS)
    for name in NEW:
        assert get_solver(name).name == name


@pytest.mark.parametrize("name", NEW)
def test_objective_decreases(name):
    _, _, start, end, metrics = _train(name)
    assert torch.isfinite(end) and end < start
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


@pytest.mark.parametrize("name", NEW)
def test_state_keeps_types_and_roundtrips(name):
    net, params, x0, y = _teacher()
    solver = make_solver(name, net, **FAST)
    state = solver.init_state(params, x0, y)
    m = x0.shape[0] if solver.full_batch else 10
    new = solver.update(state, x0[:m], y[:m])
    assert type(new) is solver.State is type(state)
    assert all(isinstance(t, torch.Tensor) for t in _leaves(new))
    for a, b in zip(_leaves(state), _leaves(new), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert int(new.step) == 1
    assert len(new.metrics) == len(solver.metric_names())
    buffer = io.BytesIO()
    torch.save(state_to_dict(new), buffer)
    buffer.seek(0)
    back = state_from_dict(solver.State, torch.load(buffer, weights_only=True))
    for a, b in zip(_leaves(new), _leaves(back), strict=True):
        assert torch.equal(a, b)
    assert isinstance(solver.params(new), Params)


@pytest.mark.parametrize("name", NEW)
def test_fixed_seed_is_deterministic(name):
    _, s1, _, _, _ = _train(name, epochs=2, seed=3)
    _, s2, _, _, _ = _train(name, epochs=2, seed=3)
    for a, b in zip(_leaves(s1), _leaves(s2), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["lbn-s", "lbn-d", "linbreg", "constrained"])
def test_residual_network_trains_under_every_interface_solver(name):
    _, _, start, end, _ = _train(
        name, network_cls=ResidualLiftedNetwork, sizes=(6, 5, 5, 5, 3), step_scale=0.5
    )
    assert torch.isfinite(end) and end < start


@pytest.mark.parametrize(
    ("name", "setting", "value"),
    [
        ("bcd", "theta_iters", 0),
        ("bcd", "tau", -1.0),
        ("bcd", "step_scale", 2.0),
        ("admm", "beta", 0.0),
        ("admm", "tau", 0.0),
        ("admm", "admm_iters", 1.5),
        ("constrained", "dual_step", -0.1),
        ("constrained", "eps", -1.0),
        ("constrained", "init_lambda", -1.0),
        ("linbreg", "mu", -0.1),
        ("linbreg", "delta", 0.0),
    ],
)
def test_bad_settings_name_the_value(name, setting, value):
    with pytest.raises(ValueError, match=setting):
        get_solver(name).Config(**{setting: value})
