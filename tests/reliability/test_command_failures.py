"""The commands fail in one line, refuse to clobber runs, and survive without matplotlib.

Every case drives ``bregnn.cli.main`` in-process on tiny settings. The read-only case uses
a directory under ``/sys``, where even root may not create anything (file permissions
would not stop root, which runs these tests).
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

import bregnn.plotting
from bregnn.cli import main
from bregnn.experiments import demo

SPIRAL = ["two-spiral", "--n-points", "60", "--epochs", "3", "--seeds", "1", "--no-progress"]
IMAGES = [
    "image-classify", "--no-progress", "--dataset", "mnist", "--synthetic", "32",
    "--model", "mlp", "--hidden", "8", "--activation", "sigmoid", "--recipe", "mnist-mlp",
    "--epochs", "1", "--batch-size", "16", "--robust-subset", "4", "--pgd-steps", "1",
]  # fmt: skip


def fails(argv: list[str], capsys, status: int = 2) -> str:
    """Run ``argv``; check the exit status and that stderr is exactly one line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bregnn {argv[0]}: error: "), err
    return err


# -- reruns and resumes ----------------------------------------------------------------------------
def test_spiral_rerun_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SPIRAL, "--out", str(out), "--no-figures"]) == 0
    before = (out / "results.json").read_text()
    err = fails([*SPIRAL, "--out", str(out), "--no-figures"], capsys)
    assert f"run directory {out} already holds a run" in err
    assert "--resume" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == before  # untouched
    assert main([*SPIRAL, "--out", str(out), "--no-figures", "--overwrite", "--lr", "0.5"]) == 0
    assert json.loads((out / "config.json").read_text())["lrs"] == [0.5]
    assert not (out / "atan-bregman-random-lr0.1").exists()  # the old runs are gone


def test_spiral_resume_with_a_changed_setting_names_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SPIRAL, "--out", str(out), "--no-figures"]) == 0
    err = fails([*SPIRAL, "--out", str(out), "--resume", "--width", "3", "--noise", "0.1"], capsys)
    assert "width saved 2, requested 3; noise saved 0.05, requested 0.1" in err


def test_image_classify_resume_with_another_dataset_or_lr_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*IMAGES, "--out", str(out), "--no-figures"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 0.1 and "_run" not in config  # the recipe's value, resolved
    argv = [*IMAGES, "--out", str(out), "--resume", "--dataset", "fashion-mnist", "--lr", "0.5"]
    err = fails(argv, capsys)
    assert "dataset saved 'mnist', requested 'fashion-mnist'" in err
    assert "lr saved 0.1, requested 0.5" in err
    err = fails([*IMAGES, "--out", str(out)], capsys)
    assert "already holds a run" in err


def test_image_classify_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*IMAGES, "--out", str(out), "--epochs", "1"]) == 0
    (out / ".checkpoint.pt.dead.tmp").write_bytes(b"partial")  # as a killed write leaves it
    assert main([*IMAGES, "--out", str(out), "--epochs", "2", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "| model | variant | epochs | test acc (%) | FGSM acc (%) | PGD acc (%) |" in printed
    assert "| mlp | bregman | 2 |" in printed
    for name in ("learning-curves.png", "robustness.png"):
        assert f"figure: {out / name}" in printed
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    times = [float(r.split(",")[-1]) for r in rows]
    assert summary["train_seconds"] == pytest.approx(sum(times))  # both segments
    assert not list(out.glob(".*.tmp"))
    for path in out.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_demo_rerun_needs_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        demo, "SETTINGS", {**demo.SETTINGS, "epochs": 1, "n_points": 40, "seeds": 1}
    )
    out = str(tmp_path / "demo")
    assert main(["demo", "--out", out, "--no-figures", "--no-progress"]) == 0
    assert "already holds a run" in fails(["demo", "--out", out, "--no-progress"], capsys)
    assert main(["demo", "--out", out, "--no-figures", "--no-progress", "--overwrite"]) == 0


# -- one-line failures -----------------------------------------------------------------------------
def test_divergence_is_one_line_naming_the_setting(tmp_path, capsys):
    err = fails([*SPIRAL, "--lr", "1e38", "--out", str(tmp_path / "run")], capsys, status=3)
    assert "training diverged at epoch 1" in err and "SGD, lr 1e+38" in err and "--lr" in err


def test_truncated_checkpoint_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*IMAGES, "--out", str(out), "--no-figures"]) == 0
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    err = fails([*IMAGES, "--out", str(out), "--resume"], capsys)
    assert f"{ckpt} is not a readable bregnn train checkpoint" in err


def test_truncated_checkpoint_of_an_unfinished_spiral_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SPIRAL, "--out", str(out), "--no-figures"]) == 0
    run_dir = out / "atan-bregman-random-lr0.1" / "seed0"
    (run_dir / "result.json").unlink()  # as if killed before the run finished
    (run_dir / "checkpoint.pt").write_bytes(b"\x80\x02trunc")
    err = fails([*SPIRAL, "--out", str(out), "--resume"], capsys)
    assert "checkpoint.pt is not a readable bregnn train checkpoint" in err


def test_out_under_a_regular_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = fails([*SPIRAL, "--out", str(blocker / "run")], capsys)
    assert f"{blocker / 'run'}: Not a directory; choose another --out" in err
    err = fails([*IMAGES, "--out", str(blocker)], capsys)
    assert "is a file, not a directory; choose another --out" in err


def test_out_in_a_directory_nobody_may_write(capsys):
    target = Path("/sys/bregnn-test-run")
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this system")
    try:
        target.mkdir()
    except OSError:
        pass
    else:
        target.rmdir()
        pytest.skip("/sys is writable here")
    err = fails([*SPIRAL, "--out", str(target)], capsys)
    assert f"cannot write the run directory {target}: " in err and "choose another --out" in err


@pytest.mark.parametrize("value", ["-2", "0"])
def test_bad_thread_count(value, tmp_path, capsys):
    err = fails([*IMAGES, "--threads", value, "--out", str(tmp_path / "x")], capsys)
    assert f"must be a positive integer; got {value}" in err


# -- without matplotlib ----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["demo", "image-classify"])
def test_runs_complete_without_matplotlib(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    monkeypatch.setattr(bregnn.plotting, "_noted", set())
    monkeypatch.setattr(
        demo, "SETTINGS", {**demo.SETTINGS, "epochs": 1, "n_points": 40, "seeds": 1}
    )
    argv = ["demo", "--no-progress"] if command == "demo" else IMAGES
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    note = "figures skipped: matplotlib is not installed (pip install 'bregnn[plot]')"
    assert printed.count(note) == 1 and "figure:" not in printed
    assert not list((tmp_path / "run").rglob("*.png"))
