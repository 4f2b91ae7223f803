"""Run directories that are never silently corrupted.

Every ``bregnn`` command writes into one run directory (``--out``): ``config.json`` (the
command's full resolved settings), ``metrics.csv``, checkpoints and results. Before it
writes anything, a command calls :func:`prepare_run`, which decides what may happen there:

=============================  =====================================================
``--out`` ...                  outcome
=============================  =====================================================
missing, or without a run      a fresh run (``config.json`` written)
holds a run                    :class:`RunError`: pass ``--resume`` or ``--overwrite``
holds a run, ``--overwrite``   the previous run's files are deleted; a fresh run
holds a run, ``--resume``      saved and requested settings compared (all keys except
                               the mutable ones); any difference is a :class:`RunError`
                               listing every differing key, else the run continues
without a run, ``--resume``    a fresh run (there is nothing to resume)
under a file, not writable     :class:`RunError` naming the path and the OS's reason
in use by another process      :class:`RunError` naming that process; nothing touched
=============================  =====================================================

**One process per run directory.** :func:`prepare_run` takes an exclusive lock on
``out/.bregnn.lock`` (``flock``) and holds it until the process ends, however it ends (the
OS releases it, so a killed run leaves no stale lock): a second command started on the same
``--out`` (say, a ``--resume`` while the first still trains) is refused instead of writing
into the same checkpoints. The file itself stays; only a live process's lock counts. A
process may prepare the same directory again (a grid inside a reproduction) and may
release its locks with :func:`release_runs`. Where ``fcntl`` is missing (Windows) there
is no lock.

A directory *holds a run* when it contains ``config.json``, ``metrics.csv`` or a
``checkpoint*.pt`` file; ``--overwrite`` never deletes anything from a directory that
does not.

**Mutable keys.** :data:`MUTABLE_KEYS` are the settings a resumed run may change:

- ``epochs``: extend a finished run (or shorten an unfinished one);
- ``threads``, ``device``, ``checkpoint_every``: where and how fast it runs, not what
  it computes;
- ``progress`` / ``no_progress``, ``figures`` / ``no_figures``: what is shown and drawn;
- ``resume``, ``overwrite``, ``out``, ``data_dir``: how the run is found, not what it is.

A command passes ``mutable=MUTABLE_KEYS | {...}`` to add its own (a grid of runs may, for
example, add seeds or learning rates: those add runs beside the existing ones).

Files are written atomically (a temporary file in the same directory, then a rename), with
mode ``0644``; a crash never leaves a torn file, and :func:`prepare_run` removes the
temporary ``.*.tmp`` files that a killed process left behind. Checkpoints carry a
``"format"`` entry (:func:`save_checkpoint`) that :func:`load_checkpoint` checks.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import enum
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "ADDED_KEYS",
    "CONFIG_FILE",
    "MUTABLE_KEYS",
    "CSVLogger",
    "RunError",
    "accumulated_seconds",
    "atomic_save",
    "atomic_write_text",
    "config_differences",
    "holds_run",
    "jsonable",
    "load_checkpoint",
    "prepare_run",
    "prepare_run_ranks",
    "release_runs",
    "save_checkpoint",
    "write_json",
]

CONFIG_FILE = "config.json"
LOCK_FILE = ".bregnn.lock"
FILE_MODE = 0o644

MUTABLE_KEYS: frozenset[str] = frozenset(
    {
        "epochs",
        "threads",
        "device",
        "progress",
        "no_progress",
        "figures",
        "no_figures",
        "resume",
        "overwrite",
        "out",
        "data_dir",
        "checkpoint_every",
    }
)
"""Settings that may differ between a run and its ``--resume`` (see the module docstring)."""

ADDED_KEYS: Mapping[str, Any] = {"layer_groups": 1, "inner_tol": 0.0, "average": 0.0}
"""Settings introduced after runs were saved without them, each with the value that computes
what the older runs computed: a saved run lacking the key resumes under that value (and only
under it)."""


class RunError(ValueError):
    """A run directory cannot be used as asked (the message says why and what to do)."""


# -- JSON ------------------------------------------------------------------------------------------
def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data.

    Paths, dtypes, devices and other objects become strings, tuples and sets lists, NaN
    and infinities ``None``, dataclasses and mappings dicts; mapping entries whose key
    starts with ``_`` or whose value is callable (functions, classes) are dropped, and so
    are callables inside lists.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return jsonable(obj.value)
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.item() if obj.numel() == 1 else obj.tolist())
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():
        return jsonable(obj.item())  # NumPy scalars
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, (Mapping, argparse.Namespace)):
        items = obj.items() if isinstance(obj, Mapping) else vars(obj).items()
        return {
            str(k): jsonable(v)
            for k, v in items
            if not (isinstance(k, str) and k.startswith("_")) and not callable(v)
        }
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj if not callable(v)]
    if isinstance(obj, (set, frozenset)):
        return sorted((jsonable(v) for v in obj), key=repr)
    return str(obj)


def write_json(data: Any, path: str | os.PathLike) -> None:
    """Write :func:`jsonable` ``data`` as indented JSON (NaN as ``null``), atomically."""
    text = json.dumps(jsonable(data), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(text + "\n", path)


# -- atomic files ----------------------------------------------------------------------------------
def _atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a torn file."""
    _atomic(Path(path), lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) atomically (temporary file, then rename)."""
    _atomic(Path(path), lambda fh: fh.write(text.encode()))


def _remove_temporaries(out: Path) -> None:
    """Delete the ``.*.tmp`` files that killed atomic writes left under ``out``."""
    for tmp in out.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


# -- checkpoints -----------------------------------------------------------------------------------
def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike, *, kind: str) -> None:
    """Save ``obj`` with ``"format": kind`` added, atomically (mode 0644)."""
    atomic_save({**obj, "format": kind}, path)


def load_checkpoint(path: str | os.PathLike, *, kind: str) -> dict:
    """A checkpoint written by :func:`save_checkpoint` with the same ``kind``, loaded with
    ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        RunError: the file is missing, damaged, not a dict, or of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"no {kind} checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        reason = _first_line(err)
    else:
        if not isinstance(ckpt, dict):
            reason = f"it holds a {type(ckpt).__name__}, not a dict"
        elif ckpt.get("format") != kind:
            reason = f"its format is {ckpt.get('format')!r}, expected {kind!r}"
        else:
            return ckpt
    raise RunError(
        f"{path} is not a readable bregnn {kind} checkpoint ({reason}); "
        "delete it or start over with --overwrite"
    )


