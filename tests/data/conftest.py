"""Fixtures: builders of small dataset files in the official formats (data tests)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest


def _idx(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def mnist_gz_files(n: int = 5, seed: int = 0) -> dict[str, bytes]:
    """The four gzip IDX files of an ``n``-image MNIST-format dataset, by file name."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(_idx(images, 2051))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(_idx(labels, 2049))
    return files


def cifar_tar(n: int = 2, seed: int = 0) -> tuple[bytes, list[dict]]:
    """A ``cifar-10-python.tar.gz`` with ``n`` images per batch, and the batches written."""
    rng = np.random.default_rng(seed)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    batches = []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in names:
            batch = {
                "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                "labels": rng.integers(0, 10, size=n).tolist(),
            }
            batches.append(batch)
            raw = pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue(), batches


@pytest.fixture
def make_mnist_gz_files():
    """:func:`mnist_gz_files`: ``(n, seed) -> {file name: gzip IDX bytes}``."""
    return mnist_gz_files


@pytest.fixture
def make_cifar_tar():
    """:func:`cifar_tar`: ``(n, seed) -> (tar.gz bytes, batches)``."""
    return cifar_tar
