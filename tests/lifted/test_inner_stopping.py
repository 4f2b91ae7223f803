"""LBN-S's inner stopping test (``inner_tol``) and the running average of its iterates
(``average``): the mathematics, checked against independent computations."""

from __future__ import annotations

import pytest
import torch

from bregnn.lifted import LiftedNetwork, Params, make_solver, one_hot
from bregnn.lifted.solvers._step import joint_step, literal_sweep, warm_vectors
from bregnn.lifted.solvers.implicit import ImplicitConfig

F64 = torch.float64
BASE = {"batch_size": 10, "inner_iters": 12, "tau": 5.0, "step_scale": 1.99}


def _problem(seed=0, m=30, sizes=(6, 5, 4, 3), act="relu"):
    gen = torch.Generator().manual_seed(seed)
    net = LiftedNetwork(sizes, act)
    teacher = net.init_params(gen, dtype=F64)
    x0 = torch.randn(m, sizes[0], generator=gen, dtype=F64)
    _, z_out = net.forward(teacher, x0)
    y = one_hot(z_out.argmax(-1), sizes[-1], F64)
    return net, net.init_params(gen, dtype=F64), x0, y


def _tensors(params: Params):
    return (*params.weights, *params.biases)


def _equal(a: Params, b: Params) -> bool:
    return all(torch.equal(u, v) for u, v in zip(_tensors(a), _tensors(b), strict=True))


def _iterates(solver, state, x0, y, n):
    """(Theta, X) after 0..n inner iterations of the update as it was before the stopping
    test (inner_iters joint steps; literal: the literal sweep), with its power vectors."""
    cfg, net, pen = solver.config, solver.network, solver.penalty
    anchor = params = state.params
    aux, _ = net.forward(anchor, x0)
    w_vecs, x_vecs = state.w_vectors, state.x_vectors
    if int(state.step) == 0:
        _, x_vecs = warm_vectors(w_vecs, x_vecs, inputs=(x0, *aux), network=net)
    vec0 = x_vecs[0]
    for _ in range(2):
        input_sq, vec0 = net.layers[0].theta_power_step(x0, vec0)
    x_vecs, input_sq = (vec0, *x_vecs[1:]), float(input_sq)
    kw = {
        "step_scale": cfg.step_scale, "tau": x0.shape[0] / cfg.tau, "anchor": anchor,
        "input_sq": input_sq,
    }  # fmt: skip
    if cfg.step_rule == "literal":
        out = literal_sweep(net, pen, params, aux, x0, y, w_vecs, x_vecs, inner_iters=n, **kw)
        return [(params, aux), out]
    seen = [(params, aux, w_vecs, x_vecs)]
    alternating = cfg.step_rule in ("alternating", "blockwise")
    for _ in range(n):
        params, aux, w_vecs, x_vecs = seen[-1]
        step = joint_step(
            net, pen, params, aux, x0, y, w_vecs, x_vecs, **kw,
            alternating=alternating, x_blocks=cfg.step_rule == "blockwise",
        )  # fmt: skip
        seen.append(step)
    return seen


def _sub_energy(solver, params, aux, x0, y, anchor) -> float:
    """Equation 24 in batch-sum units, computed here from its definition."""
    energy = solver.network.energy(params, x0, aux, y, solver.penalty).total
    dist = sum((p - a).square().sum() for p, a in zip(_tensors(params), _tensors(anchor)))
    return float(energy + x0.shape[0] / solver.config.tau / 2 * dist)


def _after_batches(settings, n_batches=3, seed=0):
    """A state after a few batches (so the iterates are off the initial point)."""
    net, params, x0, y = _problem(seed)
    solver = make_solver("lbn-s", net, **{**BASE, **settings})
    state = solver.init_state(params, x0, y)
    for xb, yb in list(zip(x0.split(10), y.split(10), strict=True))[:n_batches]:
        state = solver.update(state, xb, yb)
    return net, state, x0[:10], y[:10]


