"""The IDX reader and the ``bregnn lifted-classify`` command on a tiny synthetic data set."""

from __future__ import annotations

import csv
import gzip
import struct
from pathlib import Path

import pytest
import torch

from bregnn.cli import main
from bregnn.data import load_vectors
from bregnn.lifted.solvers import SOLVERS, config_fields, state_from_dict
from bregnn.lifted.solvers.implicit import ImplicitState
from bregnn.runs import load_checkpoint


def _write_idx(path: Path, magic: int, array: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.to(torch.uint8).numpy().tobytes())


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    raw = tmp_path / "data" / "MNIST" / "raw"
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = torch.randint(0, 3, (n,), generator=gen)
        images = torch.randint(0, 60, (n, 28, 28), generator=gen)
        images[torch.arange(n), labels, labels] = 255  # learnable: a bright pixel per class
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", 2051, images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", 2049, labels)
    return tmp_path / "data"


def test_idx_reader(tiny_data: Path):
    x, y = load_vectors("mnist", "train", tiny_data)
    assert x.shape == (60, 784) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() == 1.0
    with pytest.raises(FileNotFoundError, match=r"FashionMNIST/raw/t10k-images-idx3-ubyte"):
        load_vectors("fashion-mnist", "test", tiny_data)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_vectors("cifar", "test", tiny_data)
    bad = tiny_data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    _write_idx(bad, 2051, torch.zeros(20, dtype=torch.uint8))
    with pytest.raises(ValueError, match="magic"):
        load_vectors("mnist", "test", tiny_data)


def _cli(data: Path, out: Path, method: str, *extra: str) -> int:
    args = ["lifted-classify", "--dataset", "mnist", "--data-dir", str(data), "--out", str(out)]
    args += ["--layers", "784", "8", "3", "--method", method]
    fields = config_fields(SOLVERS.get(method).Config)
    for setting, value in (("batch_size", "10"), ("inner_iters", "3")):
        if setting in fields:  # the options of a method are its Config fields
            args += ["--" + setting.replace("_", "-"), value]
    return main([*args, "--no-progress", *extra])


def _rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in csv.DictReader(fh)]


@pytest.mark.parametrize("method", ["lbn-s", "sgd-bp", "lbn-d"])
def test_resume_matches_uninterrupted_run(tiny_data: Path, tmp_path: Path, method: str):
    full, split = tmp_path / "full", tmp_path / "split"
    assert _cli(tiny_data, full, method, "--epochs", "3") == 0
    assert _cli(tiny_data, split, method, "--epochs", "1") == 0
    assert _cli(tiny_data, split, method, "--epochs", "3", "--resume") == 0
    assert _rows(full / "metrics.csv") == _rows(split / "metrics.csv")
    assert len(_rows(full / "metrics.csv")) == 3
    a = load_checkpoint(full / "checkpoint.pt", kind="lifted")
    b = load_checkpoint(split / "checkpoint.pt", kind="lifted")
    assert a["epoch"] == b["epoch"] == 3 and a["method"] == b["method"] == method
    for key in ("weights", "biases"):
        for x, y in zip(a["state"]["params"][key], b["state"]["params"][key], strict=True):
            assert torch.equal(x, y)


def test_outputs_and_plain_forward(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    assert _cli(tiny_data, out, "lbn-s", "--epochs", "4") == 0
    rows = _rows(out / "metrics.csv")
    assert {
        "batch_energy",
        "train_accuracy",
        "test_accuracy",
        "train_linear_1",
        "batch_consistency_1",
    } <= set(rows[0])
    ckpt = load_checkpoint(out / "checkpoint.pt", kind="lifted")
    state = state_from_dict(ImplicitState, ckpt["state"])
    weights = torch.load(out / "model.pt", weights_only=True)
    assert torch.equal(weights["0.weight"], state.params.weights[0])
    assert torch.equal(weights["2.bias"], state.params.biases[1])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "lbn-x"], "unknown method 'lbn-x'; valid methods: ['lbn-s'"),
        (["--activation", "gelu"], "unknown activation 'gelu'"),
        (["--tau", "0"], "tau must be > 0; got 0.0"),
        (["--inner-iters", "-2"], "inner_iters must be > 0; got -2"),
        (["--layers", "20", "8", "3"], "first layer size is 20"),
        (["--layers", "784", "8", "2"], "labels span 0..2 but the network has 2 outputs"),
        (["--activation", "scaled_tanh"], "no usable prox"),
    ],
)
def test_bad_inputs(tiny_data: Path, tmp_path: Path, capsys, extra, message):
    args = ["lifted-classify", "--dataset", "mnist", "--data-dir", str(tiny_data)]
    args += ["--out", str(tmp_path / "bad"), "--no-progress", "--epochs", "1", *extra]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
