"""The MNIST depth study (Appendix E.1 protocol) on a tiny synthetic IDX dataset (and,
marked slow, on real MNIST)."""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from bregnn.cli import main
from bregnn.data import to_unit
from bregnn.experiments import depth_study as ds
from bregnn.train import TrainConfig, evaluate, fit


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
        activations=("sigmoid",),
        epochs=2,
        batch_size=20,
        seeds=1,
        data_dir=root,
        out=tmp_path / "study",
        figures=False,
        progress=False,
    )
    settings.update(overrides)
    return ds.DepthStudy(**settings)


def test_defaults_are_appendix_e1():
    p = ds.Protocol()
    assert (p.batch_size, p.momentum, p.epochs) == (100, 0.0, 1000)
    assert (p.lr_end_factor, p.schedule_epochs) == (1e-3, 1000)
    assert p.augment and p.degrees == 11.25 and p.scale == (0.825, 1.175)
    assert p.val_fraction == pytest.approx(10_000 / 60_000) and p.patience == 10
    assert ds.PAPER_LR == {"sigmoid": 0.1, "scaled_tanh": 1e-3}
    study = ds.DepthStudy()
    assert study.activations == ("sigmoid", "scaled_tanh") and study.depths == (2, 9)
    assert study.widths == (16, 128, 1024) and study.seeds == 5
    assert study.protocol("sigmoid").lr == 0.1 and study.protocol("scaled_tanh").lr == 1e-3


def test_validation_split_is_drawn_per_seed(fake_mnist):
    a = ds.load_splits("mnist", fake_mnist, 1 / 6, seed=0)
    b = ds.load_splits("mnist", fake_mnist, 1 / 6, seed=0)
    c = ds.load_splits("mnist", fake_mnist, 1 / 6, seed=1)
    assert len(a.val[1]) == 10 and len(a.train[1]) == 50 and len(a.test[1]) == 20
    assert a.train[0].dtype == torch.uint8 and a.train[0].shape[1:] == (1, 28, 28)
    assert torch.equal(a.val[0], b.val[0]) and not torch.equal(a.val[0], c.val[0])
    seen = torch.cat((a.train[0], a.val[0])).flatten(1)
    full, _ = ds.load_images("mnist", fake_mnist)[0]
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, full.flatten(1).tolist()))


def test_pixels_map_onto_the_activation_range_less_the_authors_margin():
    for act, lo, hi in (("sigmoid", 1e-5, 1 - 1e-5), ("scaled_tanh", -1.7159, 1.7159)):
        model = ds.image_mlp("mnist", [4], act, "bregman", "random", ds.AUTHORS_FILL)
        pixels = torch.tensor([0.0, 1.0]).reshape(1, 2, 1)
        scaled = model[0](pixels).flatten()
        margin = 1e-5 * (hi - lo) if act == "scaled_tanh" else 0.0
        assert scaled[0].item() == pytest.approx(lo + margin, abs=1e-6)
        assert scaled[1].item() == pytest.approx(hi - margin, abs=1e-6)


