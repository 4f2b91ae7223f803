"""``kill -9`` during training or during a checkpoint write, then ``--resume``: the metrics
are those of an uninterrupted run. And a plain install without matplotlib works.

The killed runs are ``python -m bregnn two-spiral ...`` subprocesses that send themselves
SIGKILL at a chosen point (an optimizer step in the middle of an epoch, or halfway through
writing a checkpoint), so the test is deterministic and needs no sleeping or polling.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bregnn.cli import main

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

# 36 training points in batches of 16: 3 optimizer steps per epoch; two runs of 8 epochs,
# each writing checkpoint.pt after every epoch and model.pt at its end.
SPIRAL = [
    "two-spiral", "--n-points", "60", "--epochs", "8", "--seeds", "1", "--lr", "0.3",
    "--variant", "bregman", "standard", "--threads", "1", "--no-figures", "--no-progress",
]  # fmt: skip
RUNS = ("atan-bregman-random-lr0.3/seed0", "atan-standard-random-lr0.3/seed0")

# Runs `python -m bregnn ARGS` after arranging to SIGKILL itself: at optimizer step
# KILL_AT_STEP, or halfway through the KILL_AT_SAVE-th torch.save (a checkpoint write).
DRIVER = """
import os, runpy, signal, sys
import torch

def die():
    os.kill(os.getpid(), signal.SIGKILL)

step_at = int(os.environ.get("KILL_AT_STEP", 0))
save_at = int(os.environ.get("KILL_AT_SAVE", 0))
counts = {"step": 0, "save": 0}
real_step, real_save = torch.optim.SGD.step, torch.save

def step(self, *args, **kwargs):
    counts["step"] += 1
    if counts["step"] == step_at:
        die()
    return real_step(self, *args, **kwargs)

def save(obj, f, *args, **kwargs):
    counts["save"] += 1
    if counts["save"] == save_at:
        f.write(b"half a checkpoint")
        f.flush()
        die()
    return real_save(obj, f, *args, **kwargs)

torch.optim.SGD.step, torch.save = step, save
sys.argv = ["bregnn", *sys.argv[1:]]
runpy.run_module("bregnn", run_name="__main__", alter_sys=True)
"""


def run_killed(out: Path, **kill_at: int) -> None:
    env = {**os.environ, **{f"KILL_AT_{k.upper()}": str(v) for k, v in kill_at.items()}}
    argv = [sys.executable, "-c", DRIVER, *SPIRAL, "--out", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def metrics(out: Path) -> dict[str, list[dict[str, str]]]:
    """Every run's metrics.csv without the wall-clock ``time`` column."""
    return {
        run: [{k: v for k, v in r.items() if k != "time"} for r in metrics_rows(out / run)]
        for run in RUNS
    }


def results(out: Path) -> list[dict]:
    runs = json.loads((out / "results.json").read_text())["runs"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in runs]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main([*SPIRAL, "--out", str(out)]) == 0
    return out


def test_kill_during_training_then_resume(uninterrupted, tmp_path):
    out = tmp_path / "run"
    run_killed(out, step=8 * 3 + 5 * 3 + 2)  # the second run, in the middle of epoch 6
    assert (out / RUNS[0] / "result.json").exists() and not (out / RUNS[1] / "result.json").exists()
    assert len(metrics_rows(out / RUNS[1])) == 5
    assert main([*SPIRAL, "--out", str(out), "--resume"]) == 0
    assert metrics(out) == metrics(uninterrupted)
    assert results(out) == results(uninterrupted)
    assert (out / "table.md").read_text() == (uninterrupted / "table.md").read_text()


def test_kill_during_a_checkpoint_write_then_resume(uninterrupted, tmp_path):
    out = tmp_path / "run"
    run_killed(out, save=8 + 1 + 4)  # the second run's checkpoint after its epoch 4
    leftovers = list((out / RUNS[1]).glob(".checkpoint.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"half a checkpoint"
    assert len(metrics_rows(out / RUNS[1])) == 4  # the row is logged before the checkpoint
    assert main([*SPIRAL, "--out", str(out), "--resume"]) == 0
    assert not list(out.rglob("*.tmp"))
    assert metrics(out) == metrics(uninterrupted)
    assert results(out) == results(uninterrupted)


def test_plain_install_without_matplotlib(tmp_path):
    """``pip install bregnn`` without the [plot] extra: every command imports, runs finish,
    and the figures are skipped with one note."""
    code = (
        "import runpy, sys; sys.modules['matplotlib'] = None; "
        "sys.argv = ['bregnn', *sys.argv[1:]]; "
        "runpy.run_module('bregnn', run_name='__main__', alter_sys=True)"
    )
    argv = [sys.executable, "-c", code, *SPIRAL[:-2], "--epochs", "2", "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    note = "figures skipped: matplotlib is not installed (pip install 'bregnn[plot]')"
    assert done.stdout.count(note) == 1
    assert (tmp_path / "table.md").exists() and not (tmp_path / "figures").exists()
