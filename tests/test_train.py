"""The training loop: it learns, resumes bit-for-bit, stops early, and checks its inputs."""

from __future__ import annotations

import pytest
import torch

from bregnn.data import RangeScaler, split, two_spirals
from bregnn.models import MLP
from bregnn.train import TrainConfig, fit, load_checkpoint


def _problem():
    x, y = two_spirals(300, seed=1)
    (xt, yt), (xv, yv), (xs, ys) = split(x, y, seed=1)
    scaler = RangeScaler("tanh").fit(xt)
    return (scaler.transform(xt), yt), (scaler.transform(xv), yv), (scaler.transform(xs), ys)


def _model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(2, [8, 8], 2, activation="tanh", variant="bregman")


def test_fit_reduces_the_loss() -> None:
    train, val, test = _problem()
    cfg = TrainConfig(lr=0.1, epochs=40, batch_size=16, momentum=0.9, progress=False)
    hist = fit(_model(), train, cfg, val=val, test=test)
    assert hist.rows[-1]["train_loss"] < 0.8 * hist.rows[0]["train_loss"]
    assert hist.rows[-1]["train_accuracy"] > 0.65
    assert {"val_accuracy", "test_accuracy", "lr", "time"} <= set(hist.rows[0])


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path) -> None:
    train, val, _ = _problem()
    cfg = TrainConfig(
        lr=0.3, epochs=6, batch_size=16, momentum=0.9, milestones=(3,), progress=False
    )
    straight = _model()
    fit(straight, train, cfg, val=val, run_dir=tmp_path / "a")
    interrupted = _model()
    fit(
        interrupted,
        train,
        TrainConfig(**{**cfg.__dict__, "epochs": 3}),
        val=val,
        run_dir=tmp_path / "b",
    )
    resumed = _model(seed=123)  # different init: everything must come from the checkpoint
    hist = fit(resumed, train, cfg, val=val, run_dir=tmp_path / "b", resume=True)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert [r["epoch"] for r in hist.rows] == list(range(1, 7))
    lines = (tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 7  # header + 6 epochs, none duplicated


def test_early_stopping_restores_the_best_weights(tmp_path) -> None:
    train, val, _ = _problem()
    cfg = TrainConfig(lr=0.05, epochs=50, batch_size=64, patience=2, progress=False)
    model = _model()
    hist = fit(model, train, cfg, val=val)
    assert hist.stopped_early and len(hist.rows) < 50
    from bregnn.train import evaluate

    assert evaluate(model, *val)[1] == pytest.approx(hist.best_val_accuracy)


def test_checkpoint_error_paths(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(bad)
    train, val, _ = _problem()
    cfg = TrainConfig(lr=0.1, epochs=1, batch_size=64, progress=False)
    fit(_model(), train, cfg, run_dir=tmp_path / "run")
    other = MLP(2, [5], 2, activation="tanh")
    with pytest.raises(ValueError, match="different model"):
        fit(
            other,
            train,
            TrainConfig(lr=0.1, epochs=2, progress=False),
            run_dir=tmp_path / "run",
            resume=True,
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0.0, "lr must be positive"),
        ("epochs", 0, "epochs"),
        ("momentum", 1.0, "momentum"),
        ("patience", 0, "patience"),
        ("weight_decay", -1.0, "weight_decay"),
    ],
)
def test_config_validation(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="labels"):
        fit(
            _model(),
            (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long)),
            TrainConfig(progress=False),
        )
