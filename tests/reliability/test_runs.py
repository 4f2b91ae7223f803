"""bregnn.runs: run directories, JSON, atomic files, checkpoints."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bregnn.runs import (
    LOCK_FILE,
    MUTABLE_KEYS,
    CSVLogger,
    RunError,
    accumulated_seconds,
    atomic_save,
    atomic_write_text,
    config_differences,
    holds_run,
    jsonable,
    load_checkpoint,
    prepare_run,
    release_runs,
    save_checkpoint,
    write_json,
)

CONFIG = {"lr": 0.1, "dataset": "mnist", "epochs": 3, "out": "a"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- prepare_run -----------------------------------------------------------------------------------
def test_a_fresh_run_writes_its_config(tmp_path):
    out = tmp_path / "deep" / "run"
    assert prepare_run(out, CONFIG, resume=False) is False
    assert json.loads((out / "config.json").read_text()) == CONFIG
    assert mode(out / "config.json") == 0o644
    assert prepare_run(tmp_path / "other", CONFIG, resume=True) is False  # nothing to resume


@pytest.mark.parametrize(
    "marker", ["config.json", "metrics.csv", "checkpoint.pt", "checkpoint3.pt"]
)
def test_a_run_is_never_silently_replaced(tmp_path, marker):
    (tmp_path / marker).write_text("x")
    assert holds_run(tmp_path)
    with pytest.raises(RunError) as info:
        prepare_run(tmp_path, CONFIG, resume=False)
    assert str(info.value) == (
        f"run directory {tmp_path} already holds a run; "
        "pass --resume to continue it or --overwrite to replace it"
    )
    assert (tmp_path / marker).read_text() == "x"


def test_overwrite_deletes_the_previous_run(tmp_path):
    prepare_run(tmp_path, CONFIG, resume=False)
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    (tmp_path / "sub" / "seed0").mkdir(parents=True)
    (tmp_path / "sub" / "seed0" / "checkpoint.pt").write_text("x")
    assert prepare_run(tmp_path, {**CONFIG, "lr": 0.5}, resume=False, overwrite=True) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, "config.json"]
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 0.5


def test_overwrite_never_deletes_a_directory_without_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    prepare_run(tmp_path, CONFIG, resume=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "data").is_dir()


def test_resume_lists_every_differing_setting(tmp_path):
    prepare_run(tmp_path, {**CONFIG, "seed": 1}, resume=False)
    requested = {**CONFIG, "lr": 0.5, "dataset": "fashion-mnist", "width": 8}
    with pytest.raises(RunError) as info:
        prepare_run(tmp_path, requested, resume=True)
    assert str(info.value) == (
        f"cannot resume {tmp_path}: settings differ from the saved run: "
        "lr saved 0.1, requested 0.5; dataset saved 'mnist', requested 'fashion-mnist'; "
        "width saved (absent), requested 8; seed saved 1, requested (absent) "
        "(start a new run with another --out, or --overwrite)"
    )


def test_resume_may_change_the_mutable_settings(tmp_path):
    prepare_run(tmp_path, CONFIG, resume=False)
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    changed = {**CONFIG, "epochs": 9, "out": "b", "threads": 1}
    assert {"epochs", "out", "threads"} <= MUTABLE_KEYS
    assert prepare_run(tmp_path, changed, resume=True) is True
    assert json.loads((tmp_path / "config.json").read_text()) == changed
    assert (tmp_path / "metrics.csv").exists()
    # a command may extend the mutable keys
    assert prepare_run(tmp_path, {**changed, "lr": 1.0}, resume=True, mutable={"lr"}) is True


def test_resume_without_a_readable_config_is_refused(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch\n")
    with pytest.raises(RunError, match="holds run files but no config.json"):
        prepare_run(tmp_path, CONFIG, resume=True)
    (tmp_path / "config.json").write_text("{torn")
    with pytest.raises(RunError, match="config.json is unreadable"):
        prepare_run(tmp_path, CONFIG, resume=True)


def test_other_ranks_only_check(tmp_path):
    assert prepare_run(tmp_path / "run", CONFIG, resume=False, main=False) is False
    assert not (tmp_path / "run").exists()
    prepare_run(tmp_path / "run", CONFIG, resume=False)
    with pytest.raises(RunError, match="already holds a run"):
        prepare_run(tmp_path / "run", CONFIG, resume=False, main=False)
    assert prepare_run(tmp_path / "run", CONFIG, resume=True, main=False) is True


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(RunError, match="exclude each other"):
        prepare_run(tmp_path, CONFIG, resume=True, overwrite=True)


def test_unusable_out_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError) as info:
        prepare_run(blocker / "run", CONFIG, resume=False)
    assert str(info.value) == (
        f"cannot write the run directory {blocker / 'run'}: Not a directory; choose another --out"
    )
    with pytest.raises(RunError, match=r"--out .*file is a file, not a directory"):
        prepare_run(blocker, CONFIG, resume=False)


def test_leftover_temporary_files_are_removed(tmp_path):
    prepare_run(tmp_path, CONFIG, resume=False)
    (tmp_path / "seed0").mkdir()
    leftovers = [tmp_path / ".checkpoint.pt.x1y2.tmp", tmp_path / "seed0" / ".model.pt.abc.tmp"]
    for path in leftovers:
        path.write_bytes(b"partial")
    (tmp_path / "keep.tmp").write_text("not ours")
    prepare_run(tmp_path, CONFIG, resume=True)
    assert not any(p.exists() for p in leftovers)
    assert (tmp_path / "keep.tmp").exists()


# -- one process per run directory ------------------------------------------------------------
def _prepare_elsewhere(out: Path, *, hold: bool = False) -> subprocess.Popen:
    """Another process that prepares ``out`` for a resume (and with ``hold`` keeps it,
    printing ``ready`` once it holds it)."""
    code = (
        "import sys, time\n"
        "from bregnn.runs import prepare_run, RunError\n"
        "try:\n"
        f"    prepare_run({str(out)!r}, {CONFIG!r}, resume=True)\n"
        "except RunError as err:\n"
        "    sys.exit(str(err))\n"
        f"if {hold}:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")
def test_a_second_process_cannot_use_a_run_directory_in_use(tmp_path):
    prepare_run(tmp_path, CONFIG, resume=False)
    prepare_run(tmp_path, CONFIG, resume=True)  # the same process may prepare it again
    config_before = (tmp_path / "config.json").read_text()
    other = _prepare_elsewhere(tmp_path)
    _, err = other.communicate(timeout=60)
    assert other.returncode == 1
    assert err.strip() == (
        f"run directory {tmp_path} is in use by process {os.getpid()}: wait for it to end or "
        "stop it, or choose another --out"
    )
    assert (tmp_path / "config.json").read_text() == config_before
    release_runs()
    other = _prepare_elsewhere(tmp_path)
    assert other.communicate(timeout=60)[1] == "" and other.returncode == 0


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    prepare_run(tmp_path, CONFIG, resume=False)
    release_runs()
    holder = _prepare_elsewhere(tmp_path, hold=True)
    assert holder.stdout.readline().strip() == "ready"
    with pytest.raises(RunError, match=f"in use by process {holder.pid}: wait"):
        prepare_run(tmp_path, CONFIG, resume=True)
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=60)
    assert prepare_run(tmp_path, CONFIG, resume=True) is True
    assert (tmp_path / LOCK_FILE).read_text().strip() == f"process {os.getpid()}"


# -- JSON ------------------------------------------------------------------------------------------
@dataclass
class _Settings:
    path: Path
    sizes: tuple[int, ...]


def test_jsonable_converts_what_configs_hold():
    ns = argparse.Namespace(out=Path("runs/x"), lrs=(0.1, 1.0), _run=print, loss=float("nan"))
    assert jsonable(ns) == {"out": "runs/x", "lrs": [0.1, 1.0], "loss": None}
    assert jsonable({"dtype": torch.float32, "device": torch.device("cpu")}) == {
        "dtype": "torch.float32",
        "device": "cpu",
    }
    assert jsonable({"f": jsonable, "cls": int, "_private": 1, "ok": [1, print]}) == {"ok": [1]}
    assert jsonable(_Settings(Path("a"), (1, 2))) == {"path": "a", "sizes": [1, 2]}
    assert jsonable([math.inf, -math.inf, torch.tensor(2.5), True]) == [None, None, 2.5, True]


def test_write_json_is_valid_json_with_null_for_nan(tmp_path):
    path = tmp_path / "summary.json"
    write_json({"acc": float("nan"), "n": 3, "_run": print, "where": tmp_path}, path)
    text = path.read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert data == {"acc": None, "n": 3, "where": str(tmp_path)}
    assert mode(path) == 0o644


# -- atomic files ----------------------------------------------------------------------------------
def test_atomic_files_are_0644_and_leave_nothing_on_failure(tmp_path):
    path = tmp_path / "model.pt"
    atomic_save({"w": torch.ones(2)}, path)
    atomic_write_text("hello", tmp_path / "a.txt")
    assert mode(path) == 0o644 and mode(tmp_path / "a.txt") == 0o644

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"w": Unpicklable()}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "model.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))


# -- checkpoints -----------------------------------------------------------------------------------
def test_checkpoints_round_trip_with_their_kind(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 3, "w": torch.zeros(2)}, path, kind="train")
    ckpt = load_checkpoint(path, kind="train")
    assert ckpt["epoch"] == 3 and ckpt["format"] == "train"
    assert mode(path) == 0o644


def test_unreadable_checkpoints_are_one_line_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint({"epoch": 1, "w": torch.zeros(100)}, good, kind="train")
    cases = {
        "truncated.pt": good.read_bytes()[:100],
        "garbage.pt": b"\x00garbage\xff" * 10,
        "empty.pt": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"epoch": 1}, tmp_path / "unmarked.pt")
    for name in [*cases, "list.pt", "unmarked.pt"]:
        with pytest.raises(RunError) as info:
            load_checkpoint(tmp_path / name, kind="train")
        message = str(info.value)
        assert message.startswith(f"{tmp_path / name} is not a readable bregnn train checkpoint (")
        assert message.endswith("; delete it or start over with --overwrite")
        assert "\n" not in message
    with pytest.raises(RunError, match="its format is 'train', expected 'lifted'"):
        load_checkpoint(good, kind="lifted")
    with pytest.raises(RunError, match=r"no train checkpoint at .*missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt", kind="train")


# -- metrics ---------------------------------------------------------------------------------------
def test_csv_logger_starts_from_the_checkpoint_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    log = CSVLogger(path)
    for epoch in (1, 2, 3):
        log.log({"epoch": epoch, "time": 0.5})
    with path.open("a") as fh:
        fh.write("4,0.")  # a torn line of a killed process
    CSVLogger(path, rows=[{"epoch": 1, "time": 0.5}, {"epoch": 2, "time": 0.5}]).log(
        {"epoch": 3, "time": 0.25}
    )
    assert path.read_text().splitlines() == ["epoch,time", "1,0.5", "2,0.5", "3,0.25"]
    CSVLogger(path, resume=True, keep_rows=2)
    assert path.read_text().splitlines() == ["epoch,time", "1,0.5", "2,0.5"]
    CSVLogger(path)  # a fresh run (prepare_run has vetted the directory)
    assert not path.exists()


def test_accumulated_seconds_adds_every_segment():
    rows = [{"time": "1.5"}, {"time": 2.0}, {"time": ""}, {"other": 1}]
    assert accumulated_seconds(rows, "time") == 3.5


def test_config_differences_ignores_mutable_keys():
    assert (
        config_differences({"a": (1, 2), "epochs": 1}, {"a": [1, 2], "epochs": 5}, {"epochs"}) == []
    )


def test_a_key_added_later_resumes_only_at_the_value_that_computes_the_old_run():
    saved = {"method": "sgd-bp"}
    assert config_differences(saved, {"method": "sgd-bp", "layer_groups": 1}) == []
    assert config_differences(saved, {"method": "sgd-bp", "layer_groups": 2}) == [
        "layer_groups saved (absent), requested 2"
    ]
    # a saved run that has the key is compared as usual
    assert config_differences({"layer_groups": 2}, {"layer_groups": 1}) == [
        "layer_groups saved 2, requested 1"
    ]


def test_runs_saved_before_the_stopping_test_and_averaging_resume_with_them_off():
    saved = {"method": "lbn-s", "inner_iters": 15}
    off = {"method": "lbn-s", "inner_iters": 15, "inner_tol": 0.0, "average": 0.0}
    assert config_differences(saved, off) == []
    assert config_differences(saved, {**off, "average": 0.99}) == [
        "average saved (absent), requested 0.99"
    ]
