"""Devices: every lifted solver and ``fit`` follow the device of the parameters, give the
same numbers on the CPU and on CUDA from one seed, and move runs between devices.

The CUDA cases run where a GPU is present and are skipped elsewhere; the rest run on the CPU.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bregnn import distributed
from bregnn.cli import main
from bregnn.experiments import reproduce
from bregnn.lifted import LiftedNetwork, fit, make_solver, one_hot, run_epoch
from bregnn.lifted.autoencoder import add_noise
from bregnn.lifted.solvers import (
    available_solvers,
    move_state,
    state_from_dict,
    state_to_dict,
)
from bregnn.runs import load_checkpoint
from bregnn.utils import pick_device

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
without_cuda = pytest.mark.skipif(CUDA, reason="checks the error on machines without CUDA")

# every registered method, with settings that make a few quick updates
FAST: dict[str, dict] = {
    "lbn-s": {"batch_size": 16, "inner_iters": 3, "tau": 1.0},
    "lbn-d": {"inner_iters": 3},
    "sgd-bp": {"batch_size": 16, "lr": 0.1, "momentum": 0.5},
    "gd-bp": {"inner_iters": 3, "lr": 0.1},
    "isgd-bp": {"batch_size": 16, "inner_iters": 3, "tau": 1.0, "lr": 0.1},
    "lifted-quadratic": {"batch_size": 16, "inner_iters": 3, "tau": 1.0},
    "mac-qp": {"batch_size": 16, "inner_iters": 3, "tau": 1.0},
    "bcd": {"inner_iters": 2, "theta_iters": 2, "x_iters": 2},
    "admm": {"inner_iters": 2, "admm_iters": 3},
    "constrained": {"inner_iters": 2, "primal_iters": 2},
    "linbreg": {"batch_size": 16, "inner_iters": 3, "mu": 0.001},
}


def toy(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, labels


def model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    return net.to(dtype)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def _epoch(method: str, device: str, network: LiftedNetwork, x, labels):
    """One epoch of ``method`` on ``device`` in float64 from seed 0; the state on the CPU."""
    params = network.init_params(torch.Generator().manual_seed(0), torch.float64, device)
    x = x.to(device, torch.float64)
    y = one_hot(labels.to(device), network.sizes[-1], torch.float64)
    solver = make_solver(method, network, **FAST[method])
    state = solver.init_state(params, x, y)
    assert {t.device.type for t in _tensors(state)} == {torch.device(device).type}
    state, metrics = run_epoch(solver, state, x, y, torch.Generator().manual_seed(0))
    assert {t.device.type for t in _tensors(state)} == {torch.device(device).type}
    return move_state(state, "cpu"), metrics


def test_the_table_covers_the_registry():
    assert sorted(FAST) == sorted(available_solvers())


@needs_cuda
@pytest.mark.parametrize("method", sorted(FAST))
def test_cuda_updates_equal_cpu_updates(method):
    x, labels = toy()
    network = LiftedNetwork([6, 8, 8, 3], "relu")
    cpu, cpu_metrics = _epoch(method, "cpu", network, x, labels)
    gpu, gpu_metrics = _epoch(method, "cuda", network, x, labels)
    start = network.init_params(torch.Generator().manual_seed(0), torch.float64)
    moved = [float((a - b).abs().max()) for a, b in zip(cpu.params.weights, start.weights)]
    assert max(moved) > 1e-3  # the updates changed the weights: the comparison has teeth
    for a, b in zip(_tensors(cpu.params), _tensors(gpu.params), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-8)
    assert gpu_metrics == pytest.approx(cpu_metrics, rel=1e-8, abs=1e-8)


@needs_cuda
def test_cuda_conv_updates_equal_cpu_updates():
    conv = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 3)
    )  # fmt: skip
    network = LiftedNetwork.from_module(conv, input_shape=(1, 8, 8))
    g = torch.Generator().manual_seed(1)
    x, labels = torch.randn(32, 64, generator=g), torch.randint(0, 3, (32,), generator=g)
    cpu, _ = _epoch("lbn-s", "cpu", network, x, labels)
    gpu, _ = _epoch("lbn-s", "cuda", network, x, labels)
    for a, b in zip(_tensors(cpu.params), _tensors(gpu.params), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-8)
    # the power-iteration start vectors are drawn on the CPU: the same numbers on CUDA
    for a, b in zip(cpu.x_vectors, gpu.x_vectors, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-8)


@needs_cuda
def test_cuda_fit_resumes_on_the_cpu(tmp_path):
    x, labels = toy()
    kw = dict(method="lbn-s", seed=0, progress=False, batch_size=16, inner_iters=3, tau=1.0)
    gpu = fit(model(dtype=torch.float64), x, labels, epochs=2, out=tmp_path / "run",
              device="cuda", **kw)  # fmt: skip
    assert gpu.params.weights[0].device.type == "cuda"
    assert next(gpu.module.parameters()).device.type == "cuda"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["device"].startswith("cuda")
    # written from CPU copies: loads without map_location on a machine without CUDA
    raw = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert {t.device.type for t in _tensors(tuple(raw["state"]["params"]["weights"]))} == {"cpu"}
    resumed = fit(model(dtype=torch.float64), x, labels, epochs=3, out=tmp_path / "run",
                  resume=True, device="cpu", **kw)  # fmt: skip
    cpu = fit(model(dtype=torch.float64), x, labels, epochs=3, device="cpu", **kw)
    assert resumed.params.weights[0].device.type == "cpu"
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == gpu.history
    for a, b in zip(_tensors(cpu.params), _tensors(resumed.params), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-8)


# -- on the CPU ----------------------------------------------------------------------------------
def test_fit_device_cpu_is_the_default_run(tmp_path):
    x, labels = toy()
    kw = dict(method="lbn-s", epochs=2, seed=0, progress=False, batch_size=16, inner_iters=3)
    plain = fit(model(), x, labels, **kw)
    on_cpu = fit(model(), x, labels, device="cpu", out=tmp_path / "run", **kw)
    as_device = fit(model(), x, labels, device=torch.device("cpu"), **kw)
    for result in (on_cpu, as_device):
        assert [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in result.history] == [
            {k: v for k, v in r.items() if k != "epoch_time_s"} for r in plain.history
        ]
        for a, b in zip(_tensors(plain.params), _tensors(result.params), strict=True):
            assert torch.equal(a, b)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == "cpu"
    # a LiftedNetwork's initial weights do not depend on where they are put
    net = LiftedNetwork([6, 8, 3])
    a = net.init_params(torch.Generator().manual_seed(5))
    b = net.init_params(torch.Generator().manual_seed(5), device="cpu")
    assert all(torch.equal(u, v) for u, v in zip(_tensors(a), _tensors(b), strict=True))


@without_cuda
def test_fit_on_cuda_without_cuda_is_a_clear_error():
    x, labels = toy()
    with pytest.raises(ValueError, match=r"device 'cuda' asked for but CUDA is not available"):
        fit(model(), x, labels, method="lbn-s", epochs=1, progress=False, device="cuda")


def test_a_checkpoint_loads_with_map_location_and_resumes_on_another_device(tmp_path):
    x, labels = toy()
    kw = dict(method="lbn-s", seed=1, progress=False, batch_size=16, inner_iters=3, tau=1.0)
    part = fit(model(), x, labels, epochs=2, out=tmp_path / "run", **kw)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    solver = make_solver("lbn-s", part.network, batch_size=16, inner_iters=3, tau=1.0)
    state = state_from_dict(solver.State, ckpt["state"])
    for a, b in zip(_tensors(part.state), _tensors(state), strict=True):
        assert torch.equal(a, b) and b.device.type == "cpu"
    weights = torch.load(tmp_path / "run" / "model.pt", map_location="cpu", weights_only=True)
    fresh = model(seed=9)
    fresh.load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), part.module(x), rtol=0, atol=0)
    # a run saved on another device (config.json says so) resumes here, bit for bit
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["device"] = "cuda:0"
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    resumed = fit(model(), x, labels, epochs=4, out=tmp_path / "run", resume=True,
                  device="cpu", **kw)  # fmt: skip
    full = fit(model(), x, labels, epochs=4, **kw)
    for a, b in zip(_tensors(full.params), _tensors(resumed.params), strict=True):
        assert torch.equal(a, b)


def test_move_state_moves_every_tensor_and_keeps_the_numbers():
    x, labels = toy()
    network = LiftedNetwork([6, 8, 8, 3], "relu")
    params = network.init_params(torch.Generator().manual_seed(0))
    for method in ("lbn-s", "lbn-d", "constrained"):
        solver = make_solver(method, network, **FAST[method])
        state = solver.init_state(params, x, one_hot(labels, 3))
        moved = move_state(state, "cpu")
        assert type(moved) is type(state) and type(moved.params) is type(state.params)
        assert all(a is b for a, b in zip(_tensors(state), _tensors(moved), strict=True))
        meta = move_state(state, "meta")
        assert {t.device.type for t in _tensors(meta)} == {"meta"}
        shapes = [(t.shape, t.dtype) for t in _tensors(state)]
        assert [(t.shape, t.dtype) for t in _tensors(meta)] == shapes
        # the step counter and metrics live with the parameters (one device per state)
        assert state.step.device == state.params.weights[0].device
        assert state_to_dict(moved).keys() == state_to_dict(state).keys()


def test_noise_is_drawn_on_the_generator_device():
    x = torch.zeros(4, 5, dtype=torch.float64)
    noisy = add_noise(x, 0.5, torch.Generator().manual_seed(3))
    expected = 0.5 * torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    assert torch.equal(noisy, expected)


# -- the --device option -------------------------------------------------------------------------
@without_cuda
@pytest.mark.parametrize(
    "argv",
    [
        ["lifted-classify", "--device", "cuda"],
        ["lifted-autoencoder", "--device", "cuda:1"],
        ["reproduce", "lifted-classify-mnist", "--quick", "--device", "cuda"],
    ],
)
def test_device_cuda_without_cuda_is_a_one_line_error(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "none")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    device = argv[argv.index("--device") + 1]
    assert err.count("\n") == 1
    assert f"device {device!r} asked for but CUDA is not available" in err
    assert "valid devices here: 'auto', 'cpu'" in err
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_bad_device_name_lists_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["lifted-classify", "--device", "tpu", "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert "bad device 'tpu'; valid devices: 'auto', 'cpu', 'cuda', 'cuda:N'" in (
        capsys.readouterr().err
    )
    for name in ("mps", "cuda:x", ""):
        with pytest.raises(ValueError, match="valid devices"):
            pick_device(name)
    assert pick_device("cpu") == torch.device("cpu")


def test_a_gpu_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"'cuda:2'.*has 2 CUDA device\(s\).*'cuda:0'..'cuda:1'"):
        pick_device("cuda:2")


def test_reproduce_device_only_for_the_lifted_entries(monkeypatch, tmp_path, capsys):
    reproduce._load_entries()
    lifted = {n for n, e in reproduce.REPRODUCTIONS.items() if e.any_device}
    assert {"lifted-classify-fashion-mnist", "lifted-cnn-fashion-mnist"} <= lifted
    assert all(n.startswith(("lifted-", "sparse-ae", "denoising-ae")) for n in lifted)
    monkeypatch.setattr(reproduce, "pick_device", lambda name: torch.device("cuda", 0))
    other = next(n for n in reproduce.REPRODUCTIONS.names() if n not in lifted)
    with pytest.raises(SystemExit) as info:
        main(["reproduce", other, "--quick", "--device", "cuda", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{other} runs on the CPU only; --device 'cuda' applies to [" in err
    assert "'lifted-cnn-fashion-mnist'" in err
    assert not (tmp_path / "o").exists()


def test_lifted_classify_device_cpu_is_recorded(tmp_path, idx_data):
    data = idx_data(tmp_path / "data", ("MNIST",), 40, 20)
    base = ["lifted-classify", "--dataset", "mnist", "--data-dir", str(data), "--layers", "784",
            "8", "10", "--epochs", "1", "--batch-size", "10", "--inner-iters", "2",
            "--no-progress"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["device"] == "cpu"
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt", kind="lifted")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt", kind="lifted")
    for u, v in zip(a["state"]["params"]["weights"], b["state"]["params"]["weights"], strict=True):
        assert torch.equal(u, v)


# -- torch.distributed -------------------------------------------------------------------------
def test_nccl_needs_cuda_and_the_device_is_checked_first():
    with pytest.raises(ValueError, match="backend 'nccl' needs CUDA devices"):
        distributed.init_process(0, 1, "tcp://127.0.0.1:1", backend="nccl", device="cpu")
    if not CUDA:
        with pytest.raises(ValueError, match="CUDA is not available"):
            distributed.init_process(0, 1, "tcp://127.0.0.1:1", device="cuda")
    assert not torch.distributed.is_initialized()
