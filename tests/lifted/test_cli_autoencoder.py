"""``bregnn lifted-autoencoder`` end to end on tiny synthetic IDX files, resume, error paths."""

from __future__ import annotations

import csv
import gzip
import json
import re
import struct

import pytest
import torch
import torch.multiprocessing as mp

from bregnn.cli import main

COMMON = [
    "--dataset", "mnist", "--train-size", "30", "--val-size", "12", "--width", "8",
    "--alpha", "0.05", "--batch-size", "10", "--inner-iters", "3", "--no-progress",
]  # fmt: skip


def _write_idx(path, data: torch.Tensor, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in data.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + data.to(torch.uint8).numpy().tobytes())


@pytest.fixture
def data_dir(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen)
        labels = torch.randint(0, 10, (n,), generator=gen)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
    return tmp_path / "data"


def _rows(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _grid(data_dir, out, *extra: str) -> int:
    """lbn-s and an sgd-bp learning-rate grid into ``out``."""
    args = [*COMMON, "--data-dir", str(data_dir), "--out", str(out)]
    grid = ["--method", "lbn-s", "sgd-bp", "--lr", "0.001", "0.01"]
    return main(["lifted-autoencoder", *args, *grid, *extra])


def _uninterrupted_lbn_s(tmp_path, data_dir, epochs: int) -> list[dict]:
    fresh = tmp_path / "fresh"
    args = [*COMMON, "--data-dir", str(data_dir), "--out", str(fresh), "--no-figures"]
    assert main(["lifted-autoencoder", *args, "--method", "lbn-s", "--epochs", str(epochs)]) == 0
    return _rows(fresh / "lbn-s" / "metrics.csv")


def test_end_to_end_with_lr_grid_figures_and_resume(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code = _grid(data_dir, out, "--epochs", "2")
    assert code == 0
    printed = capsys.readouterr().out
    assert "lbn-s: epochs 2" in printed and "sgd-bp (lr" in printed
    for run in ("lbn-s", "sgd-bp-lr0.001", "sgd-bp-lr0.01"):
        rows = _rows(out / run / "metrics.csv")
        assert [int(r["epoch"]) for r in rows] == [1, 2]
        for key in ("train_objective", "val_loss", "val_mse", "train_sparsity"):
            assert float(rows[-1][key]) == float(rows[-1][key])  # not NaN
        assert 0 <= float(rows[-1]["train_sparsity"]) <= 100
    summary = json.loads((out / "summary.json").read_text())
    sgd_finals = {
        lr: float(_rows(out / f"sgd-bp-lr{lr}" / "metrics.csv")[-1]["train_objective"])
        for lr in ("0.001", "0.01")
    }
    best = min(sgd_finals, key=sgd_finals.get)
    assert summary["sgd-bp"]["run"] == f"sgd-bp-lr{best}"
    assert (out / "curves.png").stat().st_size > 0 and (
        out / "reconstructions.png"
    ).stat().st_size > 0
    config = json.loads((out / "lbn-s" / "config.json").read_text())
    assert config["train_samples"] == 30 and config["val_samples"] == 12

    # resume (same methods) continues every run from its checkpoint; lbn-s matches an
    # uninterrupted run
    assert _grid(data_dir, out, "--epochs", "3", "--resume") == 0
    resumed = _rows(out / "lbn-s" / "metrics.csv")
    assert [int(r["epoch"]) for r in resumed] == [1, 2, 3]
    for lr in ("0.001", "0.01"):
        rows = _rows(out / f"sgd-bp-lr{lr}" / "metrics.csv")
        assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    straight = _uninterrupted_lbn_s(tmp_path, data_dir, 3)
    assert float(resumed[-1]["train_objective"]) == pytest.approx(
        float(straight[-1]["train_objective"]), rel=1e-6
    )
    assert set(json.loads((out / "summary.json").read_text())) == {"lbn-s", "sgd-bp"}


def test_resume_one_method_of_an_earlier_invocation(tmp_path, data_dir):
    out = tmp_path / "run"
    assert _grid(data_dir, out, "--epochs", "2") == 0
    args = [*COMMON, "--data-dir", str(data_dir), "--out", str(out)]
    # resume continues the lbn-s run from its checkpoint and matches an uninterrupted run
    main(["lifted-autoencoder", *args, "--method", "lbn-s", "--epochs", "3", "--resume"])
    resumed = _rows(out / "lbn-s" / "metrics.csv")
    assert [int(r["epoch"]) for r in resumed] == [1, 2, 3]
    straight = _uninterrupted_lbn_s(tmp_path, data_dir, 3)
    assert float(resumed[-1]["train_objective"]) == pytest.approx(
        float(straight[-1]["train_objective"]), rel=1e-6
    )
    # the summary keeps methods trained by earlier invocations
    assert set(json.loads((out / "summary.json").read_text())) == {"lbn-s", "sgd-bp"}


def test_denoising_and_other_methods(tmp_path, data_dir):
    out = tmp_path / "dn"
    code = main([
        "lifted-autoencoder", *COMMON, "--data-dir", str(data_dir), "--out", str(out),
        "--denoise", "0.1", "--epochs", "1", "--method", "undercomplete", "bcd", "--lr", "0.001", "--code", "3",
    ])  # fmt: skip
    assert code == 0
    assert (out / "undercomplete" / "summary.json").exists()
    assert (out / "bcd" / "summary.json").exists()
    rows = _rows(out / "undercomplete" / "metrics.csv")
    assert float(rows[0]["train_sparsity"]) < 100


@pytest.mark.parametrize(
    ("extra", "message", "by_validate"),
    [
        (["--method", "nope"], "unknown method 'nope'; valid methods", True),
        (["--method", "lbn-s", "lbn-s"], "lists a method twice", True),
        (["--dataset", "cifar10"], "invalid choice: 'cifar10'", False),  # argparse's choices
        (["--epochs", "0"], "--epochs must be a positive integer", True),
        (["--alpha", "-1"], "--alpha must be >= 0", True),
        (["--denoise", "-0.5"], "--denoise \\(noise std\\) must be >= 0", True),
        (
            ["--method", "lbn-s", "sgd-bp", "--lr", "0.1", "-0.1"],
            "--lr values must be positive",
            True,
        ),
        (["--tau", "0"], "tau must be > 0; got 0.0", False),  # the method's Config
        (["--sync-every", "0"], "sync_every must be a positive integer", False),
    ],
)
def test_error_paths(tmp_path, data_dir, extra, message, by_validate, capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "lifted-autoencoder",
                *COMMON,
                "--data-dir",
                str(data_dir),
                "--out",
                str(tmp_path / "e"),
                *extra,
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "bregnn lifted-autoencoder: error:" in err
    assert re.search(message, err), err
    if not by_validate:
        return
    from bregnn.cli import build_parser
    from bregnn.experiments.lifted_autoencoder import _validate

    args = build_parser().parse_args(["lifted-autoencoder", *COMMON, *extra])
    with pytest.raises(ValueError, match=message):
        _validate(args)


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    out = ["--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exc:
        main(["lifted-autoencoder", *COMMON, "--data-dir", str(tmp_path), "--epochs", "1", *out])
    assert exc.value.code == 2
    assert "not found" in capsys.readouterr().err


def _distributed_worker(rank: int, port: int, argv: list[str]) -> None:
    import os

    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    torch.set_num_threads(1)
    assert main(argv) == 0


def test_distributed_run_with_two_processes(tmp_path, data_dir):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "dp"
    argv = [
        "lifted-autoencoder", *COMMON, "--data-dir", str(data_dir), "--out", str(out),
        "--method", "lbn-s", "--epochs", "2", "--distributed", "--backend", "gloo",
        "--no-figures",
    ]  # fmt: skip
    mp.spawn(_distributed_worker, args=(port, argv), nprocs=2, join=True)
    rows = _rows(out / "lbn-s" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert json.loads((out / "lbn-s" / "config.json").read_text())["world_size"] == 2
    assert float(rows[1]["train_objective"]) < float(rows[0]["train_objective"])
