"""The MNIST depth study on a tiny synthetic IDX dataset (and, marked slow, on real MNIST)."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import pytest
import torch

from bregnn.cli import main
from bregnn.experiments import depth_study as ds
from bregnn.models import MLP
from bregnn.train import evaluate


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = struct.pack(">I", 0x0800 + array.dim()) + b"".join(
        struct.pack(">I", n) for n in array.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.to(torch.uint8).numpy().tobytes())


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory) -> Path:
    """MNIST-shaped IDX files: class c lights up row block c of an otherwise dark image."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 40, (n, 28, 28), generator=gen)
        rows = (labels * 2).view(-1, 1) + torch.arange(3)
        images[torch.arange(n).view(-1, 1), rows] = 255
        images[0, 0, 0] = 0
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def tiny_study(root: Path, tmp_path: Path, **overrides) -> ds.DepthStudy:
    settings = dict(
        depths=(1, 3),
        widths=(8,),
        epochs=2,
        batch_size=20,
        data_dir=root,
        out=tmp_path / "study",
        figures=False,
        progress=False,
    )
    settings.update(overrides)
    return ds.DepthStudy(**settings)


def test_images_are_flattened_into_the_sigmoid_range(fake_mnist, tmp_path):
    (x, y), (xt, _) = ds.load_images(tiny_study(fake_mnist, tmp_path))
    assert x.shape == (60, 784) and xt.shape == (20, 784) and y.dtype == torch.int64
    assert x.min().item() == pytest.approx(0.05) and x.max().item() == pytest.approx(0.95)
    # the map is affine in the pixel value: 0 -> 0.05, 255 -> 0.95
    assert torch.allclose(x[y == 0][0].reshape(28, 28)[0, 1:], torch.full((27,), 0.95))


def test_cli_study_writes_table_and_figure(fake_mnist, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["depth-study", "--depths", "1", "3", "--widths", "8", "--epochs", "2"]
    argv += [
        "--batch-size",
        "20",
        "--data-dir",
        str(fake_mnist),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| 3 | 8 | bregman | 1 |" in printed and "| 1 | 8 | standard | 1 |" in printed
    assert (out / "depth-study.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    assert {(r["depth"], r["variant"]) for r in results["rows"]} == {
        (1, "bregman"),
        (1, "standard"),
        (3, "bregman"),
        (3, "standard"),
    }
    # the recorded accuracy is the saved model's accuracy on the test images
    run = next(r for r in results["runs"] if r["variant"] == "bregman" and r["depth"] == 3)
    model = MLP(784, [8] * 3, 10, "sigmoid", "bregman")
    model.load_state_dict(torch.load(out / "bregman-d3-w8" / "seed0" / "model.pt"))
    study = tiny_study(fake_mnist, tmp_path)
    _, test = ds.load_images(study)
    assert evaluate(model, *test)[1] == pytest.approx(run["test_accuracy"])


def test_study_resume_skips_finished_runs(fake_mnist, tmp_path):
    first = ds.run_study(tiny_study(fake_mnist, tmp_path, depths=(2,)), echo=False)
    again = ds.run_study(tiny_study(fake_mnist, tmp_path, depths=(2,), resume=True), echo=False)
    assert all(r["skipped"] for r in again.runs) and again.rows == first.rows
    with pytest.raises(ValueError, match="cannot resume .*: lr saved 0.1, requested 0.5 "):
        ds.run_study(tiny_study(fake_mnist, tmp_path, depths=(2,), lr=0.5, resume=True), echo=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variants": ("breg",)}, "unknown variant 'breg'; valid variants"),
        ({"activation": "relu"}, "bregman variant needs an invertible activation; 'relu'"),
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"dataset": "svhn"}, "svhn"),
        ({"lr": 0.0}, "lr must be positive and finite; got 0.0"),
        ({"epochs": 0}, "epochs must be a positive integer; got 0"),
        ({"depths": (2, 0)}, "depth must be a positive integer; got 0"),
        ({"widths": ()}, "give at least one width"),
        ({"momentum": -0.1}, r"momentum must be in \[0, 1\)"),
        ({"train_limit": 0}, "train_limit must be positive or None"),
    ],
)
def test_bad_settings_raise_clear_errors(fake_mnist, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_study(fake_mnist, tmp_path, **overrides)


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["depth-study", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "MNIST (train) not found" in capsys.readouterr().err


REAL_DATA = Path(os.environ.get("BREGNN_DATA", Path(__file__).parents[2] / "shared" / "data"))


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DATA / "MNIST" / "raw").exists(), reason="MNIST files not found")
def test_real_mnist_depth9_standard_collapses_bregman_learns(tmp_path):
    study = ds.DepthStudy(
        depths=(9,), widths=(128,), epochs=2, data_dir=REAL_DATA, out=tmp_path, figures=False
    )
    rows = {r["variant"]: r for r in ds.run_study(study, echo=False).rows}
    assert rows["bregman"]["test_mean"] > 0.8
    assert rows["standard"]["test_mean"] < 0.2
