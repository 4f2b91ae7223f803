"""bregnn.lifted.fit: the one lifted training loop, on users' own nn.Sequential models."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json

import pytest
import torch
from torch import nn

import bregnn
from bregnn.experiments import lifted_classify
from bregnn.lifted import LiftedNetwork, available_solvers, fit, make_solver
from bregnn.lifted.solvers import SOLVERS, config_fields
from bregnn.runs import RunError

# Every registered method with settings that train it quickly on the toy problem below.
# A method missing from this table fails test_table_covers_registry (optax-style table).
METHODS_UNDER_TEST: dict[str, dict] = {
    "lbn-s": {"batch_size": 16, "inner_iters": 3, "tau": 1.0},
    "lbn-d": {"inner_iters": 3},
    "sgd-bp": {"batch_size": 16, "lr": 0.1},
    "gd-bp": {"inner_iters": 3, "lr": 0.1},
    "isgd-bp": {"batch_size": 16, "inner_iters": 3, "tau": 1.0, "lr": 0.1},
    "lifted-quadratic": {"batch_size": 16, "inner_iters": 3, "tau": 1.0},
    "mac-qp": {"batch_size": 16, "inner_iters": 3, "tau": 1.0},
    "bcd": {"inner_iters": 2, "theta_iters": 2, "x_iters": 2, "tau": 1.0},
    "admm": {"inner_iters": 2, "admm_iters": 3},
    "constrained": {"inner_iters": 2, "primal_iters": 2},
    "linbreg": {"batch_size": 16, "inner_iters": 3, "mu": 0.001},
}


@pytest.fixture
def fake_idx_data(tmp_path_factory, idx_data):
    """A data directory with a 200/100-image MNIST in the official gzip IDX format."""
    return idx_data(tmp_path_factory.mktemp("data"), ("MNIST",), 200, 100)


def toy(n: int = 96, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, labels


def model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def without_time(rows):
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


def test_table_covers_registry():
    assert sorted(METHODS_UNDER_TEST) == sorted(available_solvers())


@pytest.mark.parametrize("method", sorted(METHODS_UNDER_TEST))
def test_every_method_trains_a_sequential(method):
    x, y = toy()
    m = model()
    before = [p.detach().clone() for p in m.parameters()]
    result = fit(
        m, x, y, method=method, epochs=2, seed=0, progress=False, **METHODS_UNDER_TEST[method]
    )
    assert len(result.history) == 2
    assert type(result.module) is nn.Sequential
    assert [type(a) for a in result.module] == [type(a) for a in m]
    # the user's model is left untouched; the result is a trained copy
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    with torch.no_grad():
        out = result.module(x)
        _, z = result.network.forward(result.params, x)
    torch.testing.assert_close(out, z)
    assert result.history[-1]["train_accuracy"] == pytest.approx(
        float((out.argmax(1) == y).double().mean())
    )
    assert all(torch.isfinite(p).all() for p in result.module.parameters())


def test_lbn_s_learns_the_toy_problem():
    x, y = toy(256)
    result = fit(
        model(), x, y, method="lbn-s", epochs=15, seed=0, progress=False, batch_size=32, tau=1.0
    )
    assert result.history[-1]["train_accuracy"] > 0.8
    assert result.history[-1]["batch_energy"] < result.history[0]["batch_energy"]


def test_from_module_round_trip_and_errors():
    seq = nn.Sequential(
        nn.Flatten(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), bregnn.activation("relu"),
        nn.Linear(5, 3), nn.Softmax(dim=-1),
    )  # fmt: skip
    net = LiftedNetwork.from_module(seq)
    assert net.sizes == (4, 5, 5, 3)
    assert [a.name for a in net.activations] == ["tanh", "relu"]
    assert net.output.name == "softmax" and net.flatten
    params = net.params_from_module()
    back = net.to_module(params)
    assert [type(a) for a in back] == [type(a) for a in seq]
    x = torch.randn(7, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(back(x), seq(x))
        hidden, z = net.forward(params, x.flatten(1))
        torch.testing.assert_close(net.output.rho(z), seq(x))
    # two Linear layers in a row: an identity hidden layer; no output activation: MSE
    net2 = LiftedNetwork.from_module(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    assert [a.name for a in net2.activations] == ["identity"] and net2.output.name == "identity"
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm1d\).*supported: nn.Linear"):
        LiftedNetwork.from_module(
            nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
        )
    with pytest.raises(ValueError, match="needs a bias"):
        LiftedNetwork.from_module(nn.Sequential(nn.Linear(3, 4, bias=False)))
    with pytest.raises(ValueError, match="follows another activation"):
        LiftedNetwork.from_module(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.ReLU()))
    with pytest.raises(ValueError, match="2 outputs but linear layer 2 takes 3"):
        LiftedNetwork.from_module(nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(3, 1)))


def test_unknown_settings_raise_and_name_the_valid_ones():
    net = LiftedNetwork([4, 5, 2])
    with pytest.raises(
        ValueError, match=r"unknown setting 'step_scal'.*valid settings: \[.*'step_scale'"
    ):
        make_solver("lbn-s", net, step_scal=1.99)
    with pytest.raises(ValueError, match="unknown setting 'inner_iter'"):
        SOLVERS.get("lbn-s").Config(inner_iter=3)
    with pytest.raises(ValueError, match="unknown setting 'lr'"):
        fit(
            net,
            torch.randn(8, 4),
            torch.zeros(8, dtype=torch.long),
            method="lbn-s",
            epochs=1,
            lr=0.1,
            progress=False,
        )
    with pytest.raises(ValueError, match="unknown method 'lbn'.*valid methods"):
        make_solver("lbn", net)
    with pytest.raises(ValueError, match="'inner_iters' must be int"):
        make_solver("lbn-s", net, inner_iters=2.5)
    with pytest.raises(ValueError, match="full-batch: it takes no batch_size"):
        fit(
            net,
            torch.randn(8, 4),
            torch.zeros(8, dtype=torch.long),
            method="lbn-d",
            epochs=1,
            batch_size=4,
        )


def test_methods_keep_their_own_defaults():
    """BCD's tau is its own (0), not LBN-S's (100): nothing leaks between methods."""
    net = LiftedNetwork([4, 5, 2])
    assert make_solver("bcd", net).config.tau == 0.0
    assert make_solver("lbn-s", net).config.tau == 100.0
    assert make_solver("lifted-quadratic", net).penalty.name == "quadratic"
    assert make_solver("mac-qp", net).penalty.name == "mac"


def cli_parser(argv):
    parser = argparse.ArgumentParser()
    lifted_classify.add_arguments(parser, argv)
    return parser


def test_cli_options_are_the_methods_config_fields(capsys):
    with pytest.raises(SystemExit):
        cli_parser(["--method", "bcd", "--help"]).parse_args(["--method", "bcd", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, (_, default, _) in config_fields(SOLVERS.get("bcd").Config).items():
        assert f"--{name.replace('_', '-')}" in text
        assert f"bcd: {default}" in text
    assert "--step-rule" not in text  # an LBN-S setting
    with pytest.raises(SystemExit):
        cli_parser(["--method", "bcd"]).parse_args(["--method", "bcd", "--step-rule", "literal"])


def test_fit_on_sequential_equals_cli_csv(tmp_path, monkeypatch, fake_idx_data):
    """The command and the library give the same numbers for the same seed and settings."""
    argv = [
        "--dataset", "mnist", "--layers", "784", "12", "10", "--method", "lbn-s",
        "--epochs", "2", "--inner-iters", "3", "--batch-size", "50", "--tau", "1",
        "--out", str(tmp_path / "cli"), "--no-progress", "--data-dir", str(fake_idx_data),
        "--center", "none",
    ]  # fmt: skip
    assert lifted_classify.run(cli_parser(argv).parse_args(argv)) == 0
    from bregnn.data import load_vectors

    x, labels = load_vectors("mnist", "train", fake_idx_data)
    xt, lt = load_vectors("mnist", "test", fake_idx_data)
    net = LiftedNetwork([784, 12, 10], "relu")
    seq = net.to_module(net.init_params(torch.Generator().manual_seed(0)))
    fit(
        seq, x, labels, method="lbn-s", epochs=2, seed=0, x_val=xt, y_val=lt, val_name="test",
        out=tmp_path / "lib", progress=False, inner_iters=3, batch_size=50, tau=1.0,
    )  # fmt: skip
    cli_rows = without_time(read_csv(tmp_path / "cli" / "metrics.csv"))
    lib_rows = without_time(read_csv(tmp_path / "lib" / "metrics.csv"))
    assert cli_rows == lib_rows and len(cli_rows) == 2


def test_resume_is_bit_identical(tmp_path):
    x, y = toy()
    kw = dict(method="lbn-s", seed=3, progress=False, batch_size=16, inner_iters=3, tau=1.0)
    full = fit(model(), x, y, epochs=4, out=tmp_path / "full", **kw)
    fit(model(), x, y, epochs=2, out=tmp_path / "part", **kw)
    resumed = fit(model(), x, y, epochs=4, out=tmp_path / "part", resume=True, **kw)
    assert without_time(read_csv(tmp_path / "full" / "metrics.csv")) == without_time(
        read_csv(tmp_path / "part" / "metrics.csv")
    )
    for a, b in zip(full.module.parameters(), resumed.module.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(resumed.history) == 4
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["train_seconds"] == pytest.approx(
        sum(r["epoch_time_s"] for r in resumed.history)
    )


def test_run_directories_are_never_mixed(tmp_path):
    x, y = toy()
    kw = dict(method="lbn-s", seed=0, progress=False, batch_size=16, inner_iters=2, epochs=1)
    fit(model(), x, y, out=tmp_path, **kw)
    with pytest.raises(RunError, match="--resume to continue it or --overwrite"):
        fit(model(), x, y, out=tmp_path, **kw)
    with pytest.raises(RunError, match=r"inner_iters saved 2, requested 3"):
        fit(model(), x, y, out=tmp_path, resume=True, **{**kw, "inner_iters": 3})
    fit(model(), x, y, out=tmp_path, overwrite=True, **{**kw, "inner_iters": 3})
    assert json.loads((tmp_path / "config.json").read_text())["inner_iters"] == 3


def test_a_changed_activation_parameter_is_refused_on_resume(tmp_path):
    x = torch.randn(24, 6, generator=torch.Generator().manual_seed(0))
    kw = dict(method="lbn-s", seed=0, progress=False, batch_size=8, inner_iters=2, epochs=1)
    fit(LiftedNetwork([6, 5, 6], "soft_threshold"), x, x, out=tmp_path, **kw)
    with pytest.raises(
        RunError, match=r"soft_threshold\(alpha=0\.1\).*soft_threshold\(alpha=0\.2\)"
    ):
        fit(
            LiftedNetwork([6, 5, 6], bregnn.activation("soft_threshold", alpha=0.2)),
            x, x, out=tmp_path, resume=True, **{**kw, "epochs": 2},
        )  # fmt: skip


def test_divergence_and_bad_data_are_reported(tmp_path):
    x, y = toy()
    with pytest.raises(
        FloatingPointError,
        match=r"sgd-bp diverged in epoch 1.*weights, loss not finite; lower lr \(now 1000000.0\)",
    ):
        seq = nn.Sequential(nn.Linear(6, 8), nn.Identity(), nn.Linear(8, 3))
        fit(seq, x, y, method="sgd-bp", epochs=1, lr=1e6, batch_size=8, progress=False)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="training inputs contain 1 non-finite values"):
        fit(model(), bad, y, method="lbn-s", epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"labels span 0..5 but the network has 3 outputs"):
        fit(model(), x, torch.arange(96) % 6, method="lbn-s", epochs=1, progress=False)


def test_regression_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    target = x @ torch.randn(5, 2, generator=g)
    seq = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    result = fit(seq, x, target, method="lbn-s", epochs=5, progress=False, batch_size=16, tau=1.0)
    first, last = result.history[0], result.history[-1]
    assert {"train_objective", "train_loss", "train_mse"} <= set(last)
    assert last["train_loss"] < first["train_loss"]
    with torch.no_grad():
        pred = result.module(x)
    assert last["train_mse"] == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-5)


def test_solver_states_have_params_and_named_metrics():
    x, y = toy()
    net = LiftedNetwork([6, 8, 3])
    target = torch.nn.functional.one_hot(y, 3).float()
    for name, settings in METHODS_UNDER_TEST.items():
        solver = make_solver(name, net, **settings)
        state = solver.init_state(net.init_params(torch.Generator().manual_seed(0)), x, target)
        assert state._fields[0] == "params", name
        state = solver.update(
            state,
            x[:16] if not solver.full_batch else x,
            target[:16] if not solver.full_batch else target,
        )
        assert list(solver.metrics(state)) == solver.metric_names(), name
        assert dataclasses.is_dataclass(solver.config)


@pytest.mark.parametrize("method", ["lbn-s", "lbn-d", "linbreg", "constrained"])
def test_first_step_sizes_use_the_exact_norms(method):
    """The power iterations start warm: the first step sizes are step_scale / L with L from
    the exact spectral norms (within 5%), not from a cold under-estimate."""
    from bregnn.lifted.solvers._step import theta_step_sizes, x_step_sizes

    torch.manual_seed(0)
    net = LiftedNetwork([30, 64, 64, 10])
    params = net.init_params(torch.Generator().manual_seed(0))
    x = torch.randn(100, 30)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (100,)), 10).float()
    settings = {k: v for k, v in METHODS_UNDER_TEST[method].items()}
    if "batch_size" in settings:
        settings["batch_size"] = 100
    solver = make_solver(method, net, **settings)
    state = solver.init_state(params, x, y)
    if not solver.full_batch:  # the first batch warms the input norms
        from bregnn.lifted.solvers._step import warm_vectors

        aux, _ = net.forward(params, x)
        _, x_vecs = warm_vectors(state.w_vectors, state.x_vectors, inputs=(x, *aux))
    else:
        aux, x_vecs = state.aux, state.x_vectors
    step_x, _ = x_step_sizes(net, solver.penalty, params.weights, state.w_vectors, 1.0)
    for l, t in enumerate(step_x):
        exact = 1.0 / (1.0 + float(torch.linalg.matrix_norm(params.weights[l + 1], 2)) ** 2)
        assert t == pytest.approx(exact, rel=0.05), (l, t, exact)
    step_w, _ = theta_step_sizes(net, solver.penalty, (x, *aux), x_vecs, 1.0)
    for l, (t, inp) in enumerate(zip(step_w, (x, *aux), strict=True)):
        aug = torch.cat([inp, torch.ones(inp.shape[0], 1)], 1)
        exact = 1.0 / float(torch.linalg.matrix_norm(aug, 2)) ** 2
        assert t == pytest.approx(exact, rel=0.05), (l, t, exact)


def test_track_false_trains_the_same_parameters_without_batch_diagnostics():
    x, y = toy()
    kw = dict(method="lbn-s", seed=0, progress=False, batch_size=16, inner_iters=2, epochs=2)
    tracked = fit(model(), x, y, **kw)
    untracked = fit(model(), x, y, track=False, **kw)
    for a, b in zip(tracked.module.parameters(), untracked.module.parameters(), strict=True):
        assert torch.equal(a, b)
    assert "batch_energy" in tracked.history[-1]
    assert not any(k.startswith("batch_") for k in untracked.history[-1])
    counted = fit(model(), x, y, track=False, inner_tol=0.5, **kw)
    assert 1 <= counted.history[-1]["batch_inner_iters"] <= 2
