"""A minimal reader for the gzip IDX files of MNIST and Fashion-MNIST (private to
:mod:`bregnn.lifted` until the shared :mod:`bregnn.data` readers replace it).

Layout expected under ``data_dir``::

    {MNIST,FashionMNIST}/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["DATASET_FOLDERS", "load_idx_dataset"]

DATASET_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_SPLITS = {"train": "train", "test": "t10k"}
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


def _read(path: Path, magic: int) -> tuple[tuple[int, ...], bytes]:
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: expected {path}")
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise ValueError(f"{path}: bad IDX magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    payload = data[4 + 4 * ndim :]
    expected = 1
    for d in dims:
        expected *= d
    if len(payload) != expected:
        raise ValueError(f"{path}: {len(payload)} bytes of data, expected {expected}")
    return dims, payload


def load_idx_dataset(name: str, data_dir: str | os.PathLike, split: str) -> tuple[Tensor, Tensor]:
    """Images as ``float32`` in ``[0, 1]`` of shape ``(n, rows*cols)`` and ``int64`` labels.

    ``name`` is ``"mnist"`` or ``"fashion-mnist"``; ``split`` is ``"train"`` or ``"test"``.
    """
    if name not in DATASET_FOLDERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {sorted(DATASET_FOLDERS)}")
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {sorted(_SPLITS)}")
    raw = Path(data_dir) / DATASET_FOLDERS[name] / "raw"
    prefix = _SPLITS[split]
    dims, pixels = _read(raw / f"{prefix}-images-idx3-ubyte.gz", _IMAGE_MAGIC)
    (n_labels,), labels = _read(raw / f"{prefix}-labels-idx1-ubyte.gz", _LABEL_MAGIC)
    if dims[0] != n_labels:
        raise ValueError(f"{raw}: {dims[0]} images but {n_labels} labels")
    images = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(dims[0], -1)
    targets = torch.frombuffer(bytearray(labels), dtype=torch.uint8).to(torch.int64)
    return images.to(torch.float32) / 255.0, targets
