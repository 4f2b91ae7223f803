"""Fixtures shared by every test folder."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest


def write_idx_data(
    root: Path,
    folders: Sequence[str] = ("MNIST", "FashionMNIST"),
    n_train: int = 400,
    n_test: int = 200,
    seed: int = 0,
) -> Path:
    """Random MNIST-format stand-ins (28 x 28 uint8 images, labels 0..9) in the gzip IDX
    layout the readers expect, ``root/<folder>/raw/{train,t10k}-*-ubyte.gz``."""
    rng = np.random.default_rng(seed)
    for folder in folders:
        raw = root / folder / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            labels = rng.integers(0, 10, size=n, dtype=np.uint8)
            for kind, arr, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
                head = struct.pack(f">I{arr.ndim}I", magic, *arr.shape)
                (raw / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(head + arr.tobytes()))
    return root


@pytest.fixture(scope="session")
def idx_data():
    """:func:`write_idx_data`: ``(root, folders, n_train, n_test, seed) -> root``."""
    return write_idx_data


@pytest.fixture(autouse=True)
def _release_run_directories():
    """Every test's run directories are unlocked when it ends (a command holds them for its
    process's life; the test process prepares thousands)."""
    yield
    from bregnn.runs import release_runs

    release_runs()
