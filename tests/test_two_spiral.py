"""The two-spiral experiment: data, grid runs, tables, figures, resume, errors, regression."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

import bregnn.plotting
import bregnn.runs
from bregnn.cli import main
from bregnn.data import split, target_interval, two_spirals
from bregnn.experiments import two_spiral as ts
from bregnn.train import evaluate, load_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_grid(tmp_path, **overrides) -> ts.SpiralGrid:
    settings = dict(
        activations=("atan",),
        variants=("bregman", "standard"),
        lrs=(0.1,),
        epochs=3,
        seeds=2,
        n_points=60,
        out=tmp_path / "grid",
        figures=False,
        progress=False,
    )
    settings.update(overrides)
    return ts.SpiralGrid(**settings)


def read_metrics(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(fh)]


# -- data ------------------------------------------------------------------------------------
def test_generator_deterministic_and_balanced():
    x1, y1 = two_spirals(400, turns=1.0, seed=3)
    x2, y2 = two_spirals(400, turns=1.0, seed=3)
    x3, _ = two_spirals(400, turns=1.0, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert torch.bincount(y1).tolist() == [200, 200]
    # noiseless points lie on the spiral: radius s and angle 2*pi*turns*s + c*pi
    x, y = two_spirals(400, noise=0.0, turns=1.0, seed=0, dtype=torch.float64)
    s = x.norm(dim=1)
    theta = 2 * math.pi * s + math.pi * y
    expected = torch.stack((s * torch.cos(theta), s * torch.sin(theta)), 1)
    torch.testing.assert_close(x, expected)


def test_split_is_a_partition():
    _, y = two_spirals(100, seed=0)
    parts = split(torch.arange(100), y, seed=0)
    assert [len(p[0]) for p in parts] == [60, 20, 20]
    assert sorted(torch.cat([p[0] for p in parts]).tolist()) == list(range(100))


@pytest.mark.parametrize("act", ["atan", "sigmoid", "tanh"])
def test_spirals_are_scaled_into_the_activation_range(tmp_path, act):
    grid = tiny_grid(tmp_path, activations=(act,), n_points=200)
    data = ts.load_spirals(grid, act)
    lo, hi = target_interval(act)
    train = data.train[0]
    torch.testing.assert_close(train.min(0).values, torch.full((2,), lo))
    torch.testing.assert_close(train.max(0).values, torch.full((2,), hi))
    # validation/test use the training scaler: the same affine map
    raw_x, raw_y = two_spirals(200, noise=grid.noise, turns=grid.turns, seed=grid.data_seed)
    raw_train, raw_val, _ = split(raw_x, raw_y, seed=grid.data_seed)
    scale = (hi - lo) / (raw_train[0].max(0).values - raw_train[0].min(0).values)
    torch.testing.assert_close(data.val[0], lo + (raw_val[0] - raw_train[0].min(0).values) * scale)


def test_identity_init_bregman_model_is_the_identity(tmp_path):
    grid = tiny_grid(tmp_path, layers=12)
    model = ts._build_model(grid, "atan", "bregman", "identity", seed=0)
    x = ts.load_spirals(grid, "atan").train[0]
    diag = model.diagnostics(x)
    torch.testing.assert_close(model.features(x), x)
    assert torch.all(diag.step_norms < 1e-6) and torch.all(diag.param_norms == 0)


# -- end to end --------------------------------------------------------------------------------
def test_cli_runs_a_grid_and_writes_tables_and_figures(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["two-spiral", "--n-points", "60", "--epochs", "3", "--seeds", "2"]
    argv += ["--lr", "0.1", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| atan | bregman | random | 0.1 | 2 |" in printed
    assert "figure:" in printed
    with open(out / "table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["variant"], float(r["lr"])) for r in rows] == [
        ("bregman", 0.1),
        ("bregman", 1.0),
        ("standard", 0.1),
        ("standard", 1.0),
    ]
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 8
    # the table's numbers are the mean and population std of the runs' accuracies
    for row in rows:
        accs = [
            r["test_accuracy"]
            for r in results["runs"]
            if r["variant"] == row["variant"] and r["lr"] == float(row["lr"])
        ]
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
        assert float(row["test_mean"]) == pytest.approx(mean)
        assert float(row["test_std"]) == pytest.approx(std)
    # a run's recorded accuracy is the accuracy of the saved model on the test split
    run = results["runs"][0]
    grid = tiny_grid(tmp_path, out=out)
    model = ts._build_model(grid, "atan", run["variant"], "random", seed=run["seed"])
    model.load_state_dict(
        torch.load(
            ts._run_dir(grid, "atan", run["variant"], "random", run["lr"], run["seed"]) / "model.pt"
        )
    )
    _, acc = evaluate(model, *ts.load_spirals(grid, "atan").test)
    assert acc == pytest.approx(run["test_accuracy"])
    assert "| atan | standard | random | 1 | 2 |" in (out / "table.md").read_text()
    for name in ("dataset.png", "layers-atan-random.png"):
        assert (out / "figures" / name).read_bytes()[:8] == PNG_MAGIC
    assert not (out / "figures" / "diagnostics-atan-random.png").exists()


def test_deep_grid_writes_the_diagnostics_figure(tmp_path):
    grid = tiny_grid(
        tmp_path, layers=ts.DEEP_LAYERS, inits=("identity",), epochs=1, seeds=1, figures=True
    )
    outcome = ts.run_grid(grid, echo=False)
    names = sorted(p.name for p in outcome.figures)
    assert names == ["dataset.png", "diagnostics-atan-identity.png", "layers-atan-identity.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in outcome.figures)


# -- resume ------------------------------------------------------------------------------------
def test_resume_skips_finished_runs(tmp_path):
    grid = tiny_grid(tmp_path)
    first = ts.run_grid(grid, echo=False)
    assert not any(r["skipped"] for r in first.runs)
    stamp = {p: p.stat().st_mtime_ns for p in grid.out.rglob("result.json")}
    again = ts.run_grid(tiny_grid(tmp_path, resume=True), echo=False)
    assert all(r["skipped"] for r in again.runs)
    assert again.rows == first.rows
    assert {p: p.stat().st_mtime_ns for p in grid.out.rglob("result.json")} == stamp


def test_resume_continues_an_interrupted_run_identically(tmp_path, monkeypatch):
    clean = ts.run_grid(tiny_grid(tmp_path, out=tmp_path / "clean", epochs=6), echo=False)

    real_save = bregnn.runs.save_checkpoint
    calls = {"n": 0}

    def save_then_die(obj, path, *, kind):
        real_save(obj, path, kind=kind)
        calls["n"] += 1
        if calls["n"] == 9:  # run 2 (bregman, seed 1) dies after its epoch 3
            raise KeyboardInterrupt

    monkeypatch.setattr(bregnn.runs, "save_checkpoint", save_then_die)
    killed = tiny_grid(tmp_path, out=tmp_path / "killed", epochs=6)
    with pytest.raises(KeyboardInterrupt):
        ts.run_grid(killed, echo=False)
    monkeypatch.setattr(bregnn.runs, "save_checkpoint", real_save)
    resumed = ts.run_grid(
        tiny_grid(tmp_path, out=tmp_path / "killed", epochs=6, resume=True), echo=False
    )
    assert [r["skipped"] for r in resumed.runs] == [True, False, False, False]
    assert resumed.rows == clean.rows
    for a, b in zip(clean.runs, resumed.runs):
        for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "epochs_run"):
            assert a[key] == b[key]
    for path in (tmp_path / "clean").rglob("metrics.csv"):
        twin = tmp_path / "killed" / path.relative_to(tmp_path / "clean")
        assert read_metrics(path) == read_metrics(twin)


def test_resume_refuses_changed_settings(tmp_path):
    ts.run_grid(tiny_grid(tmp_path, seeds=1), echo=False)
    with pytest.raises(ValueError, match="batch_size saved 16, requested 8; noise saved 0.05"):
        ts.run_grid(tiny_grid(tmp_path, seeds=1, batch_size=8, noise=0.1, resume=True), echo=False)


def test_resume_extends_epochs_and_adds_runs(tmp_path):
    ts.run_grid(tiny_grid(tmp_path, seeds=1), echo=False)
    longer = ts.run_grid(tiny_grid(tmp_path, seeds=2, epochs=5, resume=True), echo=False)
    assert [r["skipped"] for r in longer.runs] == [False] * 4
    assert [r["epochs_run"] for r in longer.runs] == [5] * 4
    straight = ts.run_grid(tiny_grid(tmp_path, out=tmp_path / "b", seeds=2, epochs=5), echo=False)
    assert straight.rows == longer.rows
    seconds = [float(r["time"]) for r in read_metrics_with_time(longer, tmp_path)]
    assert longer.runs[0]["seconds"] == pytest.approx(sum(seconds))  # both segments count


def read_metrics_with_time(outcome, tmp_path):
    run = outcome.runs[0]
    grid = tiny_grid(tmp_path)
    path = ts._run_dir(grid, "atan", run["variant"], "random", run["lr"], run["seed"])
    with open(path / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_diverging_run_is_recorded_and_the_grid_goes_on(tmp_path):
    with pytest.raises(FloatingPointError, match="training diverged"):
        ts.run_grid(tiny_grid(tmp_path, out=tmp_path / "stops", lrs=(1e38,), seeds=1), echo=False)
    grid = tiny_grid(tmp_path, lrs=(1e38, 0.1), seeds=1, keep_going=True)
    outcome = ts.run_grid(grid, echo=False)
    diverged = [r for r in outcome.runs if r["lr"] == 1e38]
    assert diverged and all(r["diverged"] for r in diverged)
    assert not any(r["diverged"] for r in outcome.runs if r["lr"] == 0.1)
    # scored as NaN weights: every prediction is class 0
    data = ts.load_spirals(grid, "atan")
    share_of_class_0 = (data.test[1] == 0).float().mean().item()
    assert all(r["test_accuracy"] == pytest.approx(share_of_class_0) for r in diverged)
    run_dir = ts.config_dir(grid, "atan", "bregman", "random", 1e38) / "seed0"
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["diverged"] is True and saved["epochs_run"] == 0  # the first epoch diverged


def test_load_model_returns_the_trained_weights(tmp_path):
    grid = tiny_grid(tmp_path, seeds=1)
    outcome = ts.run_grid(grid, echo=False)
    run = outcome.runs[0]
    model = ts.load_model(grid, "atan", run["variant"], "random", run["lr"], 0)
    data = ts.load_spirals(grid, "atan")
    assert evaluate(model, *data.test)[1] == pytest.approx(run["test_accuracy"])
    assert ts.config_dir(grid, "atan", run["variant"], "random", run["lr"]) == (
        grid.out / f"atan-{run['variant']}-random-lr0.1"
    )


def test_checkpoint_interval_and_a_resume_that_changes_it(tmp_path):
    assert [ts.checkpoint_interval(ts.SpiralGrid(epochs=e)) for e in (50, 300, 10_000)] == [
        1,
        3,
        100,
    ]
    assert ts.checkpoint_interval(ts.SpiralGrid(epochs=10_000, checkpoint_every=7)) == 7
    grid = tiny_grid(tmp_path, seeds=1, epochs=4, checkpoint_every=3)
    ts.run_grid(grid, echo=False)
    ckpt = load_checkpoint(next((tmp_path / "grid").glob("*/seed0/checkpoint.pt")))
    assert ckpt["epoch"] == 4 and ckpt["config"]["checkpoint_every"] == 3
    # how often a run checkpoints is not what it computes: a resume may change it
    ts.run_grid(tiny_grid(tmp_path, seeds=1, epochs=6, checkpoint_every=1, resume=True), echo=False)


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"activations": ("swish",)}, "unknown activation 'swish'"),
        ({"variants": ("bregmann",)}, r"unknown variant 'bregmann'; valid variants: \['standard'"),
        ({"inits": ("zeros",)}, r"unknown init 'zeros'; valid inits: \['random', 'identity'\]"),
        ({"lrs": (0.1, 0.0)}, "lr must be positive and finite; got 0.0"),
        ({"lrs": (-1.0,)}, "lr must be positive"),
        ({"epochs": 0}, "epochs must be a positive integer; got 0"),
        ({"seeds": -2}, "seeds must be a positive integer; got -2"),
        ({"layers": 0}, "layers must be a positive integer"),
        ({"activations": ("relu",)}, "bregman variant needs an invertible activation; 'relu'"),
        ({"n_points": 5}, "n_points must be at least 10"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"patience": 0}, "patience must be a positive integer or None"),
        ({"turns": 0.0}, "need turns > 0"),
        ({"lrs": ()}, "give at least one lr"),
        ({"checkpoint_every": 0}, "checkpoint_every must be a positive integer or None"),
    ],
)
def test_bad_settings_raise_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_grid(tmp_path, **overrides)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--activation", "swish"], "unknown activation 'swish'"),
        (["--variant", "plain"], "unknown variant 'plain'"),
        (["--lr", "-0.1"], "lr must be positive"),
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--checkpoint-every", "0"], "--checkpoint-every: must be a positive integer; got 0"),
    ],
)
def test_cli_bad_arguments_exit_with_message(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["two-spiral", "--out", str(tmp_path / "bad"), "--no-progress", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_missing_matplotlib_skips_the_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bregnn.plotting, "figures_available", lambda: False)
    monkeypatch.setattr(bregnn.plotting, "_noted", set())  # the note prints once per process
    outcome = ts.run_grid(tiny_grid(tmp_path, figures=True, seeds=1), echo=False)
    assert outcome.figures == [] and not (tmp_path / "grid" / "figures").exists()
    assert "figures skipped: matplotlib is not installed" in capsys.readouterr().out


# -- regression --------------------------------------------------------------------------------
# Recorded from a run of the grid below (torch 2.13.0, CPU, float32).
REGRESSION = {
    "bregman": {"train_loss": 0.491059398651123, "test_accuracy": 0.75},
    "standard": {"train_loss": 0.5853686014811198, "test_accuracy": 0.8},
}


def test_regression_tiny_fixed_seed_run(tmp_path):
    grid = tiny_grid(tmp_path, n_points=100, epochs=5, seeds=1)
    outcome = ts.run_grid(grid, echo=False)
    got = {r["variant"]: r for r in outcome.runs}
    for variant, expected in REGRESSION.items():
        assert got[variant]["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-4)
        assert got[variant]["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=1e-9)
