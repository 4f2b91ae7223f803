"""Data-parallel model averaging: two gloo processes agree with the same computation done
sequentially in one process (per-rank updates on the same batches, then the average)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor

from bregnn.lifted import LiftedNetwork, make_solver
from bregnn.lifted.distributed import (
    DistContext,
    average_parameters,
    broadcast_parameters,
    data_parallel_epoch,
    init_distributed,
    save_on_main,
    shard,
    shard_indices,
    theta_of,
    with_theta,
)

WORLD = 2
EPOCHS = 2
SYNC_EVERY = 2


@dataclass
class LSConfig:
    lr: float = 0.05
    batch_size: int = 4


class LSState(NamedTuple):
    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    metrics: Tensor


class LeastSquaresSGD:
    """A minimal solver with the lifted contract: SGD on 1/2|W x + b - y|^2 (float64)."""

    full_batch = False

    def __init__(self, config: LSConfig | None = None) -> None:
        self.config = config or LSConfig()

    def init_state(self, w: Tensor, b: Tensor) -> LSState:
        return LSState((w,), (b,), torch.zeros(1, dtype=torch.float64))

    def batches(self, n: int, generator: torch.Generator) -> list[Tensor]:
        return list(torch.randperm(n, generator=generator).split(self.config.batch_size))

    def update(self, state: LSState, x: Tensor, y: Tensor) -> LSState:
        (w,), (b,) = state.weights, state.biases
        r = x @ w.T + b - y
        w = w - self.config.lr * r.T @ x / x.shape[0]
        b = b - self.config.lr * r.mean(0)
        return LSState((w,), (b,), (0.5 * (r * r).sum(-1).mean()).reshape(1))


def _data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(34, 5, generator=g, dtype=torch.float64)  # 34: one sample is dropped
    y = x @ torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.1
    w = torch.randn(3, 5, generator=g, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    return x, y, w, b


def _lifted_setup(name: str):
    """A registered lifted solver on a tiny float64 problem."""
    gen = torch.Generator().manual_seed(0)
    net = LiftedNetwork((5, 4, 3), "relu")
    params = net.init_params(gen, dtype=torch.float64)
    x = torch.randn(34, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(34, 3, generator=gen, dtype=torch.float64)
    solver = make_solver(name, net, batch_size=4, inner_iters=3, tau=5.0)
    return solver, solver.init_state(params, x, y), x, y


def _setup(name: str):
    if name == "least-squares":
        x, y, w, b = _data()
        solver = LeastSquaresSGD()
        return solver, solver.init_state(w, b), x, y
    return _lifted_setup(name)


def _worker(rank: int, init_method: str, out_path: str, name: str = "least-squares") -> None:
    ctx = init_distributed("gloo", init_method=init_method, rank=rank, world_size=WORLD)
    solver, state, x, y = _setup(name)
    # every rank starts from rank 0's parameters
    theta = broadcast_parameters([t + rank for t in theta_of(state)], ctx)
    state = with_theta(state, theta)
    xs, ys = shard([x, y], ctx)
    gen = torch.Generator().manual_seed(100 + rank)
    rounds = 0
    for _ in range(EPOCHS):
        state, r = data_parallel_epoch(solver, state, xs, ys, gen, ctx, sync_every=SYNC_EVERY)
        rounds += r
    save_on_main(ctx, {"theta": theta_of(state), "rounds": rounds}, out_path)
    torch.distributed.destroy_process_group()


def _sequential(name: str = "least-squares") -> tuple[list[Tensor], int]:
    solver, state, x, y = _setup(name)
    states = [state] * WORLD
    shards = [
        (x[shard_indices(len(x), r, WORLD)], y[shard_indices(len(x), r, WORLD)])
        for r in range(WORLD)
    ]
    gens = [torch.Generator().manual_seed(100 + r) for r in range(WORLD)]
    rounds = 0
    for _ in range(EPOCHS):
        batches = [solver.batches(len(shards[r][0]), gens[r]) for r in range(WORLD)]
        n_batches = len(batches[0])
        for start in range(0, n_batches, SYNC_EVERY):
            for r in range(WORLD):
                for idx in batches[r][start : start + SYNC_EVERY]:
                    states[r] = solver.update(states[r], shards[r][0][idx], shards[r][1][idx])
            thetas = [theta_of(s) for s in states]
            mean = [torch.stack(ts).mean(0) for ts in zip(*thetas)]
            states = [with_theta(s, mean) for s in states]
            rounds += 1
    return theta_of(states[0]), rounds


def test_two_gloo_processes_match_the_sequential_average(tmp_path) -> None:
    out = tmp_path / "theta.pt"
    init_method = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(init_method, str(out)), nprocs=WORLD, join=True)
    result = torch.load(out, weights_only=True)
    expected, rounds = _sequential()
    assert result["rounds"] == rounds == EPOCHS * 3  # 17 samples: batches 4,4,4,4,1
    for got, want in zip(result["theta"], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # and the averaged model is not simply one rank's model
    x, y, w, b = _data()
    solver = LeastSquaresSGD()
    single = solver.init_state(w, b)
    idx = shard_indices(len(x), 0, WORLD)
    single = solver.update(single, x[idx][:4], y[idx][:4])
    assert not torch.allclose(result["theta"][0], single.weights[0])


@pytest.mark.parametrize("name", ["lbn-s"])
def test_registered_lifted_solver_averages_like_the_sequential_computation(tmp_path, name):
    out = tmp_path / "theta.pt"
    init_method = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(init_method, str(out), name), nprocs=WORLD, join=True)
    result = torch.load(out, weights_only=True)
    expected, rounds = _sequential(name)
    assert result["rounds"] == rounds
    for got, want in zip(result["theta"], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_single_process_collectives_are_identities() -> None:
    ctx = init_distributed()
    assert ctx == DistContext() and ctx.is_main and not ctx.initialized
    params = [torch.randn(3, 2), torch.randn(4)]
    for out in (average_parameters(params, ctx), broadcast_parameters(params, ctx)):
        for got, want in zip(out, params, strict=True):
            assert torch.equal(got, want) and got is not want


def test_shards_are_disjoint_and_cover() -> None:
    n, world = 11, 3
    shards = [shard_indices(n, r, world, equal=False) for r in range(world)]
    assert torch.equal(torch.cat(shards).sort().values, torch.arange(n))
    equal = [shard_indices(n, r, world) for r in range(world)]
    assert {len(s) for s in equal} == {n // world}
    ctx = DistContext(rank=1, world_size=world, initialized=False)
    x = torch.arange(n * 2).reshape(n, 2)
    (xs,) = shard([x], ctx)
    assert torch.equal(xs, x[1:9:3])


def test_theta_round_trip() -> None:
    solver = LeastSquaresSGD()
    state = solver.init_state(torch.randn(2, 3), torch.randn(2))
    theta = theta_of(state)
    back = with_theta(state, [t + 1 for t in theta])
    assert torch.equal(back.weights[0], state.weights[0] + 1)
    assert back.metrics is state.metrics


def test_error_paths() -> None:
    with pytest.raises(ValueError, match="unknown backend 'mpi'"):
        init_distributed("mpi", init_method="file:///nonexistent", rank=0, world_size=1)
    with pytest.raises(ValueError, match="needs rank and world_size"):
        init_distributed("gloo", init_method="file:///nonexistent")
    with pytest.raises(ValueError, match="world_size=2 needs an init_method"):
        init_distributed(world_size=2)
    with pytest.raises(ValueError, match="rank must be in"):
        init_distributed("gloo", init_method="file:///nonexistent", rank=2, world_size=2)
    with pytest.raises(ValueError, match="need 0 <= rank < world_size"):
        shard_indices(10, 3, 2)
    with pytest.raises(ValueError, match="cannot shard 1 samples over 2 ranks"):
        shard_indices(1, 0, 2)
    with pytest.raises(ValueError, match="differ in length"):
        shard([torch.zeros(4), torch.zeros(5)], DistContext())
    state = LeastSquaresSGD().init_state(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="has no field 'theta'"):
        theta_of(state, fields=("theta",))
    with pytest.raises(ValueError, match="got 3 parameter tensors, the state holds 2"):
        with_theta(state, [torch.zeros(1)] * 3)
    with pytest.raises(ValueError, match="sync_every must be a positive integer"):
        data_parallel_epoch(
            LeastSquaresSGD(),
            state,
            torch.zeros(4, 2),
            torch.zeros(4, 2),
            torch.Generator(),
            DistContext(),
            sync_every=0,
        )
