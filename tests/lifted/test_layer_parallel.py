"""Layer-parallel lifted training: 2 gloo processes (G = 2) equal 1 process, and 4 processes
(G = 2 layer groups x R = 2 replicas) equal the sequential computation of the same batches."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from bregnn import distributed
from bregnn.lifted import LiftedNetwork, fit, make_solver, one_hot
from bregnn.lifted.network import Params
from bregnn.lifted.parallel import partition_layers

SIZES = (6, 9, 7, 8, 3)
SETTINGS = {"batch_size": 10, "inner_iters": 4, "tau": 5.0, "step_scale": 1.5}
EPOCHS = 2


def _problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(47, SIZES[0], generator=gen, dtype=torch.float64)
    labels = torch.randint(0, SIZES[-1], (47,), generator=gen)
    net = LiftedNetwork(SIZES, ["relu", "tanh", "relu"])
    params = net.init_params(torch.Generator().manual_seed(5), dtype=torch.float64)
    return net, params, x, labels


def _worker(rank, world, groups, init_method, out, rule):
    torch.set_num_threads(1)
    distributed.init_process(rank, world, init_method=init_method, backend="gloo")
    net, params, x, labels = _problem()
    result = fit(
        net.to_module(params), x, labels, method="lbn-s", epochs=EPOCHS, seed=2, progress=False,
        layer_groups=groups, step_rule=rule, **SETTINGS,
    )  # fmt: skip
    if rank == 0:
        torch.save(
            {
                "params": [*result.params.weights, *result.params.biases],
                "history": result.history,
            },
            f"{out}/result.pt",
        )
    distributed.cleanup()


def _spawn(tmp_path, world, groups, rule):
    mp.spawn(
        _worker,
        args=(world, groups, f"file://{tmp_path / 'rendezvous'}", str(tmp_path), rule),
        nprocs=world,
        join=True,
    )
    return torch.load(tmp_path / "result.pt", weights_only=True)


def _sequential(rule: str, replicas: int):
    """Each replica's LBN-S updates on its part of every global batch, averaged at the end
    of each epoch (sync_every=None)."""
    net, params, x, labels = _problem()
    y = one_hot(labels, SIZES[-1], torch.float64)
    solver = make_solver("lbn-s", net, step_rule=rule, **SETTINGS)
    states = [solver.init_state(params, x, y) for _ in range(replicas)]
    gen = torch.Generator().manual_seed(2)
    history = []
    for _ in range(EPOCHS):
        batches = solver.batches(len(x), gen, SETTINGS["batch_size"] * replicas)
        total, count = 0.0, 0
        for batch in (b for b in batches if len(b) >= replicas):
            parts = torch.tensor_split(batch, replicas)
            states = [solver.update(s, x[i], y[i]) for s, i in zip(states, parts, strict=True)]
            total += sum(float(s.metrics[0]) * len(i) for s, i in zip(states, parts, strict=True))
            count += len(batch)
        p = [s.params for s in states]
        mean = Params(
            tuple(sum(q.weights[l] for q in p) / replicas for l in range(len(SIZES) - 1)),
            tuple(sum(q.biases[l] for q in p) / replicas for l in range(len(SIZES) - 1)),
        )
        states = [s._replace(params=mean) for s in states]
        history.append(total / count)
    return [*states[0].params.weights, *states[0].params.biases], history


@pytest.mark.parametrize("rule", ["simultaneous", "alternating"])
def test_two_layer_groups_equal_one_process(tmp_path, rule):
    got = _spawn(tmp_path, 2, 2, rule)
    expected, energies = _sequential(rule, 1)
    for a, b in zip(got["params"], expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for row, energy in zip(got["history"], energies, strict=True):
        assert row["batch_energy"] == pytest.approx(energy, rel=1e-10)


def test_two_layer_groups_times_two_replicas_equal_the_sequential_computation(tmp_path):
    got = _spawn(tmp_path, 4, 2, "simultaneous")
    expected, energies = _sequential("simultaneous", 2)
    for a, b in zip(got["params"], expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for row, energy in zip(got["history"], energies, strict=True):
        assert row["batch_energy"] == pytest.approx(energy, rel=1e-10)


def test_partition_balances_contiguous_layers():
    # weight counts 401k | 262k + 262k + 5k: the split with the smallest largest group
    assert partition_layers([784, 512, 512, 512, 10], 2) == [range(0, 1), range(1, 4)]
    parts = partition_layers([784, *[512] * 8, 10], 2)
    assert parts[0].start == 0 and parts[-1].stop == 9 and parts[0].stop == parts[1].start
    assert partition_layers([4, 4, 4], 1) == [range(0, 2)]
    with pytest.raises(ValueError, match=r"layer_groups must be in \[1, 2\]"):
        partition_layers([4, 4, 4], 3)


def test_refusals():
    net, params, x, labels = _problem()
    model = net.to_module(params)
    with pytest.raises(ValueError, match="needs a torch.distributed process group"):
        fit(model, x, labels, method="lbn-s", epochs=1, layer_groups=2, progress=False)
    with pytest.raises(ValueError, match="step_rule 'literal' sweeps the layers"):
        fit(model, x, labels, method="lbn-s", epochs=1, layer_groups=2, step_rule="literal")
    with pytest.raises(ValueError, match="inner_tol 0.01 needs the whole batch energy"):
        fit(model, x, labels, method="lbn-s", epochs=1, layer_groups=2, inner_tol=0.01)
    with pytest.raises(ValueError, match="'bcd' cannot run layer-parallel"):
        fit(model, x, labels, method="bcd", epochs=1, layer_groups=2)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    )
    with pytest.raises(ValueError, match="supports dense networks"):
        fit(cnn, torch.randn(4, 1, 4, 4), torch.zeros(4, dtype=torch.long), layer_groups=2)
