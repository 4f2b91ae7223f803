"""Readers for the official CIFAR-10 / CIFAR-100 "python version" batches.

Layout (as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``)::

    <data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch}   keys data, labels
    <data_dir>/cifar-100-python/{train, test}                      keys data, fine_labels

Each file is a pickled dict whose ``data`` entry is a ``uint8`` array ``(N, 3072)``: per row
the 1024 red, then green, then blue values of a 32x32 image in row-major order, so
``data.reshape(N, 3, 32, 32)`` is the image in ``(C, H, W)`` layout.

Pickle can run arbitrary code, so the files are read with :class:`RestrictedUnpickler`,
which only resolves the handful of globals the official files (and NumPy pickles of the
same data) need to rebuild arrays; anything else raises :class:`ValueError`. Still only
use files from a trusted source (the official archives, checked against their MD5).
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CIFAR_FILES",
    "CIFAR_LABEL_KEY",
    "RestrictedUnpickler",
    "load_cifar_split",
    "read_cifar_batch",
]

#: split -> file names inside the extracted folder, per dataset
CIFAR_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "cifar10": {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
    },
    "cifar100": {"train": ("train",), "test": ("test",)},
}
#: the label entry of each dataset's batches (CIFAR-100 also has ``coarse_labels``)
CIFAR_LABEL_KEY: dict[str, str] = {"cifar10": "labels", "cifar100": "fine_labels"}

# The globals an ndarray pickle refers to: protocol 2 (the official Python 2 files use
# numpy.core.multiarray._reconstruct; Python 3 protocol-2 pickles also use _codecs.encode for
# bytes) and protocol 5 (numpy._core.numeric._frombuffer). numpy.core became numpy._core in
# NumPy 2; both spellings are accepted and resolved to the module that exists.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves the globals needed to rebuild NumPy arrays.

    Any other global (``os.system``, ``builtins.eval``, ...) raises
    :class:`pickle.UnpicklingError` instead of being imported.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR batch file; allowed: "
                f"{sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS)}"
            )
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core" + module[len("numpy.core") :]
        return getattr(importlib.import_module(module), name)


def _text_keys(obj: dict) -> dict[str, Any]:
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_cifar_batch(path: str | Path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file: images ``uint8 (N, 3, 32, 32)`` and labels ``int64 (N,)``.

    ``label_key`` is ``labels`` for CIFAR-10 and ``fine_labels`` for CIFAR-100. Loaded with
    ``encoding="bytes"`` (the official files are Python 2 pickles) through
    :class:`RestrictedUnpickler`.

    Raises:
        ValueError: not a pickle, a forbidden global, or content of the wrong form.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            batch = RestrictedUnpickler(fh, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused or corrupt CIFAR batch pickle: {err}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"{path}: corrupt or truncated CIFAR batch: {err!r}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = _text_keys(batch)
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(f"{path}: no {key!r} entry; found keys {sorted(batch)}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: 'data' must be a uint8 array (N, 3072)")
    if data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' rows have {data.shape[1]} values, expected 3072")
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {labels.size} labels for {len(data)} images")
    return data.reshape(len(data), 3, 32, 32), labels


def load_cifar_split(
    folder: str | Path, dataset: str, split: str, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Images ``uint8 (N, 3, 32, 32)`` and labels ``int64 (N,)`` of ``dataset`` ('cifar10' or
    'cifar100') split ``split`` ('train' or 'test') from the extracted ``folder``.

    Raises:
        FileNotFoundError: a batch file is missing (the message names it).
        ValueError: bad ``dataset``/``split``, a damaged file, or labels outside
            ``0..num_classes-1``.
    """
    if dataset not in CIFAR_FILES:
        raise ValueError(f"unknown CIFAR dataset {dataset!r}; valid: {sorted(CIFAR_FILES)}")
    if split not in CIFAR_FILES[dataset]:
        raise ValueError(f"unknown split {split!r}; valid splits: {sorted(CIFAR_FILES[dataset])}")
    folder = Path(folder)
    files = [folder / name for name in CIFAR_FILES[dataset][split]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}")
    parts = [read_cifar_batch(f, CIFAR_LABEL_KEY[dataset]) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{folder}: labels span {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}"
        )
    return torch.from_numpy(images), torch.from_numpy(labels)
