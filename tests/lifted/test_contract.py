"""The solvers added here are registered (so the core contract suite in
``tests/lifted/test_solvers.py``, parametrised over the registry, covers them), the residual
network trains under every solver of the step interface, and bad settings name the bad
value."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bregnn.lifted import SOLVERS, LiftedNetwork, make_solver, one_hot
from bregnn.lifted.solvers import get_solver
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


def _train(name, epochs=3, seed=0, network_cls=LiftedNetwork, sizes=(6, 5, 4, 3), **extra):
    net, params, x0, y = _teacher(sizes=sizes, network_cls=network_cls)
    fields = {f.name for f in dataclasses.fields(get_solver(name).Config)}
    settings = {k: v for k, v in {**FAST, **extra}.items() if k in fields}
    solver = make_solver(name, net, **settings)
    state = solver.init_state(params, x0, y)
    gen = torch.Generator().manual_seed(seed)
    start = solver.objective(state, x0, y)
    metrics = {}
    for _ in range(epochs):
        state, metrics = solver.epoch(state, x0, y, gen)
    return solver, state, start, solver.objective(state, x0, y), metrics


def test_new_solvers_are_registered():
    assert set(NEW) <= set(SOLVERS)
    net, *_ = _teacher()
    for name in NEW:
        assert SOLVERS.key(name) == name
        assert make_solver(name, net).name == name


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