# -- inner_tol = 0: what it computed before ---------------------------------------------------
@pytest.mark.parametrize("rule", ["simultaneous", "alternating", "blockwise", "literal"])
def test_inner_tol_zero_is_bit_identical_to_the_update_without_the_test(rule):
    net, params, x0, y = _problem()
    solver = make_solver("lbn-s", net, **BASE, step_rule=rule)
    assert solver.config.inner_tol == 0.0
    assert "inner_iters" not in solver.metric_names()
    state = solver.init_state(params, x0, y)
    for xb, yb in zip(x0.split(10), y.split(10), strict=True):
        expected = _iterates(solver, state, xb, yb, solver.config.inner_iters)[-1]
        state = solver.update(state, xb, yb)
        assert _equal(state.params, expected[0])
        if rule != "literal":
            assert all(torch.equal(a, b) for a, b in zip(state.w_vectors, expected[2]))
            assert all(torch.equal(a, b) for a, b in zip(state.x_vectors, expected[3]))


# -- the stopping rule ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["simultaneous", "alternating", "blockwise"])
def test_a_huge_inner_tol_stops_after_exactly_one_inner_iteration(rule):
    net, state, xb, yb = _after_batches({"step_rule": rule})
    one = make_solver("lbn-s", net, **{**BASE, "inner_iters": 1, "step_rule": rule})
    huge = make_solver("lbn-s", net, **{**BASE, "inner_tol": 1e30, "step_rule": rule})
    expected, got = one.update(state, xb, yb), huge.update(state, xb, yb)
    assert _equal(got.params, expected.params)
    assert huge.metrics(got)["inner_iters"] == 1.0
    # the other metrics are those of the same iterate
    for name in one.metric_names():
        assert huge.metrics(got)[name] == one.metrics(expected)[name]


@pytest.mark.parametrize("rule", ["alternating", "blockwise"])
@pytest.mark.parametrize("tol", [3e-2, 1e-2, 1e-3])
def test_the_batch_stops_at_the_first_iteration_whose_relative_decrease_is_below_tol(rule, tol):
    """The reported count n is the first n with F_(n-1) - F_n <= tol |F_(n-1)| (or the cap),
    the parameters are those after n iterations, and every earlier iteration decreased the
    sub-problem's objective by more than tol (relative): the guarantee of the test."""
    net, state, xb, yb = _after_batches({"step_rule": rule})
    solver = make_solver("lbn-s", net, **{**BASE, "step_rule": rule, "inner_tol": tol})
    new = solver.update(state, xb, yb)
    n = int(solver.metrics(new)["inner_iters"])
    cap = solver.config.inner_iters
    iterates = _iterates(solver, state, xb, yb, cap)
    f = [_sub_energy(solver, p, a, xb, yb, state.params) for p, a, *_ in iterates]
    decrease = [(f[i - 1] - f[i]) / abs(f[i - 1]) for i in range(1, cap + 1)]
    stops = [i + 1 for i, d in enumerate(decrease) if d <= tol]
    assert n == (stops[0] if stops else cap)
    assert 1 <= n <= cap
    assert _equal(new.params, iterates[n][0])
    assert all(d > tol for d in decrease[: n - 1])
    if n < cap:
        assert f[n - 1] - f[n] <= tol * abs(f[n - 1])
    # the iterate at exit is the one the energy metric describes
    assert solver.metrics(new)["energy"] == pytest.approx(
        float(net.energy(iterates[n][0], xb, iterates[n][1], yb, solver.penalty).total) / 10,
        rel=1e-12,
    )


def test_a_smaller_tolerance_runs_more_iterations_to_a_lower_energy():
    """Blockwise steps descend: the later the stop, the lower the batch energy at exit."""
    net, state, xb, yb = _after_batches({"step_rule": "blockwise"})
    counts, energies = [], []
    for tol in (1e-1, 1e-2, 1e-3):
        solver = make_solver(
            "lbn-s", net, **{**BASE, "step_rule": "blockwise", "inner_tol": tol, "inner_iters": 500}
        )
        metrics = solver.metrics(solver.update(state, xb, yb))
        counts.append(metrics["inner_iters"])
        energies.append(metrics["energy"])
    assert counts[0] < counts[1] < counts[2] < 500
    assert energies[0] > energies[1] > energies[2]


def test_the_epoch_metric_is_the_mean_number_of_inner_iterations_per_batch():
    net, params, x0, y = _problem(m=40)
    settings = {**BASE, "step_rule": "blockwise", "inner_tol": 2e-2}
    solver = make_solver("lbn-s", net, **settings)
    state0 = solver.init_state(params, x0, y)
    _, row = solver.epoch(state0, x0, y, torch.Generator().manual_seed(5))
    # replay the same batches one by one
    state, counts = state0, []
    for idx in solver.batches(x0.shape[0], torch.Generator().manual_seed(5)):
        state = solver.update(state, x0[idx], y[idx])
        counts.append(solver.metrics(state)["inner_iters"])
    assert len(set(counts)) > 1  # the batches differ
    assert row["inner_iters"] == pytest.approx(sum(counts) / len(counts), rel=1e-12)


