"""A reproduction records a run that diverges and goes on with the others."""

from __future__ import annotations

import functools
import math

import torch

from bregnn.experiments.lifted_tables import Diverged, Run, last_row, run_all
from bregnn.experiments.reproduce import Options
from bregnn.lifted import LiftedNetwork


def test_a_diverged_run_is_recorded_and_the_others_go_on(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(64, 6, generator=g), torch.randn(32, 6, generator=g)
    y, yt = torch.randint(0, 3, (64,), generator=g), torch.randint(0, 3, (32,), generator=g)
    net = functools.partial(LiftedNetwork, [6, 8, 3], "relu")
    runs = [
        Run("wild", "sgd-bp", {"batch_size": 16, "lr": 3.0}, 30, net),
        Run("tame", "lifted-quadratic", {"batch_size": 16, "inner_iters": 2}, 2, net),
    ]
    options = Options(tmp_path, tmp_path, None, None, False, False, False, False)
    results = run_all(options, runs, (x, y, xt, yt), "test")
    wild, tame = results["wild"], results["tame"]
    assert isinstance(wild, Diverged) and not isinstance(tame, Diverged)
    assert "diverged" in wild.error and "lower lr (now 3.0)" in wild.error
    assert "wild:" in capsys.readouterr().err
    last, note = last_row(wild)
    # the history is what metrics.csv holds: the finite epochs before the divergence
    assert 0 < len(wild.history) == int(last["epoch"]) < 30
    assert note == f"in epoch {len(wild.history) + 1}"
    assert all(math.isfinite(r["train_accuracy"]) for r in wild.history)
    last, note = last_row(tame)
    assert note is None and last["epoch"] == 2
    # a resumed reproduction meets the same divergence from the last checkpoint
    options = Options(tmp_path, tmp_path, None, None, False, True, False, False)
    again = run_all(options, runs, (x, y, xt, yt), "test")
    assert isinstance(again["wild"], Diverged) and again["wild"].history == wild.history
