"""Data-parallel bregnn.lifted.fit (model averaging, eq. 23) on 2 gloo processes equals the
sequential computation of the same batches."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from bregnn import distributed
from bregnn.lifted import LiftedNetwork, fit, make_solver, one_hot
from bregnn.lifted.network import Params

WORLD = 2
EPOCHS = 2
SETTINGS = {
    "lbn-s": {"batch_size": 5, "inner_iters": 3, "tau": 5.0},
    "sgd-bp": {"batch_size": 5, "lr": 0.1},
}


def _problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(43, 5, generator=gen, dtype=torch.float64)  # 43: a short last batch
    labels = torch.randint(0, 3, (43,), generator=gen)
    net = LiftedNetwork((5, 4, 3), "relu")
    params = net.init_params(torch.Generator().manual_seed(7), dtype=torch.float64)
    return net, params, x, labels


def _worker(rank: int, init_method: str, out: str, method: str, sync_every) -> None:
    torch.set_num_threads(1)
    distributed.init_process(rank, WORLD, init_method=init_method, backend="gloo")
    net, params, x, labels = _problem()
    model = net.to_module(params)
    result = fit(
        model, x, labels, method=method, epochs=EPOCHS, seed=3, progress=False,
        sync_every=sync_every, out=f"{out}/run", **SETTINGS[method],
    )  # fmt: skip
    if rank == 0:
        torch.save(
            {"params": [*result.params.weights, *result.params.biases], "history": result.history},
            f"{out}/result.pt",
        )
    distributed.cleanup()


def _sequential(method: str, sync_every):
    """Every rank's updates on its part of each global batch, averaged as fit does."""
    net, params, x, labels = _problem()
    y = one_hot(labels, 3, torch.float64)
    solver = make_solver(method, net, **SETTINGS[method])
    states = [solver.init_state(params, x, y) for _ in range(WORLD)]
    gen = torch.Generator().manual_seed(3)

    def average(states):
        p = [s.params for s in states]
        mean = Params(
            tuple((a + b) / 2 for a, b in zip(p[0].weights, p[1].weights, strict=True)),
            tuple((a + b) / 2 for a, b in zip(p[0].biases, p[1].biases, strict=True)),
        )
        return [s._replace(params=mean) for s in states]

    for _ in range(EPOCHS):
        batches = [
            b
            for b in solver.batches(len(x), gen, SETTINGS[method]["batch_size"] * WORLD)
            if len(b) >= WORLD
        ]
        for step, batch in enumerate(batches, start=1):
            parts = torch.tensor_split(batch, WORLD)
            states = [solver.update(s, x[i], y[i]) for s, i in zip(states, parts, strict=True)]
            if sync_every is not None and step % sync_every == 0:
                states = average(states)
        if sync_every is None or len(batches) % sync_every:
            states = average(states)
    p = states[0].params
    return [*p.weights, *p.biases]


@pytest.mark.parametrize(("method", "sync_every"), [("lbn-s", None), ("lbn-s", 2), ("sgd-bp", 1)])
def test_two_gloo_processes_equal_the_sequential_computation(tmp_path, method, sync_every):
    mp.spawn(
        _worker,
        args=(f"file://{tmp_path / 'rendezvous'}", str(tmp_path), method, sync_every),
        nprocs=WORLD,
        join=True,
    )
    got = torch.load(tmp_path / "result.pt", weights_only=True)
    expected = _sequential(method, sync_every)
    for a, b in zip(got["params"], expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert len(got["history"]) == EPOCHS
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert (tmp_path / "run" / "checkpoint.rank1.pt").exists()