def test_linear_decay_loss_is_the_linear_lr_schedule_for_plain_sgd():
    """fit with LinearDecayLoss == SGD with torch's LinearLR, step for step."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)
    torch.manual_seed(1)
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    loss = ds.LinearDecayLoss(batches_per_epoch=2, schedule_epochs=4, end_factor=0.1)
    assert loss.factor(0) == 1.0 and loss.factor(4) == pytest.approx(0.1)
    assert loss.factor(2) == pytest.approx(0.55) and loss.factor(9) == pytest.approx(0.1)
    config = TrainConfig(lr=0.5, epochs=5, batch_size=5, seed=3, progress=False)
    fit(a, (x, y), config, loss_fn=loss)
    opt = torch.optim.SGD(b.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.1, total_iters=4)
    order_gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        order = torch.randperm(10, generator=order_gen)
        for start in (0, 5):
            idx = order[start : start + 5]
            opt.zero_grad()
            nn.functional.cross_entropy(b(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_linear_decay_loss_value_is_the_cross_entropy():
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1])
    loss = ds.LinearDecayLoss(batches_per_epoch=1, schedule_epochs=2, end_factor=0.5, start_epoch=1)
    value = loss(logits, labels)
    plain = nn.functional.cross_entropy(logits, labels)
    assert value.item() == plain.item()
    (grad,) = torch.autograd.grad(value, logits)
    (want,) = torch.autograd.grad(plain, logits)
    torch.testing.assert_close(grad, 0.75 * want)


def test_interrupted_run_resumes_on_the_same_schedule(fake_mnist, tmp_path):
    splits = ds.load_splits("mnist", fake_mnist, 1 / 6, seed=0)
    protocol = ds.Protocol(lr=0.5, epochs=4, batch_size=20, schedule_epochs=4, lr_end_factor=0.1,
                           patience=None)  # fmt: skip
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(
            ds.image_mlp("mnist", [8, 8], "sigmoid", "bregman", "random", ds.AUTHORS_FILL)
        )
    ds.train_classifier(models[0], splits, protocol, 0, tmp_path / "straight", progress=False)
    short = ds.Protocol(**{**protocol.__dict__, "epochs": 2})
    ds.train_classifier(models[1], splits, short, 0, tmp_path / "split", progress=False)
    r = ds.train_classifier(models[1], splits, protocol, 0, tmp_path / "split", resume=True,
                            progress=False)  # fmt: skip
    assert r["epochs_run"] == 4 and not r["skipped"]
    assert r["final_lr"] == pytest.approx(0.5 * (1 - 0.9 * 3 / 4))
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_cli_study_writes_table_and_figure(fake_mnist, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["depth-study", "--depths", "1", "3", "--widths", "8", "--epochs", "2", "--seeds", "1"]
    argv += ["--batch-size", "20", "--data-dir", str(fake_mnist), "--out", str(out)]
    argv += ["--no-progress", "--activation", "sigmoid", "scaled_tanh"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| sigmoid | 3 | 8 | bregman | 1 |" in printed
    assert "| scaled_tanh | 1 | 8 | standard | 1 |" in printed
    assert (out / "depth-study.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 8
    # the recorded accuracy is the saved model's accuracy on the test images
    run = next(
        r for r in results["runs"]
        if r["variant"] == "bregman" and r["depth"] == 3 and r["activation"] == "scaled_tanh"
    )  # fmt: skip
    assert run["lr"] == 1e-3
    model = ds.image_mlp("mnist", [8] * 3, "scaled_tanh", "bregman", "random", ds.AUTHORS_FILL)
    model.load_state_dict(torch.load(out / "scaled_tanh-bregman-d3-w8" / "seed0" / "model.pt"))
    _, test = ds.load_images("mnist", fake_mnist)
    assert evaluate(model, to_unit(test[0]), test[1])[1] == pytest.approx(run["test_accuracy"])


def test_study_resume_skips_finished_runs(fake_mnist, tmp_path):
    first = ds.run_study(tiny_study(fake_mnist, tmp_path, depths=(2,)), echo=False)
    again = ds.run_study(tiny_study(fake_mnist, tmp_path, depths=(2,), resume=True), echo=False)
    assert all(r["skipped"] for r in again.runs) and again.rows == first.rows
    with pytest.raises(ValueError, match="cannot resume .*: lr saved None, requested 0.5"):
        ds.run_study(tiny_study(fake_mnist, tmp_path, depths=(2,), lr=0.5, resume=True), echo=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variants": ("breg",)}, "unknown variant 'breg'; valid variants"),
        ({"activations": ("relu",)}, "bregman variant needs an invertible activation; 'relu'"),
        ({"activations": ("swish",)}, "unknown activation 'swish'"),
        ({"activations": ("tanh",)}, "the paper gives no learning rate for 'tanh'"),
        ({"dataset": "svhn"}, "svhn"),
        ({"lr": 0.0}, "lr must be positive and finite; got 0.0"),
        ({"epochs": 0}, "epochs must be a positive integer; got 0"),
        ({"depths": (2, 0)}, "depth must be a positive integer; got 0"),
        ({"widths": ()}, "give at least one width"),
        ({"momentum": -0.1}, r"momentum must be in \[0, 1\)"),
        ({"momentum": 0.9}, "linear learning-rate decay .* plain SGD only"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \(0, 1\)"),
        ({"lr_end_factor": 0.0}, r"lr_end_factor must be in \(0, 1\]"),
        ({"init": "zero"}, "unknown init 'zero'"),
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
    assert not (tmp_path / "o").exists()


REAL_DATA = Path(os.environ.get("BREGNN_DATA", Path(__file__).parents[2] / "shared" / "data"))


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DATA / "MNIST" / "raw").exists(), reason="MNIST files not found")
def test_real_mnist_depth9_sigmoid_standard_lags_bregman(tmp_path):
    study = ds.DepthStudy(
        depths=(9,), widths=(128,), activations=("sigmoid",), epochs=5, seeds=1,
        data_dir=REAL_DATA, out=tmp_path, figures=False,
    )  # fmt: skip
    rows = {r["variant"]: r for r in ds.run_study(study, echo=False).rows}
    assert rows["bregman"]["test_mean"] > 0.6
    assert rows["standard"]["test_mean"] < 0.2
    assert math.isfinite(rows["standard"]["train_mean"])
