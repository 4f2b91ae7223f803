"""Small shared utilities: seeding, progress reporting, the data directory, devices.

The run-directory helpers (``CSVLogger``, ``atomic_save``, ``atomic_write_text``,
``write_json``) live in :mod:`bregnn.runs` and are re-exported here.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from bregnn.runs import CSVLogger, atomic_save, atomic_write_text, write_json

__all__ = [
    "DEVICES",
    "CSVLogger",
    "add_device_argument",
    "atomic_save",
    "atomic_write_text",
    "default_data_dir",
    "pick_device",
    "positive_int",
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


DEVICES = ("auto", "cpu", "cuda", "cuda:N")
"""The device names every ``--device`` option and :func:`pick_device` take."""


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cpu``, ``cuda`` (the current GPU) and
    ``cuda:N`` name a device. ``ValueError`` (one line naming the value and the valid
    choices) for any other name, and for a GPU this machine does not have."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = ", ".join(map(repr, DEVICES))
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"bad device {name!r}; valid devices: {valid}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asked for but CUDA is not available on this machine; "
                "valid devices here: 'auto', 'cpu'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {name!r} asked for but this machine has {count} CUDA device(s); "
                f"valid devices here: 'auto', 'cpu', 'cuda', 'cuda:0'..'cuda:{count - 1}'"
            )
    return device


def add_device_argument(parser: Any, default: str = "auto") -> None:
    """Add ``--device`` to an ``argparse`` parser (checked by :func:`pick_device` when the
    command runs, so a bad value is a one-line error naming it and the valid choices)."""
    parser.add_argument(
        "--device",
        default=default,
        metavar="DEVICE",
        help="where to compute: auto (CUDA when available), cpu, cuda or cuda:N",
    )


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (e.g. ``--threads``)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value


class _SimpleBar:
    """A dependency-free progress bar on stderr (used when tqdm is not installed)."""

    def __init__(self, iterable: Iterable[T], total: int | None, desc: str, initial: int) -> None:
        self.iterable, self.total, self.desc = iterable, total, desc
        self.postfix = ""
        self.start = time.perf_counter()
        self.n = initial

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


class _Lines:
    """Progress as plain lines on stdout: one per :meth:`set_postfix_str` call."""

    def __init__(self, iterable: Iterable[T], total: int | None, desc: str, initial: int) -> None:
        self.iterable, self.total, self.desc = iterable, total, desc
        self.n = initial

    def set_postfix_str(self, text: str) -> None:
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        print(" ".join(part for part in (self.desc, count, text) if part), flush=True)

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            self.n += 1  # the item being processed, counted from 1
            yield item


class _Silent:
    def __init__(self, iterable: Iterable[T]) -> None:
        self.iterable = iterable

    def set_postfix_str(self, text: str) -> None:
        pass

    def __iter__(self) -> Iterator[T]:
        return iter(self.iterable)


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    enable: bool = True,
    initial: int = 0,
) -> Any:
    """Progress over ``iterable`` (e.g. the epochs of a training loop); the loop calls
    ``bar.set_postfix_str(text)`` once per item with that item's numbers (loss, metrics,
    seconds).

    - on a terminal (stderr is a tty): a progress bar on stderr (tqdm when installed, a
      plain bar otherwise) whose postfix is ``text``;
    - otherwise (logs, ``nohup``, CI): every ``set_postfix_str(text)`` prints the line
      ``f"{desc} {i}/{total} {text}"`` to stdout, flushed, so a long run is never silent;
    - ``enable=False`` (``--no-progress``) or ``$BREGNN_NO_PROGRESS``: nothing at all.

    ``initial`` items were done before (a resumed run): counting starts after them, and
    ``total`` (default ``initial + len(iterable)``) counts them.
    """
    if not enable or os.environ.get("BREGNN_NO_PROGRESS"):
        return _Silent(iterable)
    if total is None and hasattr(iterable, "__len__"):
        total = initial + len(iterable)  # type: ignore[arg-type]
    if not sys.stderr.isatty():
        return _Lines(iterable, total, desc, initial)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _SimpleBar(iterable, total, desc, initial)
    return tqdm(iterable, total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True)
