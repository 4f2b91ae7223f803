"""One pass over the data (``bregnn.lifted.fit.run_epoch``) in one process: the sequential
per-batch updates of any solver with the lifted contract, metrics weighted by the batch
sizes, and model averaging (``sync_every``) the identity for a single process."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import pytest
import torch
from torch import Tensor

from bregnn.distributed import DistContext
from bregnn.lifted import LiftedNetwork, Params, get_solver, make_solver, run_epoch

EPOCHS = 2
SEED = 100


@dataclasses.dataclass(frozen=True)
class LSConfig:
    lr: float = 0.05
    batch_size: int = 4


class LSState(NamedTuple):
    params: Params
    step: Tensor
    metrics: Tensor


class LeastSquaresSGD:
    """A minimal solver with the lifted contract: SGD on 1/2|W x + b - y|^2 (float64)."""

    full_batch = False

    def __init__(self, config: LSConfig | None = None) -> None:
        self.config = config or LSConfig()

    def metric_names(self) -> list[str]:
        return ["loss"]

    def init_state(self, w: Tensor, b: Tensor) -> LSState:
        return LSState(
            Params((w,), (b,)), torch.zeros((), dtype=torch.int64), torch.zeros(1, dtype=w.dtype)
        )

    def batches(self, n: int, generator: torch.Generator, batch_size: int | None = None):
        size = batch_size or self.config.batch_size
        return list(torch.randperm(n, generator=generator).split(size))

    def params(self, state: LSState) -> Params:
        return state.params

    def update(self, state: LSState, x: Tensor, y: Tensor) -> LSState:
        (w,), (b,) = state.params
        r = x @ w.T + b - y
        w = w - self.config.lr * r.T @ x / x.shape[0]
        b = b - self.config.lr * r.mean(0)
        loss = (0.5 * (r * r).sum(-1).mean()).reshape(1)
        return LSState(Params((w,), (b,)), state.step + 1, loss)


def _setup(name: str):
    """A solver, its initial state and float64 data of 34 samples (34 = 8 * 4 + 2: the
    last mini-batch of 4 is smaller)."""
    gen = torch.Generator().manual_seed(0)
    if name == "least-squares":
        x = torch.randn(34, 5, generator=gen, dtype=torch.float64)
        y = x @ torch.randn(5, 3, generator=gen, dtype=torch.float64) + 0.1
        w = torch.randn(3, 5, generator=gen, dtype=torch.float64)
        solver = LeastSquaresSGD()
        return solver, solver.init_state(w, torch.zeros(3, dtype=torch.float64)), x, y
    net = LiftedNetwork((5, 4, 3), "relu")
    params = net.init_params(gen, dtype=torch.float64)
    x = torch.randn(34, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(34, 3, generator=gen, dtype=torch.float64)
    fields = {f.name for f in dataclasses.fields(get_solver(name).Config)}
    wanted = {"batch_size": 4, "inner_iters": 3, "tau": 5.0}
    solver = make_solver(name, net, **{k: v for k, v in wanted.items() if k in fields})
    return solver, solver.init_state(params, x, y), x, y


def _sequential(solver, state, x: Tensor, y: Tensor, gen: torch.Generator):
    """One epoch written out: a fresh permutation cut into mini-batches of ``batch_size``,
    one update each, metrics weighted by the batch sizes; full-batch solvers take
    ``inner_iters`` updates on all data and report the last update's metrics."""
    if solver.full_batch:
        for _ in range(solver.config.inner_iters):
            state = solver.update(state, x, y)
        return state, state.metrics.double()
    total, count = torch.zeros(len(solver.metric_names()), dtype=torch.float64), 0
    for idx in torch.randperm(x.shape[0], generator=gen).split(solver.config.batch_size):
        state = solver.update(state, x[idx], y[idx])
        total += state.metrics.double() * len(idx)
        count += len(idx)
    return state, total / count


def _params(state) -> list[Tensor]:
    return [*state.params.weights, *state.params.biases]


@pytest.mark.parametrize("name", ["least-squares", "lbn-s", "sgd-bp", "gd-bp"])
def test_one_process_epoch_is_the_sequential_loop(name):
    solver, state, x, y = _setup(name)
    ours, reference = state, state
    gen_ours, gen_ref = torch.Generator().manual_seed(SEED), torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        ours, metrics = run_epoch(solver, ours, x, y, gen_ours)
        reference, expected = _sequential(solver, reference, x, y, gen_ref)
        for got, want in zip(_params(ours), _params(reference), strict=True):
            assert torch.equal(got, want)
        assert list(metrics) == solver.metric_names()
        torch.testing.assert_close(
            torch.tensor(list(metrics.values()), dtype=torch.float64),
            expected,
            rtol=1e-12,
            atol=1e-14,
        )
    steps = EPOCHS * (solver.config.inner_iters if solver.full_batch else 9)
    assert int(ours.step) == steps
    if name != "least-squares":  # Solver.epoch is run_epoch
        again, gen = state, torch.Generator().manual_seed(SEED)
        for _ in range(EPOCHS):
            again, _ = solver.epoch(again, x, y, gen)
        for got, want in zip(_params(again), _params(ours), strict=True):
            assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["least-squares", "lbn-s"])
def test_one_process_averaging_is_the_identity(name):
    solver, state, x, y = _setup(name)
    plain, _ = run_epoch(solver, state, x, y, torch.Generator().manual_seed(SEED))
    for sync_every in (1, 2, None):
        synced, _ = run_epoch(
            solver, state, x, y, torch.Generator().manual_seed(SEED), DistContext(), sync_every
        )
        for got, want in zip(_params(synced), _params(plain), strict=True):
            assert torch.equal(got, want)


def test_sync_every_must_be_a_positive_integer():
    solver, state, x, y = _setup("least-squares")
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="sync_every must be a positive integer"):
            run_epoch(solver, state, x, y, torch.Generator(), DistContext(), sync_every=bad)
