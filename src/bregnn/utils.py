"""Small shared utilities: seeding, progress bars, atomic files, run directories, devices."""

from __future__ import annotations

import csv
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "CSVLogger",
    "atomic_save",
    "atomic_write_text",
    "default_data_dir",
    "pick_device",
    "progress",
    "seed_everything",
    "write_json",
]

T = TypeVar("T")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a fresh ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_data_dir() -> Path:
    """``$BREGNN_DATA`` if set, else ``~/.cache/bregnn``."""
    env = os.environ.get("BREGNN_DATA")
    return Path(env) if env else Path.home() / ".cache" / "bregnn"


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"bad device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available; use 'cpu'")
    return device


class _SimpleBar:
    """A dependency-free progress bar on stderr (used when tqdm is not installed)."""

    def __init__(self, iterable: Iterable[T], total: int | None, desc: str) -> None:
        self.iterable, self.total, self.desc = iterable, total, desc
        self.postfix = ""
        self.start = time.perf_counter()
        self.n = 0

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def _draw(self) -> None:
        elapsed = time.perf_counter() - self.start
        total = f"/{self.total}" if self.total else ""
        sys.stderr.write(f"\r{self.desc}: {self.n}{total} [{elapsed:6.1f}s] {self.postfix}   ")
        sys.stderr.flush()

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            yield item
            self.n += 1
            self._draw()
        sys.stderr.write("\n")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", enable: bool = True):
    """A progress bar over ``iterable``: tqdm when installed, a plain stderr bar otherwise.

    Disabled when ``enable`` is false, ``$BREGNN_NO_PROGRESS`` is set, or stderr is not a
    terminal (logs and CI output then carry only the experiments' own per-run lines).
    """
    if not enable or os.environ.get("BREGNN_NO_PROGRESS") or not sys.stderr.isatty():
        return _Silent(iterable)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _SimpleBar(iterable, total, desc)
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


class _Silent:
    def __init__(self, iterable: Iterable[T]) -> None:
        self.iterable = iterable

    def set_postfix_str(self, text: str) -> None:
        pass

    def __iter__(self) -> Iterator[T]:
        return iter(self.iterable)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file then rename: a crash never leaves a torn file."""
    _atomic(Path(path), lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` atomically (temporary file + rename)."""
    _atomic(Path(path), lambda fh: fh.write(text.encode()))


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", path)


class CSVLogger:
    """Appends one row per call to a CSV file; the header comes from the first row's keys.

    ``resume=True`` keeps an existing file (its rows up to ``keep_rows`` are preserved, so a
    resumed run does not duplicate epochs).
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, keep_rows: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        if resume and self.path.exists():
            with self.path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            if keep_rows is not None:
                rows = rows[:keep_rows]
            if rows:
                self.fields = list(rows[0].keys())
            self._rewrite(rows)
        elif self.path.exists():
            self.path.unlink()

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        with self.path.open("w", newline="") as fh:
            if self.fields:
                writer = csv.DictWriter(fh, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(rows)

    def log(self, row: Mapping[str, Any]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields)
            if new:
                writer.writeheader()
            writer.writerow(dict(row))
