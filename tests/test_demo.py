"""The ``bregnn demo`` command."""

from __future__ import annotations

import json

import pytest

from bregnn.cli import main
from bregnn.experiments import demo


def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "SETTINGS", {**demo.SETTINGS, "epochs": 2, "n_points": 60})
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| atan | bregman | random | 0.1 | 3 |" in printed
    assert "| atan | standard | random | 0.1 | 3 |" in printed
    for name in ("dataset.png", "layers-atan-random.png"):
        assert f"figure: {out / 'figures' / name}" in printed
        assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["layers"] == 3 and results["settings"]["width"] == 2
    assert len(results["runs"]) == 6


def test_demo_settings_are_the_papers_small_model():
    assert demo.SETTINGS["layers"] == 3 and demo.SETTINGS["width"] == 2
    assert demo.SETTINGS["activations"] == ("atan",)
    assert set(demo.SETTINGS["variants"]) == {"bregman", "standard"}
    assert demo.SETTINGS["seeds"] == 3


@pytest.mark.slow
def test_full_demo_bregman_beats_standard(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    rows = {
        r["variant"]: r
        for r in json.loads((tmp_path / "demo" / "results.json").read_text())["rows"]
    }
    assert rows["bregman"]["test_mean"] >= 0.95
    assert rows["bregman"]["test_mean"] > rows["standard"]["test_mean"] + 0.1
