"""The lifted commands: changed settings on --resume, reruns, divergence and damaged
checkpoints each end in one line with a non-zero exit; kill -9 and --resume is exact."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bregnn.cli import main


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, idx_data):
    return idx_data(tmp_path_factory.mktemp("data"), n_train=300, n_test=100, seed=1)


def classify(data_dir, out, *extra):
    return [
        "lifted-classify", "--dataset", "mnist", "--layers", "784", "16", "10",
        "--epochs", "2", "--inner-iters", "2", "--batch-size", "50", "--no-progress",
        "--data-dir", str(data_dir), "--out", str(out), *extra,
    ]  # fmt: skip


def autoencoder(data_dir, out, *extra):
    return [
        "lifted-autoencoder", "--dataset", "mnist", "--train-size", "60", "--val-size", "30",
        "--width", "24", "--epochs", "2", "--no-progress", "--no-figures",
        "--data-dir", str(data_dir), "--out", str(out), *extra,
    ]  # fmt: skip


def fails(argv, capsys, status=2) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bregnn {argv[0]}: error: "), err
    return err


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in csv.DictReader(fh)]


def test_classify_resume_with_changed_layers_is_refused(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert main(classify(data_dir, out)) == 0
    err = fails(
        [*classify(data_dir, out, "--resume")[:5], "32", *classify(data_dir, out, "--resume")[6:]],
        capsys,
    )
    assert "settings differ from the saved run" in err and "network saved" in err
    err = fails(classify(data_dir, out, "--resume", "--tau", "5"), capsys)
    assert "tau saved 100.0, requested 5.0" in err
    err = fails(classify(data_dir, out), capsys)
    assert "--resume to continue it or --overwrite to replace it" in err
    assert main(classify(data_dir, out, "--resume", "--epochs", "3")) == 0  # epochs may grow
    assert len(rows(out / "metrics.csv")) == 3


def test_autoencoder_resume_with_changed_width_is_refused(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert main(autoencoder(data_dir, out)) == 0
    err = fails(autoencoder(data_dir, out, "--resume", "--width", "12"), capsys)
    assert "width saved 24, requested 12" in err


def test_divergence_exits_3_naming_the_setting(tmp_path, data_dir, capsys):
    argv = classify(
        data_dir, tmp_path / "run", "--method", "sgd-bp", "--lr", "1e9", "--center", "none"
    )
    argv[argv.index("--inner-iters") : argv.index("--inner-iters") + 2] = []
    err = fails(argv, capsys, status=3)
    assert "sgd-bp diverged" in err and "lower lr" in err


@pytest.mark.parametrize("damage", ["truncated", "foreign", "depth"])
def test_damaged_checkpoints_are_one_line(tmp_path, data_dir, capsys, damage):
    out = tmp_path / "run"
    assert main(classify(data_dir, out)) == 0
    ckpt = out / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    elif damage == "foreign":
        import torch

        torch.save({"weights": [1, 2]}, ckpt)
    else:  # a checkpoint of a deeper network under this run's config
        other = tmp_path / "deep"
        deep = classify(data_dir, other)
        deep[deep.index("16") : deep.index("16") + 1] = ["16", "16"]
        assert main(deep) == 0
        ckpt.write_bytes((other / "checkpoint.pt").read_bytes())
    err = fails(classify(data_dir, out, "--resume", "--epochs", "3"), capsys)
    assert str(ckpt) in err


def test_kill_9_then_resume_is_exact(tmp_path, data_dir):
    # the same thread count in and out of process: matmul sums depend on it
    epochs = ["--epochs", "25", "--inner-iters", "1", "--threads", "1"]
    assert main([*classify(data_dir, tmp_path / "full"), *epochs]) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bregnn", *classify(data_dir, out), *epochs]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (
        (out / "metrics.csv").exists() and len(rows(out / "metrics.csv")) >= 2
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert len(rows(out / "metrics.csv")) < 25
    assert main([*classify(data_dir, out, "--resume"), *epochs]) == 0
    assert rows(out / "metrics.csv") == rows(tmp_path / "full" / "metrics.csv")
