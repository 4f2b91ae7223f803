"""The training loop: it learns, resumes bit-for-bit, stops early, and checks its inputs."""

from __future__ import annotations

import pytest
import torch

from bregnn.data import RangeScaler, split, two_spirals
from bregnn.models import MLP
from bregnn.runs import RunError
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


def test_sparse_checkpoints_resume_exactly_after_a_crash(tmp_path, monkeypatch) -> None:
    """With ``checkpoint_every=3`` the checkpoint is written after epochs 3, 6 and the last
    (7); a crash in epoch 6 resumes from epoch 3, repeats 4-5 bit for bit, and leaves
    ``metrics.csv`` with each epoch once."""
    import bregnn.runs

    train, val, _ = _problem()
    cfg = TrainConfig(lr=0.3, epochs=7, batch_size=16, momentum=0.9, milestones=(4,),
                      progress=False, checkpoint_every=3)  # fmt: skip
    saved_at = []
    save = bregnn.runs.save_checkpoint
    monkeypatch.setattr(bregnn.runs, "save_checkpoint",
                        lambda obj, path, kind: (saved_at.append(obj["epoch"]), save(obj, path, kind=kind)))  # fmt: skip
    straight = _model()
    fit(straight, train, cfg, val=val, run_dir=tmp_path / "a")
    assert saved_at == [3, 6, 7]
    calls = {"n": 0}

    def crash_in_epoch_6(x, generator):
        calls["n"] += 1
        if calls["n"] > 5 * len(range(0, len(train[0]), 16)):
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        fit(_model(), train, cfg, val=val, run_dir=tmp_path / "b", train_transform=crash_in_epoch_6)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 3
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 1 + 5
    resumed = _model(seed=123)
    hist = fit(resumed, train, TrainConfig(**{**cfg.__dict__, "checkpoint_every": 1}), val=val,
               run_dir=tmp_path / "b", resume=True)  # fmt: skip
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert [r["epoch"] for r in hist.rows] == list(range(1, 8))
    a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    b = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert len(b) == 8
    strip_time = [line.rsplit(",", 1)[0] for line in a], [line.rsplit(",", 1)[0] for line in b]
    assert strip_time[0] == strip_time[1]  # every epoch's losses and accuracies, once


def test_early_stopping_restores_the_best_weights(tmp_path) -> None:
    train, val, _ = _problem()
    cfg = TrainConfig(lr=0.05, epochs=50, batch_size=64, patience=2, progress=False)
    model = _model()
    hist = fit(model, train, cfg, val=val)
    assert hist.stopped_early and len(hist.rows) < 50
    from bregnn.train import evaluate

    assert evaluate(model, *val)[1] == pytest.approx(hist.best_val_accuracy)


def test_checkpoint_error_paths(tmp_path) -> None:
    with pytest.raises(RunError, match="no train checkpoint at .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="bad.pt is not a readable bregnn train checkpoint"):
        load_checkpoint(bad)
    train, val, _ = _problem()
    cfg = TrainConfig(lr=0.1, epochs=1, batch_size=64, progress=False)
    fit(_model(), train, cfg, run_dir=tmp_path / "run")
    other = MLP(2, [5], 2, activation="tanh")
    with pytest.raises(RunError, match="different model"):
        fit(other, train, TrainConfig(**{**cfg.__dict__, "epochs": 2}), run_dir=tmp_path / "run",
            resume=True)  # fmt: skip


def test_a_run_directory_is_never_silently_reused(tmp_path) -> None:
    train, _, _ = _problem()
    cfg = TrainConfig(lr=0.1, epochs=1, batch_size=64, progress=False)
    fit(_model(), train, cfg, run_dir=tmp_path)
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        fit(_model(), train, cfg, run_dir=tmp_path)
    changed = TrainConfig(**{**cfg.__dict__, "lr": 0.5, "epochs": 2})
    with pytest.raises(RunError, match="lr saved 0.1, requested 0.5") as info:
        fit(_model(), train, changed, run_dir=tmp_path, resume=True)
    assert "epochs" not in str(info.value)  # epochs may change: it extends the run


def test_non_finite_inputs_are_a_data_problem() -> None:
    x = torch.zeros(6, 2)
    x[1, 0], x[4, 1] = float("nan"), float("inf")
    y = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="training inputs contain 2 non-finite values"):
        fit(_model(), (x, y), TrainConfig(progress=False))


def test_divergence_names_the_setting_to_lower() -> None:
    train, _, _ = _problem()
    model = MLP(2, [8, 8], 2, activation="tanh", variant="standard")
    with torch.no_grad():
        model.head.weight.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"diverged at epoch 1.*SGD, lr 0.1.*--lr"):
        fit(model, train, TrainConfig(lr=0.1, epochs=1, progress=False))


def test_progress_lines_when_not_on_a_terminal(capsys) -> None:
    train, _, test = _problem()
    cfg = TrainConfig(lr=0.1, epochs=2, batch_size=64, desc="spiral")
    fit(_model(), train, cfg, test=test)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("spiral 1/2 loss ") and " test_acc " in lines[0]
    assert lines[1].startswith("spiral 2/2 ") and lines[1].endswith("s")
    fit(_model(), train, TrainConfig(**{**cfg.__dict__, "progress": False}))
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0.0, "lr must be positive"),
        ("epochs", 0, "epochs"),
        ("momentum", 1.0, "momentum"),
        ("patience", 0, "patience"),
        ("weight_decay", -1.0, "weight_decay"),
        ("checkpoint_every", 0, "checkpoint_every must be positive"),
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


class _FixedLogits(torch.nn.Module):
    """Returns the row of ``table`` indexed by the (integer-valued) input."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx.long().flatten()]


def test_topk_accuracy_counts_labels_among_the_k_largest_outputs() -> None:
    from bregnn.train import evaluate, topk_accuracy

    logits = torch.tensor(
        [[3.0, 2.0, 1.0, 0.0], [1.0, 3.0, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0], [2.0, 1.0, 3.0, 0.0]]
    )
    model = _FixedLogits(logits)
    x, y = torch.arange(4), torch.tensor([0, 2, 1, 3])
    # ranks of the labels: 1st, 2nd, 3rd, 4th
    acc = topk_accuracy(model, x, y, ks=(1, 2, 3, 4, 9), batch_size=3)
    assert acc == {1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0, 9: 1.0}
    assert acc[1] == evaluate(model, x, y)[1]
    with pytest.raises(ValueError, match="ks must be positive"):
        topk_accuracy(model, x, y, ks=(0,))