def _first_line(err: BaseException, limit: int = 160) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- metrics ---------------------------------------------------------------------------------------
class CSVLogger:
    """Appends one row per :meth:`log` call to a CSV file; the header comes from the first
    row's keys.

    Args:
        path: the CSV file.
        resume: keep the rows already in the file (the first ``keep_rows`` of them, so a
            resumed run does not duplicate epochs); otherwise an existing file is replaced.
        keep_rows: how many existing rows to keep when resuming (``None``: all).
        rows: when given, the file starts with exactly these rows (e.g. those a checkpoint
            recorded), whatever it held before; ``resume`` and ``keep_rows`` are then unused.

    The file is rewritten atomically when rows are kept, so a crash during the rewrite
    cannot lose the earlier epochs.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        resume: bool = False,
        keep_rows: int | None = None,
        rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        if rows is None and resume and self.path.exists():
            with self.path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            rows = rows if keep_rows is None else rows[:keep_rows]
        if rows:
            self.fields = list(rows[0].keys())
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(buffer.getvalue(), self.path)
        else:
            self.path.unlink(missing_ok=True)

    def log(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (flushed to the file before returning)."""
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields)
            if new:
                writer.writeheader()
            writer.writerow(dict(row))


def accumulated_seconds(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    """The sum of ``row[key]`` over ``rows`` (e.g. per-epoch seconds): a resumed run's total
    time is that of all its epochs, not only those of the last segment. Missing or empty
    entries count as 0; values may be numbers or CSV strings."""
    total = 0.0
    for row in rows:
        value = row.get(key)
        if value is not None and value != "":
            total += float(value)
    return total


# -- run directories -------------------------------------------------------------------------------
def holds_run(out: str | os.PathLike) -> bool:
    """Whether ``out`` is a directory with a bregnn run in it: ``config.json``,
    ``metrics.csv`` or a ``checkpoint*.pt`` file."""
    out = Path(out)
    if not out.is_dir():
        return False
    if (out / CONFIG_FILE).exists() or (out / "metrics.csv").exists():
        return True
    return any(out.glob("checkpoint*.pt"))


def config_differences(
    saved: Mapping[str, Any], requested: Mapping[str, Any], mutable: Collection[str] = ()
) -> list[str]:
    """``"<key> saved <a>, requested <b>"`` for every key outside ``mutable`` whose value
    differs between ``saved`` and ``requested`` (compared as :func:`jsonable` data); a key
    present on one side only differs too (``(absent)`` on the other), except a key of
    :data:`ADDED_KEYS` missing from ``saved`` and requested at its listed value."""
    saved, requested = jsonable(dict(saved)), jsonable(dict(requested))
    keys = list(requested) + [k for k in saved if k not in requested]
    missing = object()
    found = []
    for key in keys:
        if key in mutable:
            continue
        a, b = saved.get(key, missing), requested.get(key, missing)
        if a is missing and key in ADDED_KEYS and b == ADDED_KEYS[key]:
            continue
        if a != b:
            show_a = "(absent)" if a is missing else repr(a)
            show_b = "(absent)" if b is missing else repr(b)
            found.append(f"{key} saved {show_a}, requested {show_b}")
    return found


def _read_config(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunError(
            f"cannot resume: {path} is unreadable ({_first_line(err)}); "
            "start a new run with another --out, or --overwrite"
        ) from None
    if not isinstance(saved, dict):
        raise RunError(f"cannot resume: {path} does not hold a settings object; use --overwrite")
    return saved


def _clear(out: Path) -> None:
    """Delete everything inside ``out`` (a directory that :func:`holds_run`) but its lock."""
    for entry in out.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _os_reason(err: OSError, out: Path) -> str:
    reason = err.strerror or _first_line(err)
    return f"{reason} ({err.filename})" if err.filename and err.filename != str(out) else reason


def prepare_run(
    out: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    resume: bool,
    overwrite: bool = False,
    mutable: Collection[str] = MUTABLE_KEYS,
    main: bool = True,
) -> bool:
    """Check that ``out`` may take this run, prepare it, and write ``config.json``.

    Args:
        out: the run directory (created if needed).
        config: the command's full resolved settings (anything :func:`jsonable` converts).
        resume: continue the run in ``out``, if there is one.
        overwrite: delete the run in ``out``, if there is one, and start afresh.
        mutable: keys that may differ between the saved and the requested settings.
        main: write files (rank 0); other ranks pass ``False`` and only check.

    Returns:
        ``True`` iff an existing run is resumed.

    Raises:
        RunError: see the module docstring's table (one line naming the directory, every
            differing setting, or the OS's reason, and what to do instead).
    """
    out = Path(out)
    if resume and overwrite:
        raise RunError("--resume and --overwrite exclude each other: choose one")
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a directory; choose another --out")
    requested = jsonable(dict(config))
    existed = out.is_dir()
    try:
        if main and existed:
            _lock(out)
        resumed = _check(out, requested, resume, overwrite, mutable)
        if not main:
            return resumed
        out.mkdir(parents=True, exist_ok=True)
        if not existed:  # another process may have started a run here since the check
            _lock(out)
            resumed = _check(out, requested, resume, overwrite, mutable)
        if overwrite and holds_run(out):
            _clear(out)
        _remove_temporaries(out)
        write_json(requested, out / CONFIG_FILE)
    except OSError as err:
        raise RunError(
            f"cannot write the run directory {out}: {_os_reason(err, out)}; choose another --out"
        ) from None
    return resumed


def _check(
    out: Path, requested: dict[str, Any], resume: bool, overwrite: bool, mutable: Collection[str]
) -> bool:
    """:func:`prepare_run`'s decision for ``out`` as it is now: whether a run resumes, or
    the :class:`RunError` that refuses it."""
    resumed = False
    if holds_run(out):
        if overwrite:
            pass  # cleared below, by the main process
        elif not resume:
            raise RunError(
                f"run directory {out} already holds a run; "
                "pass --resume to continue it or --overwrite to replace it"
            )
        elif not (out / CONFIG_FILE).exists():
            raise RunError(
                f"cannot resume {out}: it holds run files but no {CONFIG_FILE}, so its "
                "settings cannot be checked; start a new run with another --out, or --overwrite"
            )
        else:
            differences = config_differences(_read_config(out / CONFIG_FILE), requested, mutable)
            if differences:
                raise RunError(
                    f"cannot resume {out}: settings differ from the saved run: "
                    f"{'; '.join(differences)} "
                    "(start a new run with another --out, or --overwrite)"
                )
            resumed = True
    return resumed


_held_locks: dict[Path, int] = {}


def _lock(out: Path) -> None:
    """Hold the exclusive lock of ``out`` (see the module docstring) for this process
    (``OSError`` when the lock file cannot be opened: :func:`prepare_run` reports it)."""
    key = out.resolve()
    if key in _held_locks:
        return
    try:
        import fcntl
    except ImportError:  # no flock on this platform: the directory is not guarded
        return
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunError(
            f"run directory {out} is in use by {owner}: wait for it to end or stop it, "
            "or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()}\n".encode(), 0)
    _held_locks[key] = fd


def release_runs() -> None:
    """Release every run-directory lock this process holds (they are otherwise held until
    it ends): for long-lived processes, such as notebooks and test suites, that prepare
    many runs."""
    while _held_locks:
        os.close(_held_locks.popitem()[1])


def prepare_run_ranks(
    out: str | os.PathLike,
    config: Mapping[str, Any],
    ctx: Any,
    *,
    resume: bool,
    overwrite: bool = False,
    mutable: Collection[str] = MUTABLE_KEYS,
) -> bool:
    """:func:`prepare_run` for every rank of a process group (``ctx``, a
    :class:`bregnn.distributed.DistContext`): every rank checks ``out`` before rank 0
    writes anything (so no rank mistakes rank 0's fresh ``config.json`` for an older run),
    then rank 0 prepares it while the others wait. One process: :func:`prepare_run`."""
    from bregnn.distributed import barrier

    if ctx.world_size == 1:
        return prepare_run(out, config, resume=resume, overwrite=overwrite, mutable=mutable)
    resumed = prepare_run(
        out, config, resume=resume, overwrite=overwrite, mutable=mutable, main=False
    )
    barrier(ctx)
    if ctx.is_main:
        prepare_run(out, config, resume=resume, overwrite=overwrite, mutable=mutable)
    barrier(ctx)
    return resumed