def test_the_count_is_reported_without_tracking_too():
    net, state, xb, yb = _after_batches({"step_rule": "blockwise"})
    kw = {**BASE, "step_rule": "blockwise", "inner_tol": 1e-2}
    tracked = make_solver("lbn-s", net, **kw)
    untracked = make_solver("lbn-s", net, **kw, track=False)
    a, b = tracked.update(state, xb, yb), untracked.update(state, xb, yb)
    assert _equal(a.params, b.params)
    assert untracked.metrics(b)["inner_iters"] == tracked.metrics(a)["inner_iters"]


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "text"),
    [
        ({"inner_tol": -0.1}, "inner_tol must be a finite number >= 0; got -0.1"),
        ({"inner_tol": float("nan")}, "inner_tol must be a finite number >= 0; got nan"),
        ({"inner_tol": float("inf")}, "inner_tol must be a finite number >= 0; got inf"),
        ({"inner_tol": "1e-3"}, "setting 'inner_tol' must be float; got '1e-3'"),
        ({"inner_tol": 0.01, "step_rule": "literal"}, "inner_tol 0.01 needs a joint step rule"),
    ],
)
def test_bad_settings_raise_one_line_naming_the_value(settings, text):
    with pytest.raises(ValueError) as err:
        ImplicitConfig(**settings)
    message = str(err.value)
    assert text in message
    assert "\n" not in message


# -- the running average of the iterates ------------------------------------------------------
def test_averaging_does_not_change_the_iterates_and_reports_their_weighted_average():
    """Theta_bar_k = sum_j beta^(k-j) Theta^j / sum_j beta^(k-j), computed here from the
    iterates of the run without averaging, which the averaged run reproduces bit for bit."""
    net, params, x0, y = _problem(m=60)
    beta = 0.7
    plain = make_solver("lbn-s", net, **BASE, step_rule="alternating")
    averaged = make_solver("lbn-s", net, **BASE, step_rule="alternating", average=beta)
    s_plain, s_avg = plain.init_state(params, x0, y), averaged.init_state(params, x0, y)
    iterates = []
    for k, (xb, yb) in enumerate(zip(x0.split(10), y.split(10), strict=True), start=1):
        s_plain, s_avg = plain.update(s_plain, xb, yb), averaged.update(s_avg, xb, yb)
        assert _equal(s_avg.params, s_plain.params)
        iterates.append(s_plain.params)
        weights = [beta ** (k - j) for j in range(1, k + 1)]
        for i, got in enumerate(_tensors(averaged.params(s_avg))):
            expected = sum(w * _tensors(p)[i] for w, p in zip(weights, iterates)) / sum(weights)
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        if k == 1:  # no pull towards the starting point
            assert _equal(averaged.params(s_avg), s_plain.params)
    assert not _equal(averaged.params(s_avg), s_avg.params)
    assert _equal(plain.params(s_plain), s_plain.params)


def test_fit_evaluates_and_returns_the_average_and_a_run_resumes_it(tmp_path):
    from bregnn.lifted import fit

    net, _, x0, _ = _problem(m=40)
    labels = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
    kw = {**BASE, "step_rule": "alternating", "average": 0.8, "inner_iters": 3}
    whole = fit(net, x0, labels, epochs=2, progress=False, **kw)
    assert type(whole.state).__name__ == "ImplicitAveragedState"
    assert _equal(whole.params, whole.state.average)
    out = tmp_path / "run"
    fit(net, x0, labels, epochs=1, progress=False, out=out, **kw)
    resumed = fit(net, x0, labels, epochs=2, progress=False, out=out, resume=True, **kw)
    assert _equal(resumed.params, whole.params)
    assert _equal(resumed.state.params, whole.state.params)


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_bad_average_raises_one_line_naming_the_value(value):
    with pytest.raises(ValueError) as err:
        ImplicitConfig(average=value)
    assert str(err.value) == f"average must be in [0, 1); got {value!r}"


def test_averaging_refuses_several_processes(monkeypatch):
    net, _, _, _ = _problem()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match=r"average 0\.9 needs one process; this run has 2"):
        make_solver("lbn-s", net, average=0.9)
    make_solver("lbn-s", net)  # without averaging: as before
