"""bregnn reproduce: every named reproduction runs in its --quick form on small data."""

from __future__ import annotations

import json

import pytest
import torch

from bregnn.cli import main
from bregnn.data.centering import center
from bregnn.experiments.reproduce import REPRODUCTIONS, _load_entries

_load_entries()


def exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, idx_data):
    """MNIST and Fashion-MNIST stand-ins (400 / 200 random images) in the IDX layout."""
    return idx_data(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("name", REPRODUCTIONS.names())
def test_quick_form_runs_and_writes_its_summary(name, tmp_path, data_dir, capsys):
    out = tmp_path / name
    argv = ["reproduce", name, "--quick", "--out", str(out), "--data-dir", str(data_dir)]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reproduction"] == name and summary["runs"]
    assert "| run |" in printed
    runs = [r for r in summary["runs"] if r["run"] != "claim"]
    assert runs and all((out / r["run"] / "metrics.csv").exists() for r in runs)
    assert (out / "curves.png").stat().st_size > 1000
    if name.startswith("lifted-classify-fashion"):
        assert all(r["paper test %"] is not None for r in runs)
    # a rerun is refused; --resume continues (nothing left to do) with the same table
    assert exit_code([*argv, "--no-progress"]) == 2
    assert exit_code([*argv, "--no-progress", "--resume"]) == 0


def test_list_and_errors(capsys):
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in REPRODUCTIONS.names():
        assert name in listed
    assert exit_code(["reproduce", "no-such-table"]) == 2
    assert "valid reproductions" in capsys.readouterr().err
    assert exit_code(["reproduce", "sparse-ae-mnist-1k", "--methods", "adam"]) == 2
    assert (
        "valid methods: ['lbn-s', 'lbn-d', 'lbn-d-keep-x', 'gd-bp', 'sgd-bp']"
        in capsys.readouterr().err
    )


def test_seeds_shortens_the_seeded_entries_and_is_refused_elsewhere(tmp_path, capsys):
    out = tmp_path / "spirals"
    argv = ["reproduce", "two-spiral-100x2", "--quick", "--out", str(out), "--no-progress"]
    assert main([*argv, "--seeds", "2"]) == 0
    capsys.readouterr()
    rows = json.loads((out / "summary.json").read_text())["runs"]
    runs = [r for r in rows if r["run"] != "claim"]
    assert runs and all(r["seeds"] == 2 for r in runs)  # the quick form's 1, overridden
    assert all((out / r["run"] / "seed1" / "metrics.csv").exists() for r in runs)
    # a resume with fewer seeds reports over seed 0 only; with more, adds runs beside them
    trained = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/model.pt")}
    assert main([*argv, "--resume"]) == 0  # the quick form's 1 seed
    capsys.readouterr()
    rows = json.loads((out / "summary.json").read_text())["runs"]
    assert all(r["seeds"] == 1 for r in rows if r["run"] != "claim")
    assert main([*argv, "--resume", "--seeds", "3"]) == 0
    capsys.readouterr()
    rows = json.loads((out / "summary.json").read_text())["runs"]
    assert all(r["seeds"] == 3 for r in rows if r["run"] != "claim")
    assert all((out / r["run"] / "seed2" / "model.pt").exists() for r in runs)
    assert {p: p.stat().st_mtime_ns for p in trained} == trained  # none retrained
    full = [a for a in argv if a != "--quick"]
    assert exit_code([*full, "--resume"]) == 2  # what every run computes may not change
    assert "quick saved True, requested False" in capsys.readouterr().err
    assert exit_code(["reproduce", "sparse-ae-mnist-1k", "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seeds applies to ['two-spiral-3x2'" in err
    assert exit_code(["reproduce", "two-spiral-3x2", "--seeds", "0"]) == 2
    assert "--seeds must be positive; got 0" in capsys.readouterr().err


def test_centering_readings():
    g = torch.Generator().manual_seed(0)
    train, test = torch.rand(50, 6, generator=g), torch.rand(20, 6, generator=g)
    (tr, te), offsets = center(train, [test], "pixel")
    torch.testing.assert_close(tr.mean(0), torch.zeros(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(te, test - train.double().mean(0, keepdim=True).float())
    (tr, te), offsets = center(train, [test], "image")
    torch.testing.assert_close(te.mean(1), torch.zeros(20), atol=1e-6, rtol=0)
    torch.testing.assert_close(tr + offsets[0], train)
    (tr, _), _ = center(train, [test], "none")
    assert torch.equal(tr, train)
    with pytest.raises(
        ValueError, match=r"unknown centering 'mean'; valid: \['none', 'pixel', 'image'\]"
    ):
        center(train, [], "mean")
