"""Autoencoder pieces: subsets, noise, the network of equation 26, the objective (equal to
the lifted energy at the forward pass), metrics, backprop baselines, sparsity vs alpha,
figures, and error paths."""

from __future__ import annotations

import pytest
import torch

from bregnn.activations import ReLU, SoftThreshold
from bregnn.lifted import SOLVERS, forward_objective, make_solver
from bregnn.lifted.autoencoder import (
    add_noise,
    load_images,
    plot_curves,
    plot_reconstructions,
    sparse_autoencoder,
    split_subsets,
    undercomplete_autoencoder,
)
from bregnn.lifted.fit import evaluate_regression
from bregnn.lifted.penalties import L1, get_penalty
from bregnn.lifted.solvers.backprop import objective_and_grads

D = torch.float64
BACKPROP = [name for name, method in SOLVERS.items() if method.backprop]


def _images(n=60, dim=16, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, dim, generator=gen, dtype=dtype)


def test_split_subsets_are_seeded_disjoint_and_cover():
    train = torch.arange(50, dtype=torch.float32)[:, None].repeat(1, 3)
    test = 100 + torch.arange(20, dtype=torch.float32)[:, None].repeat(1, 3)
    a, val = split_subsets(train, test, 10, seed=4)
    b, _ = split_subsets(train, test, 10, seed=4)
    c, _ = split_subsets(train, test, 10, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    ids = torch.cat([a[:, 0], val[:, 0]]).sort().values
    assert torch.equal(ids, torch.cat([train[:, 0], test[:, 0]]))
    assert val.shape[0] == 60
    _, small = split_subsets(train, test, 10, seed=4, val_size=7)
    assert small.shape[0] == 7 and set(small[:, 0].tolist()) <= set(val[:, 0].tolist())


def test_noise_has_the_requested_std_and_is_seeded():
    x = torch.zeros(2000, 50, dtype=D)
    noisy = add_noise(x, 0.3, torch.Generator().manual_seed(0))
    assert abs(float(noisy.std()) - 0.3) < 0.005 and abs(float(noisy.mean())) < 0.005
    again = add_noise(x, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    clean = add_noise(x, 0.0, torch.Generator())
    assert torch.equal(clean, x) and clean is not x


def test_sparse_autoencoder_is_equation_26():
    """The paper's Section 6.2: L = 4 affine layers, the code on x_2 = x_{L/2}."""
    net = sparse_autoencoder(0.09, dim=20, width=12)
    assert net.sizes == (20, 12, 12, 12, 20)
    kinds = [type(a) for a in net.activations]
    assert kinds == [ReLU, SoftThreshold, ReLU]
    assert net.activations[1].alpha == 0.09
    assert isinstance(net.regularisers[1], L1) and net.regularisers[1].alpha == 0.09
    assert [r is None for r in net.regularisers] == [True, False, True]
    assert net.output.name == "identity"
    deeper = sparse_autoencoder(0.09, dim=20, width=12, n_layers=6)
    assert deeper.sizes == (20, 12, 12, 12, 12, 12, 20)
    assert type(deeper.activations[2]) is SoftThreshold
    under = undercomplete_autoencoder(dim=20, width=12, code=5)
    assert under.sizes == (20, 12, 5, 12, 20) and all(r is None for r in under.regularisers)


def test_objective_is_mse_plus_l1_of_the_code_and_the_lifted_energy_at_the_forward_pass():
    net = sparse_autoencoder(0.1, dim=16, width=10)
    params = net.init_params(torch.Generator().manual_seed(0), dtype=D)
    x = _images(dtype=D)
    value = forward_objective(net, params, x, x)
    hidden, z = net.forward(params, x)
    manual = 0.5 * ((z - x) ** 2).sum(-1) + 0.1 * hidden[1].abs().sum(-1)
    torch.testing.assert_close(value, manual)
    energy = net.energy(params, x, hidden, x, get_penalty("bregman")).total
    torch.testing.assert_close(energy, value.sum())
    metrics = evaluate_regression(net, params, x, x, sparsity_layers=[2], chunk=7)
    assert metrics["objective"] == pytest.approx(float(manual.mean()), rel=1e-12)
    assert metrics["loss"] == pytest.approx(float(0.5 * ((z - x) ** 2).sum(-1).mean()), rel=1e-12)
    assert metrics["mse"] == pytest.approx(float(((z - x) ** 2).mean()), rel=1e-12)
    code_sparsity = 100.0 * (hidden[1] == 0).to(D).mean()  # percent of exact zeros
    assert metrics["sparsity"] == pytest.approx(float(code_sparsity), rel=1e-12)


def test_backprop_gradient_is_the_gradient_of_the_objective():
    net = sparse_autoencoder(0.05, dim=8, width=6)
    params = net.init_params(torch.Generator().manual_seed(1), dtype=D)
    x = _images(n=12, dim=8, dtype=D)
    loss, grads = objective_and_grads(forward_objective, net, params, x, x)
    eps = 1e-6
    i, j = 1, 2

    def f(shift):
        ww = params.weights[2].clone()
        ww[i, j] += shift
        p = params._replace(weights=(*params.weights[:2], ww, *params.weights[3:]))
        return float(forward_objective(net, p, x, x).mean())

    numeric = (f(eps) - f(-eps)) / (2 * eps)
    assert grads.weights[2][i, j].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    assert float(loss) == pytest.approx(f(0.0), rel=1e-12)


@pytest.mark.parametrize("name", BACKPROP)
def test_backprop_baselines_decrease_the_objective(name):
    net = sparse_autoencoder(0.05, dim=16, width=12)
    params = net.init_params(torch.Generator().manual_seed(0))
    x = _images()
    settings = {"lr": 0.02}
    if name == "isgd-bp":
        settings.update(batch_size=10, inner_iters=3, tau=1.0)
    solver = make_solver(name, net, **settings)
    state = solver.init_state(params, x, x)
    start = solver.objective(state, x, x)
    state = solver.run(state, x, x, epochs=5, generator=torch.Generator().manual_seed(0))
    end = solver.objective(state, x, x)
    assert end < start
    assert float(end) == pytest.approx(
        evaluate_regression(net, solver.params(state), x, x, [3])["objective"], rel=1e-5
    )


def test_code_sparsity_increases_with_alpha():
    x = _images(n=80, dim=16, seed=2)
    rates = []
    for alpha in (0.0, 0.05, 0.3):
        net = sparse_autoencoder(alpha, dim=16, width=16)
        params = net.init_params(torch.Generator().manual_seed(0))
        solver = make_solver("lbn-s", net, batch_size=20, inner_iters=10, tau=20.0)
        state = solver.run(
            solver.init_state(params, x, x), x, x, 5, torch.Generator().manual_seed(0)
        )
        rates.append(evaluate_regression(net, solver.params(state), x, x, [2])["sparsity"])
    assert rates[0] < rates[1] < rates[2], rates


def test_figures_are_small_pngs(tmp_path):
    rows = [
        {"epoch": e, "train_objective": 1 / e, "val_loss": 2 / e, "train_sparsity": 50 + e}
        for e in range(1, 6)
    ]
    path = plot_curves({"lbn-s": rows, "sgd-bp": rows[:3]}, tmp_path / "c.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 300_000
    images = {"original": _images(n=8, dim=784), "lbn-s": _images(n=8, dim=784, seed=1)}
    path = plot_reconstructions(images, tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 300_000


def test_error_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'; valid datasets"):
        load_images("cifar10", "train", tmp_path)
    with pytest.raises(ValueError, match="noise std must be >= 0"):
        add_noise(torch.zeros(2), -0.1, torch.Generator())
    with pytest.raises(ValueError, match="train_size must be in \\[1, 9\\]"):
        split_subsets(torch.zeros(10, 2), torch.zeros(3, 2), 10)
    with pytest.raises(ValueError, match="val_size must be in \\[1, 8\\]"):
        split_subsets(torch.zeros(10, 2), torch.zeros(3, 2), 5, val_size=9)
    with pytest.raises(ValueError, match="code_layer must be a hidden layer in \\[1, 3\\]"):
        sparse_autoencoder(0.1, code_layer=5)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        sparse_autoencoder(-0.1)
    with pytest.raises(ValueError, match="at least one method"):
        plot_curves({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one row"):
        plot_reconstructions({}, tmp_path / "x.png")
